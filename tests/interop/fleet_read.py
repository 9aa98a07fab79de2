"""Reads shipped Parquet back with independent readers: pyarrow's S3 filesystem and
dataset reader (Hive partitions), then DuckDB over the Arrow table.

    python3 fleet_read.py rows   ENDPOINT BUCKET/PREFIX   every row as a JSON line, by log and seq
    python3 fleet_read.py denies ENDPOINT BUCKET/PREFIX   denied decisions per agent, as JSON

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION. Used by
tests/tests/fleet.rs and the ship benchmark.
"""

import json
import os
import sys
import time

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs


def table(endpoint, where):
    fs = pafs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ.get("AWS_REGION", "us-east-1"),
        endpoint_override=endpoint,
        scheme="http" if endpoint.startswith("http://") else "https",
    )
    dataset = ds.dataset(f"{where}/entries", filesystem=fs, format="parquet", partitioning="hive")
    return dataset.to_table()


def main():
    mode, endpoint, where = sys.argv[1], sys.argv[2], sys.argv[3]
    started = time.monotonic()
    entries = table(endpoint, where)
    con = duckdb.connect()
    con.register("entries", entries)
    if mode == "rows":
        cur = con.execute(
            "SELECT * EXCLUDE (time, leaf_hash, hostname, date), hex(leaf_hash) AS leaf_hash, "
            "epoch_us(time) AS time_micros, hostname, CAST(date AS VARCHAR) AS date FROM entries ORDER BY log, seq"
        )
        names = [d[0] for d in cur.description]
        out = sys.stdout
        while True:
            chunk = cur.fetchmany(10000)
            if not chunk:
                break
            for row in chunk:
                out.write(json.dumps(dict(zip(names, row))) + "\n")
    elif mode == "denies":
        rows = con.execute(
            "SELECT agent, count(*) AS n FROM entries WHERE decision = 'deny' GROUP BY agent ORDER BY agent"
        ).fetchall()
        json.dump(
            {"denies": {a: n for a, n in rows}, "rows": entries.num_rows, "seconds": time.monotonic() - started},
            sys.stdout,
        )
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
