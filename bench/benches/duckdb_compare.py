#!/usr/bin/env python3
"""DuckDB's side of the query benchmark (`cargo run --release -p ledger-bench --bin query-bench`).

Runs the same four queries as ledgerd's query engine, on the CSV that ledgerd exported:

  scan         decision = deny and tool ~ "shell.*"
  agent_week   agent = "<agent>" and time >= <start> and time < <end>
  count        | count by agent, bin(time, 1h)
  export       every entry, all default columns, written as CSV

each once plus RUNS times (the median of those RUNS is reported, the first run on its
own), in two modes:

  csv        the CSV read is part of every repetition: a fresh in-memory database reads
             the file with read_csv and runs the query;
  preloaded  the CSV is loaded once into a table (CREATE TABLE AS, not timed), and each
             repetition queries that table.

Query results are fetched into Python (fetchall), as a client would; the export is a
`COPY ... TO` a CSV file next to the input. Prints one JSON object on stdout:

  {"duckdb_version": "...", "threads": 2, "load_ms": ...,
   "modes": {"csv": {"scan": {"median_ms": ..., "first_ms": ..., "rows": ...}, ...},
             "preloaded": {...}}}

Exit status: 0 on success, 3 when the duckdb package is missing, 2 on any other error
(with one line on stderr saying what went wrong).

Usage: duckdb_compare.py CSV START END RUNS [--agent NAME]
       START and END are RFC 3339 UTC instants (`2026-02-10T00:00:00Z`).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

# Column types by name; every other column is text. Times are RFC 3339 in UTC ("...Z"),
# which DuckDB parses as a TIMESTAMP (UTC wall clock).
TYPES = {
    "seq": "BIGINT",
    "time": "TIMESTAMP",
    "policy_version": "BIGINT",
    "severity": "INTEGER",
    "uid": "BIGINT",
    "gid": "BIGINT",
    "pid": "BIGINT",
    "shim_seq": "BIGINT",
    "ref_seq": "BIGINT",
}


def fail(message, code=2):
    print(f"duckdb_compare.py: {message}", file=sys.stderr)
    sys.exit(code)


def parse_instant(text):
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"not an RFC 3339 instant: {text!r}")
    if t.tzinfo is None:
        fail(f"instant {text!r} has no offset; give it in UTC with a trailing Z")
    t = t.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def sql_string(s):
    return "'" + s.replace("'", "''") + "'"


def read_csv_sql(path):
    """A read_csv call with the header's columns and explicit types (no sniffing)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = f.readline().rstrip("\r\n")
    except OSError as e:
        fail(f"cannot read {path}: {e}")
    names = header.split(",")
    if not names or "time" not in names:
        fail(f"{path} does not start with a header row naming the entry fields: {header[:200]!r}")
    columns = ", ".join(f"{sql_string(n)}: {sql_string(TYPES.get(n, 'VARCHAR'))}" for n in names)
    return (
        f"read_csv({sql_string(path)}, header = true, auto_detect = false, delim = ',', "
        f"quote = '\"', escape = '\"', columns = {{{columns}}})"
    )


def queries(source, agent, start, end):
    """The four queries over `source` (a table name or a read_csv call)."""
    return {
        # The glob `shell.*` is anchored and `*` stops at `/`; no tool holds a `/`, so
        # LIKE 'shell.%' selects the same entries (the row counts are compared).
        "scan": f"SELECT * FROM {source} WHERE decision = 'deny' AND tool LIKE 'shell.%'",
        "agent_week": (
            f"SELECT * FROM {source} WHERE agent = {sql_string(agent)} "
            f"AND time >= TIMESTAMP {sql_string(start)} AND time < TIMESTAMP {sql_string(end)}"
        ),
        # ledgerd returns groups ordered by their keys; so does this.
        "count": (
            f"SELECT agent, date_trunc('hour', time) AS time, count(*) AS count FROM {source} "
            f"GROUP BY 1, 2 ORDER BY 1, 2"
        ),
    }


def export_sql(source, out):
    return f"COPY (SELECT * FROM {source}) TO {sql_string(out)} (HEADER, DELIMITER ',')"


def timed(fn):
    t = time.perf_counter()
    rows = fn()
    return (time.perf_counter() - t) * 1000.0, rows


def summarise(samples):
    """The first run on its own, the median of the others."""
    times = [ms for ms, _ in samples]
    rows = {r for _, r in samples}
    if len(rows) != 1:
        fail(f"repetitions of one query returned different row counts: {sorted(rows)}")
    return {"median_ms": statistics.median(times[1:]), "first_ms": times[0], "rows": rows.pop()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv")
    p.add_argument("start")
    p.add_argument("end")
    p.add_argument("runs", type=int)
    p.add_argument("--agent", default="agent-07")
    args = p.parse_args()
    if args.runs < 1:
        fail("RUNS must be at least 1")

    try:
        import duckdb
    except ImportError as e:
        fail(f"the duckdb Python package is not installed ({e}); install it with `pip install duckdb`", 3)

    path = os.path.abspath(args.csv)
    if not os.path.isfile(path):
        fail(f"no such CSV file: {path}")
    out = os.path.join(os.path.dirname(path), "duckdb-export.csv")
    start, end = parse_instant(args.start), parse_instant(args.end)
    source = read_csv_sql(path)
    names = ["scan", "agent_week", "count", "export"]

    def run_query(con, sql):
        return len(con.execute(sql).fetchall())

    def run_export(con, src):
        # COPY returns the number of rows written.
        result = con.execute(export_sql(src, out)).fetchone()
        return int(result[0]) if result else -1

    # Mode 1: the CSV read is part of every repetition, each from a fresh database.
    csv_mode = {}
    by_csv = queries(source, args.agent, start, end)
    for name in names:
        samples = []
        for _ in range(1 + args.runs):
            con = duckdb.connect()
            if name == "export":
                samples.append(timed(lambda: run_export(con, source)))
            else:
                samples.append(timed(lambda: run_query(con, by_csv[name])))
            con.close()
        csv_mode[name] = summarise(samples)

    # Mode 2: loaded once (not timed), then queried.
    con = duckdb.connect()
    load_ms, _ = timed(lambda: con.execute(f"CREATE TABLE t AS SELECT * FROM {source}"))
    threads = con.execute("SELECT current_setting('threads')").fetchone()
    preloaded = {}
    by_table = queries("t", args.agent, start, end)
    for name in names:
        samples = []
        for _ in range(1 + args.runs):
            if name == "export":
                samples.append(timed(lambda: run_export(con, "t")))
            else:
                samples.append(timed(lambda: run_query(con, by_table[name])))
        preloaded[name] = summarise(samples)
    con.close()
    try:
        os.remove(out)
    except OSError:
        pass

    for name in names:
        if csv_mode[name]["rows"] != preloaded[name]["rows"]:
            fail(
                f"{name}: {csv_mode[name]['rows']} rows when reading the CSV but "
                f"{preloaded[name]['rows']} from the loaded table"
            )

    json.dump(
        {
            "duckdb_version": duckdb.__version__,
            "threads": int(threads[0]) if threads else 0,
            "load_ms": load_ms,
            "modes": {"csv": csv_mode, "preloaded": preloaded},
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # one line, not a traceback, for the Rust side to show
        fail(f"{type(e).__name__}: {e}")
