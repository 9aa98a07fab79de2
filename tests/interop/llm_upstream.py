"""A scripted model API for the LLM gateway tests (tests/tests/shim_llm.rs).

It replays responses recorded from the real Anthropic and OpenAI APIs (llm-fixtures/, see
its README), streaming or not as the request asks, and records every request it receives
(method, path, headers, body) as one JSON line in the log file, so the tests can check what
reached the upstream (the real key, never the agent token).

The request's "model" names the scenario (SCENARIOS below). A few scenarios put two
recorded tool calls into one response (the recordings hold no such response for every
API); how is said next to each. "cut:" before a scenario name ends the stream in the
middle of its first tool call; "pause:" stops there until the file LOG.go exists (and
writes LOG.paused when it gets there). Two hostile upstreams: "nan:" puts a NaN (JSON that
Python reads and strict parsers refuse) into the body, or into the first tool call's event
of a stream; "dup:" sends the body with its calls' member ("content", "choices", "output")
twice, the first empty: Python's json keeps the last.

Usage: python3 llm_upstream.py LOG   (prints "ready PORT" once listening on 127.0.0.1)
"""

import copy
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llm-fixtures")
LOG = sys.argv[1]


def text(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def lines(name):
    return [json.loads(l) for l in text(name).splitlines() if l.strip()]


def sse_file(name):
    """The data objects of a recorded `data: ...` stream (without [DONE])."""
    out = []
    for l in text(name).splitlines():
        if l.startswith("data: ") and l != "data: [DONE]":
            out.append(json.loads(l[6:]))
    return out


def split(events, first):
    """A recording of several responses, split at each `first` event."""
    out = []
    for e in events:
        if e["type"] == first:
            out.append([])
        out[-1].append(e)
    return out


# ---- Anthropic Messages ----

def a_blocks(events):
    """The content_block_* events of a stream, grouped by block."""
    blocks, cur = [], None
    for e in events:
        if e["type"] == "content_block_start":
            cur = [e]
            blocks.append(cur)
        elif e["type"] in ("content_block_delta", "content_block_stop") and cur is not None:
            cur.append(e)
    return blocks


def a_append_block(events, block):
    """`events` with `block` (another recording's tool_use block) added as the last block."""
    last = max(e["index"] for e in events if e["type"] == "content_block_start")
    out = [e for e in events if e["type"] not in ("message_delta", "message_stop")]
    for e in block:
        e = copy.deepcopy(e)
        e["index"] = last + 1
        out.append(e)
    out += [e for e in events if e["type"] in ("message_delta", "message_stop")]
    return out


PROGRAMMATIC = split(lines("anthropic-programmatic-tool-calling.1.chunks.txt"), "message_start")
REGEX_TURN1 = split(lines("anthropic-tool-search-deferred-regex.chunks.txt"), "message_start")[0]
QUOTED_BLOCK = a_blocks(lines("anthropic-issue-11719-quoted-tool-input.chunks.txt"))[0]

# ---- OpenAI Chat Completions ----

def c_append_call(base, extra):
    """`base` chunks with `extra`'s tool call fragments (index + 1) before the finish chunk."""
    frags = []
    for c in extra:
        for ch in c.get("choices", []):
            for tc in ch.get("delta", {}).get("tool_calls", []) or []:
                f = copy.deepcopy(c)
                tc = copy.deepcopy(tc)
                tc["index"] = 1
                f["choices"] = [{"index": 0, "delta": {"tool_calls": [tc]}, "finish_reason": None}]
                frags.append(f)
    at = next(i for i, c in enumerate(base) if any(ch.get("finish_reason") for ch in c.get("choices", [])))
    return base[:at] + frags + base[at:]


def c_json_two():
    """deepseek's recorded weather call and moonshot's recorded get_weather call, in one message."""
    body = json.loads(text("deepseek-tool-call.json"))
    other = json.loads(text("moonshotai-tool-call.json"))
    body["choices"][0]["message"]["tool_calls"] += other["choices"][0]["message"]["tool_calls"]
    return json.dumps(body)


# ---- OpenAI Responses ----

CALC = split(lines("openai-reasoning-encrypted-content.1.chunks.txt"), "response.created")


def r_completed(events):
    return next(e for e in events if e["type"] == "response.completed")["response"]


def r_append_item(events, extra):
    """`events` with `extra`'s function_call item events added as the last output item."""
    base_out = r_completed(events)["output"]
    index = len(base_out)
    item_events = [copy.deepcopy(e) for e in extra if "output_index" in e]
    for e in item_events:
        e["output_index"] = index
    done = copy.deepcopy(next(e for e in events if e["type"] == "response.completed"))
    done["response"]["output"] = base_out + r_completed(extra)["output"]
    out = [e for e in events if e["type"] != "response.completed"] + item_events + [done]
    for n, e in enumerate(out):
        e["sequence_number"] = n
    return out


# name -> (api, JSON body text or None, stream events or None)
SCENARIOS = {
    "a-text": ("anthropic", text("anthropic-text.json"), lines("anthropic-text.chunks.txt")),
    "a-tool": ("anthropic", text("anthropic-json-tool.1.json"), lines("anthropic-json-tool.1.chunks.txt")),
    "a-denied": ("anthropic", text("anthropic-issue-11719-quoted-tool-input.json"),
                 lines("anthropic-issue-11719-quoted-tool-input.chunks.txt")),
    # Non-streamed: the recorded response with four rollDie calls. Streamed: the first turn
    # of the tool-search recording (text, readNoteTree, a server tool) with the recorded
    # website_update block of issue 11719 appended as the last block.
    "a-mixed": ("anthropic", text("anthropic-programmatic-tool-calling.1.json"),
                a_append_block(REGEX_TURN1, QUOTED_BLOCK)),
    # Tool calls sent whole inside message_start (turns 2 and 3 of the programmatic recording).
    "a-prefilled-denied": ("anthropic", None, PROGRAMMATIC[1]),
    "a-prefilled-allowed": ("anthropic", None, PROGRAMMATIC[2]),
    "c-text": ("chat", text("openai-text.json"), lines("openai-text.chunks.txt")),
    "c-tool": ("chat", text("deepseek-tool-call.json"), lines("deepseek-tool-call.chunks.txt")),
    "c-denied": ("chat", text("moonshotai-tool-call.json"), sse_file("anthropic-fallback-tool-call.sse")),
    # deepseek's weather call plus the second recording's call as index 1.
    "c-mixed": ("chat", c_json_two(),
                c_append_call(lines("deepseek-tool-call.chunks.txt"), sse_file("anthropic-fallback-tool-call.sse"))),
    "r-text": ("responses", text("openai-phase.1.json"), lines("openai-phase.1.chunks.txt")),
    "r-tool": ("responses", text("parallel-tool-call-wrapper.1.json"), CALC[0]),
    "r-denied": ("responses", json.dumps(r_completed(CALC[2])), CALC[2]),
    # Turn 1 of the calculator recording with turn 3's call appended as the last item.
    "r-mixed": ("responses", json.dumps({**r_completed(CALC[0]), "output": r_completed(CALC[0])["output"] + r_completed(CALC[2])["output"]}),
                r_append_item(CALC[0], CALC[2])),
}

# The tool loop of the calculator recording, turn by turn (by the number of results sent).
AGENT_LOOP = CALC


def is_tool_event(api, e):
    if api == "anthropic":
        return e.get("type") == "content_block_start" and e["content_block"]["type"] == "tool_use"
    if api == "chat":
        return any(ch.get("delta", {}).get("tool_calls") for ch in e.get("choices", []))
    return e.get("type") == "response.output_item.added" and e["item"]["type"] == "function_call"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.record(b"")
        self.reply(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        try:
            self.post()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway went away (its client did): what the tests make happen

    def post(self):
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n)
        self.record(body)
        try:
            req = json.loads(body)
        except ValueError:
            return self.reply(400, {"error": {"message": "not JSON", "type": "invalid_request_error"}})
        if self.path.split("?")[0] == "/v1/messages/count_tokens":
            # Not governed: the gateway passes it through (the API's documented answer).
            return self.reply(200, {"input_tokens": 2095})
        model = req.get("model", "")
        mode, _, name = model.rpartition(":")
        if name == "r-agent":
            done = sum(1 for i in req.get("input", []) if isinstance(i, dict) and i.get("type") == "function_call_output")
            api, whole, events = "responses", None, AGENT_LOOP[min(done, len(AGENT_LOOP) - 1)]
            whole = json.dumps(r_completed(events))
        elif name in SCENARIOS:
            api, whole, events = SCENARIOS[name]
        elif name == "overloaded":
            # The API's own error, passed through by the gateway unchanged.
            return self.reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        else:
            return self.reply(404, {"error": {"message": "no scenario " + model, "type": "invalid_request_error"}})
        if not req.get("stream"):
            if whole is None:
                return self.reply(404, {"error": {"message": "no JSON recording for " + name}})
            if mode == "nan":
                whole = json.dumps({**json.loads(whole), "x_nan": float("nan")})
            elif mode == "dup":
                member = {"anthropic": "content", "chat": "choices", "responses": "output"}[api]
                whole = '{"' + member + '":[],' + whole.lstrip()[1:]
            return self.raw(200, "application/json", whole.encode())
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for e in events:
            if mode == "nan" and is_tool_event(api, e):
                e = {**e, "x_nan": float("nan")}
                mode = ""
            if mode in ("cut", "pause") and is_tool_event(api, e):
                self.send_event(api, e)
                if mode == "cut":
                    self.wfile.flush()
                    return
                open(LOG + ".paused", "w").close()
                while not os.path.exists(LOG + ".go"):
                    time.sleep(0.02)
                mode = ""
                continue
            self.send_event(api, e)
        if api == "chat":
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def send_event(self, api, e):
        data = json.dumps(e, separators=(",", ":"))
        if api == "chat":
            frame = "data: " + data + "\n\n"
        else:
            frame = "event: " + e["type"] + "\ndata: " + data + "\n\n"
        self.wfile.write(frame.encode())
        self.wfile.flush()

    def record(self, body):
        entry = {"method": self.command, "path": self.path,
                 "headers": {k.lower(): v for k, v in self.headers.items()},
                 "body": body.decode("utf-8", "replace")}
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def reply(self, status, obj):
        self.raw(status, "application/json", json.dumps(obj).encode())

    def raw(self, status, ctype, data):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("ready", server.server_address[1], flush=True)
server.serve_forever()
