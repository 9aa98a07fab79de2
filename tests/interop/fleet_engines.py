"""Runs the query examples of docs/FLEET.md, as written there, in two engines over a bucket
the fleet test shipped to: DuckDB (over pyarrow's S3 dataset, as fleet_read.py does: its
httpfs extension cannot be downloaded here) and ClickHouse (chdb, the embedded ClickHouse
engine from PyPI, reading the bucket itself with its `s3()` table function).

    python3 fleet_engines.py ENDPOINT BUCKET/PREFIX FLEET.md

Prints one JSON object: for each engine, the result of each example query in the order
the doc gives them, every row as a list of cells normalised to text (timestamps as UTC
ISO-8601 seconds, dates as YYYY-MM-DD), so the test can compare the engines with each other
and with `ledgerctl query` on the hosts. The only edits made to the doc's text: the
example bucket URL becomes the test server's, and ClickHouse's `s3(URL, 'Parquet')` gets
the test credentials (ClickHouse reads them from the environment only on a server with
`use_environment_credentials`; the doc says so).
"""

import datetime
import json
import os
import re
import sys

# ClickHouse shows DateTime in the process's time zone: make that UTC, as the doc's reader
# would compare with UTC timestamps.
os.environ["TZ"] = "UTC"

import chdb  # noqa: E402
import duckdb  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet_read import table  # noqa: E402


def blocks(doc, heading, lang):
    """The fenced code blocks of `lang` in the section under `heading`."""
    section = doc.split(heading, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return re.findall(r"```" + lang + r"\n(.*?)```", section, re.S)


def statements(sql):
    """SELECT statements, comments dropped."""
    text = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip().upper().startswith("SELECT")]


def cell(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.replace(microsecond=0).isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v)


def rows(result):
    return [[cell(v) for v in row] for row in result]


def main():
    endpoint, where, doc_path = sys.argv[1], sys.argv[2], sys.argv[3]
    doc = open(doc_path, encoding="utf-8").read()
    bucket, _, prefix = where.partition("/")

    # DuckDB: the doc's SELECTs over the view `entries` (here the Arrow table).
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("entries", table(endpoint, where))
    duck = [rows(con.execute(q).fetchall()) for q in statements(blocks(doc, "### DuckDB", "sql")[0])]

    # ClickHouse: the doc's queries against the bucket itself.
    url = f"{endpoint}/{bucket}/{prefix}"
    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    house = []
    for q in statements(blocks(doc, "### ClickHouse", "sql")[0]):
        q = q.replace("https://audit.s3.amazonaws.com/fleet", url)
        q = q.replace("'Parquet')", f"'{key}', '{secret}', 'Parquet')")
        result = chdb.query(q, "JSONCompact")
        data = json.loads(result.bytes() or b'{"data": []}')["data"]
        house.append([[cell(normalise_text(v)) for v in row] for row in data])
    json.dump({"duckdb": duck, "clickhouse": house}, sys.stdout)


def normalise_text(v):
    """ClickHouse's JSON gives DateTime as 'YYYY-MM-DD hh:mm:ss[.fff]'; make it a datetime."""
    if isinstance(v, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", v):
        return datetime.datetime.fromisoformat(v)
    return v


if __name__ == "__main__":
    main()
