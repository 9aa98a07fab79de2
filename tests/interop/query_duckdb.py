#!/usr/bin/env python3
"""DuckDB's side of the differential test of the query language (tests/tests/query_duckdb.rs).

The Rust test fills a real ledgerd, exports it with `ledgerctl export`, and runs each case's
query with `ledgerctl query` (or `ledgerctl export --query`). This script loads the same
export into DuckDB, runs each case's SQL (written by hand to ask the same question), and
checks that ledgerd's output is exactly what docs/QUERY.md says the answer looks like:

  csv     header and every cell, neutralised as the CSV writer must (docs/QUERY.md, Output);
  json    every JSON line, byte for byte;
  table   the whole table (padding, right-aligned numeric columns, escaped control chars);
  export  every raw cell of the export rows the SQL selects from the export itself;

and that the exit code is 0 with rows, 1 without.

The expected text is built here from DuckDB's typed results with the documented rules only
(a JSON number has one form: `30` for 30.0, shortest round-trip text otherwise; empty is
missing; objects as compact JSON with sorted keys). No code is shared with ledgerd.

Usage: query_duckdb.py EXPORT_CSV CASES_JSON
  CASES_JSON: [{"name", "query", "sql", "format", "exit", "stdout"}, ...]
Exit status: 0 all agree, 1 some disagree (each printed), 3 duckdb is not installed,
2 any other error.
"""

import csv
import io
import json
import re
import sys
import unicodedata

try:
    import duckdb
except ImportError:
    print("query_duckdb.py: the duckdb package is missing: pip install duckdb (see .ci/run)", file=sys.stderr)
    sys.exit(3)

MISSING = None
NUMERIC_TYPES = ("BIGINT", "UBIGINT", "DOUBLE")

SETUP = r"""
CREATE TABLE raw AS SELECT * FROM read_csv(?, all_varchar = true, header = true, quote = '"', escape = '"');

-- The CSV writer's neutralisation, undone (docs/QUERY.md, Output).
CREATE MACRO un(c) AS CASE WHEN regexp_matches(c, '^''+[=+\-@\t\r]') THEN substr(c, 2) ELSE c END;

CREATE VIEW e AS SELECT
  CAST(seq AS BIGINT) AS seq,
  un(time) AS time,
  CAST(replace(un(time), 'Z', '') AS TIMESTAMP_NS) AS ts,
  un(kind) AS kind, un(agent) AS agent, un(agent_id) AS agent_id, un(session) AS session,
  un(action) AS action, un(tool) AS tool, un(decision) AS decision, un(rule) AS rule,
  CAST(policy_version AS BIGINT) AS policy_version, un(reason) AS reason, un(params) AS params,
  CAST(severity AS BIGINT) AS severity, un(flags) AS flags,
  from_json(un(flags), '["VARCHAR"]') AS flag_list, un(policy_check) AS policy_check,
  CAST(uid AS BIGINT) AS uid, CAST(gid AS BIGINT) AS gid, CAST(pid AS BIGINT) AS pid,
  un(host) AS host, un(shim_id) AS shim_id, CAST(shim_seq AS BIGINT) AS shim_seq,
  CAST(ref_seq AS BIGINT) AS ref_seq, un(details) AS details
FROM raw;

-- JSON paths with the documented meaning: null, "", [], {} and no such path are missing.
CREATE MACRO jt(p, k) AS json_type(p, k);
CREATE MACRO jmiss(p, k) AS (
  jt(p, k) IS NULL OR jt(p, k) = 'NULL'
  OR (jt(p, k) = 'VARCHAR' AND json_extract_string(p, k) = '')
  OR (jt(p, k) = 'ARRAY' AND json_array_length(p, k) = 0)
  OR (jt(p, k) = 'OBJECT' AND len(json_keys(p, k)) = 0));
CREATE MACRO jnum(p, k) AS CASE WHEN jt(p, k) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN CAST(json_extract(p, k) AS DOUBLE) END;
CREATE MACRO jstr(p, k) AS CASE WHEN jt(p, k) = 'VARCHAR' AND NOT jmiss(p, k) THEN json_extract_string(p, k) END;
CREATE MACRO jbool(p, k) AS CASE WHEN jt(p, k) = 'BOOLEAN' THEN CAST(json_extract(p, k) AS BOOLEAN) END;
-- The value itself (JSON typed), for output; NULL when missing.
CREATE MACRO jval(p, k) AS CASE WHEN NOT jmiss(p, k) THEN json_extract(p, k) END;
-- The documented order across types: missing, booleans, numbers, strings, arrays, objects.
CREATE MACRO jrank(p, k) AS CASE
  WHEN jmiss(p, k) THEN 0 WHEN jt(p, k) = 'BOOLEAN' THEN 1 WHEN jt(p, k) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN 2
  WHEN jt(p, k) = 'VARCHAR' THEN 3 WHEN jt(p, k) = 'ARRAY' THEN 6 ELSE 7 END;
-- The text a pattern sees: numbers in their one form, booleans as true/false.
CREATE MACRO jtext(p, k) AS CASE
  WHEN jmiss(p, k) THEN NULL
  WHEN jnum(p, k) IS NOT NULL THEN CASE WHEN jnum(p, k) = trunc(jnum(p, k))
    THEN CAST(CAST(jnum(p, k) AS BIGINT) AS VARCHAR) ELSE CAST(jnum(p, k) AS VARCHAR) END
  WHEN jbool(p, k) IS NOT NULL THEN CAST(jbool(p, k) AS VARCHAR)
  ELSE jstr(p, k) END;
-- One key per distinct value (numbers by value, whatever their spelling).
CREATE MACRO jkey(p, k) AS CASE
  WHEN jmiss(p, k) THEN NULL
  WHEN jt(p, k) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN 'n' || CAST(jnum(p, k) AS VARCHAR)
  ELSE jt(p, k) || CAST(json_extract(p, k) AS VARCHAR) END;
"""


def fail(message, code=2):
    print(f"query_duckdb.py: {message}", file=sys.stderr)
    sys.exit(code)


# ---- the documented value model ---------------------------------------------------------


class Json:
    """A JSON array or object, shown as compact JSON text."""

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, Json) and other.text == self.text


def canon_number(x):
    """A JSON number in its one form: integral values as integers."""
    if isinstance(x, float) and x.is_integer() and -(2**63) <= x < 2**63:
        return int(x)
    return x


def canon_json(x):
    """A decoded JSON value with every number in canonical form."""
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, (int, float)):
        return canon_number(x)
    if isinstance(x, list):
        return [canon_json(i) for i in x]
    return {k: canon_json(v) for k, v in x.items()}


def json_text(x):
    return json.dumps(canon_json(x), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def from_json(x):
    """A decoded JSON value as a query value: empty is missing, containers are JSON text."""
    if x is None or x == "" or x == [] or x == {}:
        return MISSING
    if isinstance(x, (list, dict)):
        return Json(json_text(x))
    if isinstance(x, bool):
        return x
    if isinstance(x, (int, float)):
        return canon_number(x)
    return x


def from_sql(v, type_name):
    if v is None:
        return MISSING
    if type_name == "JSON":
        return from_json(json.loads(v))
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return canon_number(v)
    if isinstance(v, str):
        return v if v != "" else MISSING
    if isinstance(v, list):
        return from_json(v)
    fail(f"unexpected SQL value {v!r} of type {type_name}")


def float_text(x):
    """Shortest round-trip text, exponent written as `e+20` / `e-7`."""
    r = repr(x)
    if "e" in r:
        mantissa, exp = r.split("e")
        sign = "-" if exp.startswith("-") else "+"
        r = f"{mantissa}e{sign}{exp.lstrip('+-').lstrip('0') or '0'}"
    return r


def text(v):
    """A value as CSV and table cells show it."""
    if v is MISSING:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return float_text(v)
    if isinstance(v, Json):
        return v.text
    return v


def json_cell(v):
    """A value as the JSON-lines writer writes it."""
    if v is MISSING:
        return "null"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return text(v)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell):
    return "'" + cell if cell.lstrip("'").startswith(TRIGGERS) else cell


def escape_controls(s):
    out = []
    for c in s:
        if unicodedata.category(c) == "Cc":
            out.append({"\t": "\\t", "\r": "\\r", "\n": "\\n"}.get(c, "\\u{%x}" % ord(c)))
        else:
            out.append(c)
    return "".join(out)


def table(columns, rows):
    if not rows:
        return ""
    cells = [[escape_controls(text(v)) for v in row] for row in rows]
    header = [escape_controls(c) for c in columns]
    numeric = []
    for i in range(len(columns)):
        present = [r[i] for r in rows if r[i] is not MISSING]
        numeric.append(bool(present) and all(is_number(v) for v in present))
    widths = [max([len(header[i])] + [len(r[i]) for r in cells]) for i in range(len(columns))]
    lines = []
    for line in [header] + cells:
        parts = [c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(line)]
        lines.append("  ".join(parts).rstrip(" ") + "\n")
    return "".join(lines)


# ---- comparison ---------------------------------------------------------------------------


def expected(con, case):
    cur = con.execute(case["sql"])
    columns = [d[0] for d in cur.description]
    types = [str(d[1]) for d in cur.description]
    raw = cur.fetchall()
    if case["format"] == "export":
        return columns, [["" if v is None else v for v in row] for row in raw]
    return columns, [[from_sql(v, t) for v, t in zip(row, types)] for row in raw]


def first_difference(want, got):
    for i, (w, g) in enumerate(zip(want, got)):
        if w != g:
            return f"line {i + 1}:\n    duckdb: {w!r}\n    ledgerd: {g!r}"
    if len(want) != len(got):
        return f"duckdb has {len(want)} lines, ledgerd {len(got)}; first extra: {(want[len(got):] or got[len(want):])[0]!r}"
    return None


def check(con, case):
    columns, rows = expected(con, case)
    out = case["stdout"]
    want_exit = 0 if rows else 1
    if case["exit"] != want_exit:
        return f"exit code {case['exit']}, expected {want_exit} ({len(rows)} rows); stderr/stdout: {out[:300]!r}"
    fmt = case["format"]
    if fmt in ("csv", "export"):
        got = list(csv.reader(io.StringIO(out, newline=""))) if out else []
        if fmt == "csv":
            # The header comes even when no row does.
            want = [columns] + [[neutralise(text(v)) for v in row] for row in rows]
        else:
            want = [columns] + rows
        if "\r\n" not in out and out:
            return "CSV lines do not end with CRLF"
        return first_difference(want, got)
    if fmt == "json":
        want = [
            "{" + ",".join(json.dumps(c, ensure_ascii=False) + ":" + json_cell(v) for c, v in zip(columns, row)) + "}"
            for row in rows
        ]
        return first_difference(want, out.splitlines())
    if fmt == "table":
        return first_difference(table(columns, rows).split("\n"), out.split("\n"))
    return f"unknown format {fmt}"


def main():
    if len(sys.argv) != 3:
        fail("usage: query_duckdb.py EXPORT_CSV CASES_JSON")
    export_csv, cases_json = sys.argv[1], sys.argv[2]
    with open(cases_json, encoding="utf-8") as f:
        cases = json.load(f)
    con = duckdb.connect()
    for statement in [s for s in SETUP.split(";\n") if s.strip()]:
        if "?" in statement:
            con.execute(statement, [export_csv])
        else:
            con.execute(statement)
    entries = con.execute("SELECT count(*) FROM e").fetchone()[0]
    failures = 0
    for case in cases:
        try:
            problem = check(con, case)
        except duckdb.Error as e:
            problem = f"the SQL failed: {e}"
        if problem:
            failures += 1
            print(f"DISAGREE [{case['name']}] ({case['format']})\n  query: {case['query']}\n  sql:   {case['sql']}\n  {problem}\n")
    print(f"{len(cases) - failures} of {len(cases)} checks agree (duckdb {duckdb.__version__}, {entries} entries)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
