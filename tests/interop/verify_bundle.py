#!/usr/bin/env python3
"""A second, independent verifier of ledgerd evidence bundles, written from docs/FORMAT.md
alone (sections "Leaves", "The tree", "The checkpoint", "The signed note", "Evidence
bundle"), without reading ledgerd's code. tests/tests/evidence.rs runs it beside
`ledgerctl verify-bundle` on every bundle and every tampered copy and requires the same
verdict.

    verify_bundle.py DIR --key FILE

Exit 0: every check held. Exit 1: a check failed (named on stderr). Exit 2: cannot run.
Needs `blake3` and `pynacl` from PyPI (pinned in tests/interop/requirements.txt).
"""

import base64
import csv
import datetime
import hashlib
import io
import json
import os
import sys

import blake3
import nacl.exceptions
import nacl.signing


class Failed(Exception):
    """A check failed: exit 1."""


class Usage(Exception):
    """The check could not run: exit 2."""


def fail(check, why):
    raise Failed(f"{check}: {why}")


def b3(data):
    return blake3.blake3(data).digest()


def is_c0(ch, allow_newline=True):
    return ord(ch) < 0x20 and not (allow_newline and ch == "\n")


def is_cc(ch):
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


# ---------------------------------------------------------------- base64, hex, decimals

def b64_canonical(text):
    """Standard alphabet with padding, and canonical (re-encodes to itself)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except Exception:
        return None
    if base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def parse_hex(text):
    if not isinstance(text, str) or len(text) % 2 or any(c not in "0123456789abcdef" for c in text):
        return None
    return bytes.fromhex(text)


def parse_hash(text):
    raw = parse_hex(text)
    return raw if raw is not None and len(raw) == 32 else None


def decimal(value, what, signed=False):
    """proof.json integers: JSON strings, decimal, one spelling."""
    if not isinstance(value, str):
        fail("proof.json", f"{what} is not a string of decimal digits")
    digits = value[1:] if (signed and value.startswith("-")) else value
    if not digits or any(c not in "0123456789" for c in digits) or (len(digits) > 1 and digits[0] == "0"):
        fail("proof.json", f"{what} {value!r} is not a decimal integer")
    if value == "-0":
        fail("proof.json", f"{what} {value!r} is not a decimal integer")
    n = int(value)
    lo, hi = (-(2**63), 2**63 - 1) if signed else (0, 2**64 - 1)
    if not lo <= n <= hi:
        fail("proof.json", f"{what} {value!r} is out of range")
    return n


# ---------------------------------------------------------------- protobuf Entry

# (number, name, type); types: u64, i64, enum, u32, str, rstr (repeated string), ou64 (optional)
FIELDS = [
    (1, "seq", "u64"), (2, "time_unix_nanos", "i64"), (3, "kind", "enum"), (4, "agent", "str"),
    (5, "agent_id", "str"), (6, "session", "str"), (7, "action", "str"), (8, "tool", "str"),
    (9, "params", "str"), (10, "decision", "enum"), (11, "rule", "str"), (12, "policy_version", "u64"),
    (13, "reason", "str"), (14, "writer_uid", "u32"), (15, "writer_gid", "u32"), (16, "writer_pid", "u32"),
    (17, "host", "str"), (18, "severity", "u32"), (19, "flags", "rstr"), (20, "policy_check", "str"),
    (21, "shim_id", "str"), (22, "shim_seq", "u64"), (23, "ref_seq", "ou64"), (24, "details", "str"),
]
BY_NUMBER = {n: (name, t) for n, name, t in FIELDS}


def read_varint(buf, pos):
    value, shift = 0, 0
    for i in range(10):
        if pos + i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos + i]
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value & (2**64 - 1), pos + i + 1
    raise ValueError("varint longer than 10 bytes")


def write_varint(out, value):
    value &= 2**64 - 1
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def decode_entry(buf):
    """Decodes a leaf; raises ValueError unless it is the canonical encoding."""
    e = {name: ([] if t == "rstr" else (None if t == "ou64" else ("" if t == "str" else 0))) for _, name, t in FIELDS}
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number not in BY_NUMBER:
            raise ValueError(f"unknown field {number}")
        name, t = BY_NUMBER[number]
        if t in ("str", "rstr"):
            if wire != 2:
                raise ValueError(f"field {number} has wire type {wire}")
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated string")
            try:
                text = bytes(buf[pos:pos + length]).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"field {number} is not UTF-8")
            pos += length
            if t == "rstr":
                e[name].append(text)
            else:
                e[name] = text
        else:
            if wire != 0:
                raise ValueError(f"field {number} has wire type {wire}")
            v, pos = read_varint(buf, pos)
            if t == "i64" and v >= 2**63:
                v -= 2**64
            elif t == "enum":
                if v >= 2**63:
                    v -= 2**64
                if not -(2**31) <= v < 2**31:
                    raise ValueError(f"field {number} is out of range")
            elif t == "u32" and v >= 2**32:
                raise ValueError(f"field {number} is out of range")
            e[name] = v
    if encode_entry(e) != bytes(buf):
        raise ValueError("the leaf is not in canonical form")
    return e


def encode_entry(e):
    out = bytearray()
    for number, name, t in FIELDS:
        v = e[name]
        if t == "rstr":
            for item in v:
                raw = item.encode("utf-8")
                write_varint(out, number << 3 | 2)
                write_varint(out, len(raw))
                out += raw
        elif t == "str":
            if v:
                raw = v.encode("utf-8")
                write_varint(out, number << 3 | 2)
                write_varint(out, len(raw))
                out += raw
        elif t == "ou64":
            if v is not None:
                write_varint(out, number << 3)
                write_varint(out, v)
        elif v != 0:
            write_varint(out, number << 3)
            write_varint(out, v)
    return bytes(out)


# ---------------------------------------------------------------- tree

def leaf_hash(leaf):
    return b3(b"\x00" + leaf)


def node_hash(left, right):
    return b3(b"\x01" + left + right)


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def inclusion_path_len(m, n):
    length, lo, hi = 0, 0, n
    while hi - lo > 1:
        k = split(hi - lo)
        if m < lo + k:
            hi = lo + k
        else:
            lo += k
        length += 1
    return length


def verify_inclusion(lh, m, n, path, root):
    if m >= n or len(path) != inclusion_path_len(m, n):
        return False
    fn, sn, r = m, n - 1, lh
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def rebuild_root(size, start, leaves, outside):
    end = start + len(leaves)
    it = iter(outside)

    def walk(lo, hi):
        if hi <= start or lo >= end:
            try:
                return next(it)
            except StopIteration:
                fail("range proof", "proof.json has too few hashes")
        if hi - lo == 1:
            return leaves[lo - start]
        k = split(hi - lo)
        return node_hash(walk(lo, lo + k), walk(lo + k, hi))

    if not leaves or size == 0 or end > size:
        fail("range proof", f"{len(leaves)} leaves from entry {start} do not fit in a tree of {size}")
    root = walk(0, size)
    if next(it, None) is not None:
        fail("range proof", "proof.json has more hashes than the tree needs")
    return root


# ---------------------------------------------------------------- keys and notes

class Key:
    def __init__(self, text):
        parts = text.strip().split("+", 2)  # the base64 may itself hold '+'
        if len(parts) != 3:
            raise ValueError("not <name>+<id>+<key>")
        name, id_hex, key_b64 = parts
        if not name or any(c.isspace() or c == "+" or is_cc(c) for c in name):
            raise ValueError("bad key name")
        if len(id_hex) != 8 or any(c not in "0123456789abcdefABCDEF" for c in id_hex):
            raise ValueError("bad key ID")
        blob = b64_canonical(key_b64)
        if blob is None or len(blob) != 33 or blob[0] != 1:
            raise ValueError("bad key")
        self.name, self.public = name, blob[1:]
        self.key_id = hashlib.sha256(name.encode() + b"\n\x01" + self.public).digest()[:4]
        if self.key_id != bytes.fromhex(id_hex):
            raise ValueError("the key ID does not match the key")
        self.verifier = nacl.signing.VerifyKey(self.public)

    def string(self):
        blob = base64.b64encode(b"\x01" + self.public).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{blob}"


def verify_note(key, note):
    """The signed text, or Failed-worthy ValueError."""
    if len(note.encode("utf-8")) > 1 << 20:
        raise ValueError("note over 1 MiB")
    if any(is_c0(c) for c in note):
        raise ValueError("control character")
    at = note.rfind("\n\n")
    if at < 0:
        raise ValueError("no empty line")
    text, sigs = note[: at + 1], note[at + 2:]
    if not sigs or not sigs.endswith("\n"):
        raise ValueError("no signatures")
    lines = sigs[:-1].split("\n")
    if len(lines) > 100:
        raise ValueError("too many signatures")
    parsed = []
    for line in lines:
        if not line.startswith("\u2014 "):
            raise ValueError("malformed signature line")
        rest = line[2:]
        if " " not in rest:
            raise ValueError("malformed signature line")
        name, sig_b64 = rest.split(" ", 1)
        if not name or any(c.isspace() or c == "+" or is_cc(c) for c in name):
            raise ValueError("bad key name in a signature")
        blob = b64_canonical(sig_b64)
        if blob is None or len(blob) < 5:
            raise ValueError("malformed signature")
        parsed.append((name, blob[:4], blob[4:]))
    matched = False
    for name, key_id, sig in parsed:
        if name != key.name or key_id != key.key_id:
            continue
        matched = True
        if len(sig) != 64:
            raise ValueError("bad signature")
        try:
            key.verifier.verify(text.encode("utf-8"), sig)
        except nacl.exceptions.BadSignatureError:
            raise ValueError("bad signature")
    if not matched:
        raise ValueError("no signature by the key")
    return text


def parse_checkpoint(text):
    lines = text[:-1].split("\n") if text.endswith("\n") else None
    if not lines or len(lines) < 3:
        raise ValueError("not a checkpoint")
    origin, size, root_b64 = lines[0], lines[1], lines[2]
    if not origin or not size or any(c not in "0123456789" for c in size) or (len(size) > 1 and size[0] == "0"):
        raise ValueError("bad origin or size")
    if int(size) > 2**64 - 1:
        raise ValueError("size out of range")
    root = b64_canonical(root_b64)
    if root is None or len(root) != 32 or any(not line for line in lines[3:]):
        raise ValueError("bad root or extension line")
    return origin, int(size), root


# ---------------------------------------------------------------- CSV cells

KINDS = ["", "decision", "outcome", "agent_registered", "agent_updated", "agent_retired", "policy_changed",
         "daemon_started", "daemon_stopped", "key_rotated", "access_refused", "shim_heartbeat",
         "evidence_exported"]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell):
    return "'" + cell if cell.lstrip("'").startswith(TRIGGERS) else cell


def unneutralise(cell):
    rest = cell[1:] if cell.startswith("'") else None
    return rest if rest is not None and rest.lstrip("'").startswith(TRIGGERS) else cell


def time_text(ns):
    secs, frac = divmod(ns, 10**9)
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=secs)
    out = t.strftime("%Y-%m-%dT%H:%M:%S")
    if len(out) < 19:  # years below 1000 are not zero-padded everywhere
        out = f"{t.year:04d}" + out[out.index("-"):]
    if frac:
        out += "." + f"{frac:09d}".rstrip("0")
    return out + "Z"


ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def json_string(s):
    out = []
    for c in s:
        if c in ESCAPES:
            out.append(ESCAPES[c])
        elif ord(c) < 0x20:
            out.append(f"\\u00{ord(c):02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def event_row(e, lh):
    def nz(n):
        return "" if n == 0 else str(n)

    kind = "" if e["kind"] == 0 else (KINDS[e["kind"]] if 0 < e["kind"] < len(KINDS) else "unspecified")
    decision = {1: "allow", 2: "deny"}.get(e["decision"], "")
    flags = "[" + ",".join(json_string(f) for f in e["flags"]) + "]" if e["flags"] else ""
    return [
        str(e["seq"]), time_text(e["time_unix_nanos"]), kind, e["agent"], e["agent_id"], e["session"],
        e["action"], e["tool"], decision, e["rule"], nz(e["policy_version"]), e["reason"], e["params"],
        nz(e["severity"]), flags, e["policy_check"], str(e["writer_uid"]), str(e["writer_gid"]),
        str(e["writer_pid"]), e["host"], e["shim_id"], nz(e["shim_seq"]),
        "" if e["ref_seq"] is None else str(e["ref_seq"]), e["details"], lh.hex(),
    ]


EVENT_COLUMNS = ("seq,time,kind,agent,agent_id,session,action,tool,decision,rule,policy_version,reason,params,"
                 "severity,flags,policy_check,uid,gid,pid,host,shim_id,shim_seq,ref_seq,details,leaf_hash").split(",")
POLICY_COLUMNS = ("agent,version,time,seq,author,approver,reason,hash,prev_hash,writer_uid,changed_in_period,"
                  "file").split(",")


def csv_rows(data, name):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        fail(name, "it is not UTF-8")
    try:
        return list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as e:
        fail(name, f"not CSV: {e}")


def agent_folder(agent):
    enc = "".join(chr(b) if (0x61 <= b <= 0x7A or 0x30 <= b <= 0x39 or b == 0x2D) else f"_{b:02x}"
                  for b in agent.encode("utf-8"))
    return "/".join(enc[i:i + 120] for i in range(0, len(enc), 120))


# ---------------------------------------------------------------- the bundle

REQUIRED = ["MANIFEST", "checkpoint.note", "leaves.bin", "proof.json", "events.csv", "agents.csv",
            "policy_changes.csv", "access_review.csv", "summary.html", "verifier.vkey", "VERIFY.md"]


def files_present(root):
    out = {}

    def walk(d, prefix):
        with os.scandir(d) as it:
            for entry in it:
                path = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, path + "/")
                elif entry.is_file(follow_symlinks=False):
                    if path != "MANIFEST":
                        with open(entry.path, "rb") as f:
                            out[path] = b3(f.read()).hex()
                else:
                    fail("MANIFEST", f"{path} is not a regular file or directory")

    walk(root, "")
    return out


def read(root, name):
    try:
        with open(os.path.join(root, name), "rb") as f:
            return f.read()
    except OSError as e:
        fail(name, f"cannot read it: {e}")


def read_text(root, name):
    try:
        return read(root, name).decode("utf-8")
    except UnicodeDecodeError:
        fail(name, "it is not UTF-8")


def check_manifest(root, key):
    try:
        body = verify_note(key, read_text(root, "MANIFEST"))
    except ValueError as e:
        fail("MANIFEST", f"signature: {e}")
    lines = body[:-1].split("\n")
    if len(lines) < 3 or lines[0] != "ledgerd evidence manifest v1":
        fail("MANIFEST", "not a manifest")
    if lines[1] != key.name:
        fail("MANIFEST", f"it names origin {lines[1]!r}, the key is {key.name!r}")
    listed, previous = {}, None
    for line in lines[2:]:
        h, sep, path = line.partition("  ")
        bad = (not sep or len(h) != 64 or parse_hex(h) is None or not path
               or any(c.isspace() or c == "\\" or is_cc(c) for c in path)
               or any(p in ("", ".", "..") for p in path.split("/"))
               or (previous is not None and path.encode() <= previous.encode()))
        if bad:
            fail("MANIFEST", f"bad line {line!r}")
        listed[path], previous = h, path
    present = files_present(root)
    for path in sorted(set(listed) - set(present)):
        fail("MANIFEST", f"{path} is listed but missing from the bundle")
    for path in sorted(set(present) - set(listed)):
        fail("MANIFEST", f"{path} is in the bundle but not in the manifest")
    for path, h in listed.items():
        if present[path] != h:
            fail(path, f"its BLAKE3 is {present[path]}, the signed manifest says {h}: the file was changed")
    for name in REQUIRED[1:]:
        if name not in listed:
            fail("MANIFEST", f"{name} is missing: every bundle has it")
    for path in listed:
        if path not in REQUIRED and not path.startswith("policies/"):
            fail("MANIFEST", f"{path} is not a file of an evidence bundle")
    return {p for p in listed if p.startswith("policies/")}


def load_proof(root):
    try:
        proof = json.loads(read(root, "proof.json").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        fail("proof.json", f"not valid: {e}")
    members = {"format", "tree_size", "start", "end", "from_unix_nanos", "to_unix_nanos", "first_seq", "last_seq",
               "export_seq", "agents", "hashes", "entries"}
    if not isinstance(proof, dict) or set(proof) != members:
        fail("proof.json", "not valid: the members are not the documented ones")
    if proof["format"] != "ledgerd evidence proof v2":
        fail("proof.json", f"format {proof['format']!r}")
    for m in ("tree_size", "start", "end", "first_seq", "last_seq", "export_seq"):
        proof[m] = decimal(proof[m], m)
    for m in ("from_unix_nanos", "to_unix_nanos"):
        proof[m] = decimal(proof[m], m, signed=True)
    for m in ("agents", "hashes", "entries"):
        if not isinstance(proof[m], list):
            fail("proof.json", f"{m} is not an array")
    if not all(isinstance(a, str) for a in proof["agents"] + proof["hashes"]):
        fail("proof.json", "agents and hashes hold strings")
    for p in proof["entries"]:
        if not isinstance(p, dict) or set(p) != {"seq", "leaf", "path"} or not isinstance(p["path"], list):
            fail("proof.json", "an entry is not {seq, leaf, path}")
        p["seq"] = decimal(p["seq"], "entries seq")
    return proof


def read_leaves(data):
    pos, leaves = 0, []
    while pos < len(data):
        if pos + 4 > len(data):
            fail("leaves.bin", f"truncated length prefix at byte {pos}")
        n = int.from_bytes(data[pos:pos + 4], "big")
        if pos + 4 + n > len(data):
            fail("leaves.bin", f"leaf {len(leaves)} at byte {pos} claims {n} bytes (the file is truncated)")
        leaves.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return leaves


def decode_leaf(leaf, seq, check, what):
    """The entry of a leaf that must be the canonical leaf of entry `seq`."""
    try:
        e = decode_entry(leaf)
    except ValueError as err:
        fail(check, f"leaf of entry {seq}: {err}")
    if e["seq"] != seq:
        fail(check, f"{what} should be entry {seq}, it is entry {e['seq']}")
    return e


def verify(root, key_path):
    if not os.path.isdir(root):
        raise Usage(f"{root} is not a directory")
    try:
        with open(key_path, encoding="utf-8") as f:
            key = Key(f.read())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Usage(f"cannot use key {key_path}: {e}")

    policy_files = check_manifest(root, key)
    try:
        own = Key(read_text(root, "verifier.vkey"))
    except ValueError as e:
        fail("verifier.vkey", str(e))
    if own.string() != key.string():
        fail("verifier.vkey", f"it names {own.string()}, not the --key {key.string()}")

    try:
        origin, size, cp_root = parse_checkpoint(verify_note(key, read_text(root, "checkpoint.note")))
    except ValueError as e:
        fail("checkpoint.note", f"signature: {e}")

    proof = load_proof(root)
    if proof["tree_size"] != size:
        fail("proof.json", f"it is for tree size {proof['tree_size']}, the checkpoint for {size}")
    start, end, frm, to = proof["start"], proof["end"], proof["from_unix_nanos"], proof["to_unix_nanos"]
    entries, hashes, kept = [], [], {}
    prev_time, in_period = None, None
    for i, leaf in enumerate(read_leaves(read(root, "leaves.bin"))):
        seq = start + i
        e = decode_leaf(leaf, seq, "leaves.bin", f"leaf {i}")
        if prev_time is not None and e["time_unix_nanos"] < prev_time:
            fail("leaves.bin", f"entry {seq} is older than the entry before it")
        prev_time = e["time_unix_nanos"]
        if frm <= e["time_unix_nanos"] < to:
            in_period = (seq if in_period is None else in_period[0], seq)
        entries.append(e)
        hashes.append(leaf_hash(leaf))
        kept[seq] = e
    if start + len(hashes) != end:
        fail("leaves.bin", f"it holds {len(hashes)} leaves, proof.json says entries {start}..{end}")
    outside = [parse_hash(h) for h in proof["hashes"]]
    if None in outside:
        fail("proof.json", "a hash is not 64 hex digits")
    if rebuild_root(size, start, hashes, outside) != cp_root:
        fail("range proof", "the leaves and proof.json do not rebuild the checkpoint's root")
    previous = None
    for p in proof["entries"]:
        seq = p["seq"]
        if (previous is not None and previous >= seq) or start <= seq < end:
            fail("proof.json", f"entries: entry {seq} is out of order, repeated or inside the range")
        previous = seq
        leaf = parse_hex(p["leaf"]) if isinstance(p["leaf"], str) else None
        path = [parse_hash(h) for h in p["path"]]
        if leaf is None or None in path:
            fail("proof.json", f"entries: entry {seq} is not hex")
        e = decode_leaf(leaf, seq, "proof.json", "entries: the leaf")
        if not verify_inclusion(leaf_hash(leaf), seq, size, path, cp_root):
            fail("inclusion proof", f"entry {seq} is not in the checkpoint's tree")
        kept[seq] = e

    # Completeness.
    first, last = proof["first_seq"], proof["last_seq"]
    if in_period is None:
        fail("completeness", "no entry of the bundle is in the period")
    if in_period != (first, last):
        fail("completeness", f"the period holds entries {in_period}, proof.json says {first}..={last}")
    if not (start == first - 1 or start == first == 0):
        fail("completeness", f"the entry before {first} is missing")
    if end != last + 2:
        fail("completeness", f"the entry after {last} is missing")

    # The export entry.
    x = kept.get(proof["export_seq"])
    if x is None:
        fail("export entry", f"entry {proof['export_seq']} is not in the bundle")
    if x["kind"] != 12 or proof["export_seq"] <= last or x["time_unix_nanos"] < to:
        fail("export entry", f"entry {proof['export_seq']} is not an evidence_exported entry after the period")
    try:
        d = json.loads(x["details"])
    except ValueError:
        d = None
    if not isinstance(d, dict) or (d.get("from"), d.get("to"), d.get("agents")) != (
            time_text(frm), time_text(to), proof["agents"]):
        fail("export entry", f"entry {proof['export_seq']} recorded another period or agents")

    # events.csv
    agents = proof["agents"]

    def wanted(a):
        return not agents or a in agents

    rows = csv_rows(read(root, "events.csv"), "events.csv")
    if not rows or rows[0] != EVENT_COLUMNS:
        fail("events.csv", "the header is wrong")
    expected = [(e, h) for e, h in zip(entries, hashes) if first <= e["seq"] <= last and wanted(e["agent"])]
    for line, ((e, h), row) in enumerate(zip(expected, rows[1:]), start=2):
        if len(row) != len(EVENT_COLUMNS):
            fail("events.csv", f"line {line} has {len(row)} cells")
        if unneutralise(row[0]) != str(e["seq"]):
            fail("events.csv", f"line {line} is entry {row[0]!r}, expected entry {e['seq']}")
        for col, have, want in zip(EVENT_COLUMNS, row, event_row(e, h)):
            if have != neutralise(want):
                fail("events.csv", f"line {line} (entry {e['seq']}), column {col}: {have!r} != {neutralise(want)!r}")
    if len(rows) - 1 != len(expected):
        fail("events.csv", f"{len(rows) - 1} rows, expected {len(expected)}")

    # policy_changes.csv and policies/
    rows = csv_rows(read(root, "policy_changes.csv"), "policy_changes.csv")
    if not rows or rows[0] != POLICY_COLUMNS:
        fail("policy_changes.csv", "the header is wrong")
    listed, named, versions = set(), set(), {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(POLICY_COLUMNS):
            fail("policy_changes.csv", f"line {line} has {len(row)} cells")
        seq_text = row[3]
        if not seq_text.isdigit() or (len(seq_text) > 1 and seq_text[0] == "0"):
            fail("policy_changes.csv", f"line {line}: bad seq")
        seq = int(seq_text)
        e = kept.get(seq)
        if e is None or e["kind"] != 6:
            fail("policy_changes.csv", f"line {line}: entry {seq} is not a proven policy_changed entry")
        try:
            d = json.loads(e["details"])
        except ValueError:
            d = None
        if not isinstance(d, dict):
            fail("policy_changes.csv", f"line {line}: entry {seq} has no policy details")

        def member(name):
            v = d.get(name, "")
            if not isinstance(v, str):
                fail("policy_changes.csv", f"line {line}: details.{name} is not a string")
            return v

        file = f"policies/{agent_folder(e['agent'])}/v{e['policy_version']}.txt"
        want = [e["agent"], str(e["policy_version"]), time_text(e["time_unix_nanos"]), str(seq), member("author"),
                member("approver"), e["reason"], member("hash"), member("prev_hash"), str(e["writer_uid"]),
                "true" if first <= seq <= last else "false", file]
        for col, have, w in zip(POLICY_COLUMNS, row, want):
            if have != neutralise(w):
                fail("policy_changes.csv", f"line {line}, column {col}: {have!r} != {neutralise(w)!r}")
        if e["time_unix_nanos"] >= to:
            fail("policy_changes.csv", f"line {line}: set after the period")
        if e["agent"] != "*" and not wanted(e["agent"]):
            fail("policy_changes.csv", f"line {line}: agent not among proof.json's agents")
        if file not in policy_files or read(root, file) != member("text").encode("utf-8"):
            fail("policy_changes.csv", f"{file} is not the text entry {seq} records")
        if seq in listed or file in named:
            fail("policy_changes.csv", f"line {line}: listed twice")
        listed.add(seq)
        named.add(file)
        versions.setdefault(e["agent"], []).append((e["policy_version"], seq))
    for seq, e in kept.items():
        if first <= seq <= last and e["kind"] == 6 and (e["agent"] == "*" or wanted(e["agent"])) and seq not in listed:
            fail("policy_changes.csv", f"the policy change of entry {seq} is not listed")
    for agent, vs in versions.items():
        vs.sort()
        if any(b[0] != a[0] + 1 for a, b in zip(vs, vs[1:])):
            fail("policy_changes.csv", f"the versions of {agent!r} are not consecutive")
        if vs[0][0] > 1 and first <= vs[0][1] <= last:
            fail("policy_changes.csv", f"the version of {agent!r} in force at the period's start is not listed")
    for extra in sorted(policy_files - named):
        fail("policy_changes.csv", f"{extra} is in the bundle but no row names it")
    return f"ok: entries {first}..={last} of {origin} size {size}, export entry {proof['export_seq']}"


def main(argv):
    if len(argv) != 4 or argv[2] != "--key":
        print("usage: verify_bundle.py DIR --key FILE", file=sys.stderr)
        return 2
    try:
        print(verify(argv[1], argv[3]))
        return 0
    except Failed as e:
        print(f"FAILED {e}", file=sys.stderr)
        return 1
    except Usage as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
