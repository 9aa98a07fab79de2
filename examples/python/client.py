#!/usr/bin/env python3
"""Append one decision to ledgerd over its Unix socket and read it back, from Python.

Uses only the official gRPC packages (grpcio, grpcio-tools). The Python stubs are generated
at run time from proto/ledger/v1/ledger.proto into a temporary directory, so no generated
code is kept in the repository.

    python3 examples/python/client.py --socket ./ledger-data/ledgerd.sock
    python3 examples/python/client.py --query 'last 1h decision = deny | count by agent'

Exits 0 after printing the entry read back, 1 if it differs from what was sent, and 2 if the
daemon cannot be reached or refuses the call. With --query (an auditor's call) it prints the
rows as JSON lines instead, or the daemon's error (a query that does not parse: its message,
and the structured errors from the status details) and exits 2.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_ROOT = os.path.join(REPO, "proto", "proto")
PROTO_FILE = "ledger/v1/ledger.proto"


def generate_stubs(out_dir):
    """Runs protoc (bundled with grpcio-tools) on ledger.proto; returns (pb2, pb2_grpc)."""
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            "-I", PROTO_ROOT,
            "--python_out", out_dir,
            "--grpc_python_out", out_dir,
            PROTO_FILE,
        ],
        check=True,
    )
    sys.path.insert(0, out_dir)
    return (importlib.import_module("ledger.v1.ledger_pb2"),
            importlib.import_module("ledger.v1.ledger_pb2_grpc"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=os.environ.get("LEDGER_SOCKET", "./ledger-data/ledgerd.sock"),
                        help="ledgerd's Unix socket (default: $LEDGER_SOCKET or ./ledger-data/ledgerd.sock)")
    parser.add_argument("--agent", default="python-example", help="the agent that made the call")
    parser.add_argument("--tool", default="fs.read_file", help="the tool it called")
    parser.add_argument("--query", help="run this query instead (docs/QUERY.md) and print its rows")
    args = parser.parse_args()

    import grpc
    from google.protobuf import json_format

    with tempfile.TemporaryDirectory(prefix="ledger-stubs-") as stubs:
        pb, rpc = generate_stubs(stubs)
        if args.query is not None:
            return run_query(pb, rpc, args)
        sent = pb.NewEntry(
            kind=pb.KIND_DECISION,
            agent=args.agent,
            tool=args.tool,
            action="read",
            params=json.dumps({"path": "/srv/reports/q3.csv"}),
            decision=pb.DECISION_ALLOW,
            rule="reports-readable",
            reason="reading reports is allowed",
            session="python-example",
        )
        with channel_to(args.socket) as channel:
            ledger = rpc.LedgerStub(channel)
            try:
                ack = ledger.Append(pb.AppendRequest(entry=sent), timeout=10)
                stored = [s.entry for s in ledger.GetEntries(
                    pb.GetEntriesRequest(start=ack.seq, end=ack.seq + 1), timeout=10)]
            except grpc.RpcError as e:
                print(f"ledgerd at {args.socket}: {e.code().name}: {e.details()}", file=sys.stderr)
                return 2
        if len(stored) != 1:
            print(f"asked for entry {ack.seq}, got {len(stored)} entries", file=sys.stderr)
            return 1
        got = stored[0]
        fields = ["kind", "agent", "tool", "action", "params", "decision", "rule", "reason", "session"]
        differ = [f for f in fields if getattr(got, f) != getattr(sent, f)]
        if got.seq != ack.seq or differ:
            print(f"entry {ack.seq} differs from what was sent in: {', '.join(differ) or 'seq'}",
                  file=sys.stderr)
            return 1
        print(json_format.MessageToJson(got, preserving_proto_field_name=True, indent=None))
        print(f"ok: seq {ack.seq} read back equal")
        return 0


def channel_to(socket):
    import grpc
    # gRPC sends the socket path as the HTTP/2 :authority, which ledgerd's HTTP/2 server
    # refuses as malformed (a path is not a host); name a plain authority instead.
    options = [("grpc.default_authority", "localhost")]
    return grpc.insecure_channel("unix:" + os.path.abspath(socket), options=options)


def run_query(pb, rpc, args):
    """Prints each row as a JSON object keyed by column; on an error, its code and message,
    then the structured errors ledgerd puts in the grpc-status-details-bin trailer."""
    import grpc
    from google.protobuf import json_format
    with channel_to(args.socket) as channel:
        ledger = rpc.LedgerStub(channel)
        columns = []
        try:
            for response in ledger.Query(pb.QueryRequest(query=args.query), timeout=30):
                columns = list(response.columns) or columns
                for row in response.rows:
                    print(json.dumps({c: json_format.MessageToDict(v) for c, v in zip(columns, row.values)}))
        except grpc.RpcError as e:
            print(f"ledgerd at {args.socket}: {e.code().name}: {e.details()}", file=sys.stderr)
            for key, value in e.trailing_metadata() or ():
                if key == "grpc-status-details-bin":
                    errors = json.loads(value)
                    print(f"{len(errors)} structured errors: "
                          + ", ".join(f"{x['code']} at {x['line']}:{x['col']}" for x in errors),
                          file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
