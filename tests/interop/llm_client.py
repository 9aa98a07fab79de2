"""Drives the official `anthropic` and `openai` SDKs (and the OpenAI Agents SDK) for the LLM
gateway tests (tests/tests/shim_llm.rs). The SDKs are used as any agent uses them: only
the base URL and the API key are set.

  python3 llm_client.py cases ANTHROPIC_BASE OPENAI_BASE < cases.json
      runs each case, prints one JSON result per line
  python3 llm_client.py agent OPENAI_BASE KEY RAN_LOG
      runs an Agents SDK tool loop; each tool run is appended to RAN_LOG
  python3 llm_client.py pydantic_agent OPENAI_BASE KEY RAN_LOG
      the same tool loop with pydantic-ai (its OpenAI Responses model)
  python3 llm_client.py count_tokens ANTHROPIC_BASE KEY
      counts a message's tokens (`messages.count_tokens`), prints {"input_tokens": N}
"""

import json
import sys
import warnings

# model_dump of the SDKs' parsed helper types warns about their generic fields; the dump is
# only compared, and the warnings would bury the output.
warnings.filterwarnings("ignore", category=UserWarning)


def tools_for(api, names):
    if api == "anthropic":
        return [{"name": n, "description": n, "input_schema": {"type": "object"}} for n in names]
    if api == "chat":
        return [{"type": "function", "function": {"name": n, "description": n, "parameters": {"type": "object"}}} for n in names]
    return [{"type": "function", "name": n, "description": n, "parameters": {"type": "object"}, "strict": False} for n in names]


def summary(api, final):
    texts, calls, stop = [], [], None
    if api == "anthropic":
        stop = final.stop_reason
        for b in final.content:
            if b.type == "text":
                texts.append(b.text)
            elif b.type == "tool_use":
                calls.append([b.id, b.name, json.dumps(b.input, sort_keys=True)])
    elif api == "chat":
        ch = final.choices[0]
        stop = ch.finish_reason
        if ch.message.content:
            texts.append(ch.message.content)
        for tc in ch.message.tool_calls or []:
            calls.append([tc.id, tc.function.name, json.dumps(json.loads(tc.function.arguments), sort_keys=True)])
    else:
        stop = final.status
        for item in final.output:
            if item.type == "message":
                for part in item.content:
                    if part.type == "output_text":
                        texts.append(part.text)
            elif item.type == "function_call":
                calls.append([item.call_id, item.name, json.dumps(json.loads(item.arguments), sort_keys=True)])
    return {"texts": texts, "calls": calls, "stop": stop}


def run_case(case, anthropic_base, openai_base):
    import anthropic
    import openai

    api, stream = case["api"], case.get("stream", False)
    key = case["key"]
    tools = tools_for(api, case.get("tools", []))
    out = {"case": case.get("name", case["scenario"])}
    try:
        if api == "anthropic":
            client = anthropic.Anthropic(base_url=anthropic_base, api_key=key, max_retries=0, timeout=60)
            kw = dict(model=case["scenario"], max_tokens=256,
                      messages=case.get("messages") or [{"role": "user", "content": "hi"}])
            if tools:
                kw["tools"] = tools
            if stream:
                with client.messages.stream(**kw) as s:
                    out["events"] = [e.model_dump(mode="json") for e in s]
                    final = s.get_final_message()
            else:
                raw = client.messages.with_raw_response.create(**kw)
                out["raw"] = raw.http_response.content.decode()
                final = raw.parse()
        elif api == "chat":
            client = openai.OpenAI(base_url=openai_base, api_key=key, max_retries=0, timeout=60)
            kw = dict(model=case["scenario"], messages=case.get("messages") or [{"role": "user", "content": "hi"}])
            if tools:
                kw["tools"] = tools
            if stream:
                with client.chat.completions.stream(**kw) as s:
                    out["events"] = [e.model_dump(mode="json") for e in s]
                    final = s.get_final_completion()
            else:
                raw = client.chat.completions.with_raw_response.create(**kw)
                out["raw"] = raw.http_response.content.decode()
                final = raw.parse()
        else:
            client = openai.OpenAI(base_url=openai_base, api_key=key, max_retries=0, timeout=60)
            kw = dict(model=case["scenario"], input=case.get("input") or "hi")
            if tools:
                kw["tools"] = tools
            if stream:
                with client.responses.stream(**kw) as s:
                    out["events"] = [e.model_dump(mode="json") for e in s]
                    final = s.get_final_response()
            else:
                raw = client.responses.with_raw_response.create(**kw)
                out["raw"] = raw.http_response.content.decode()
                final = raw.parse()
        out["final"] = final.model_dump(mode="json")
        out.update(summary(api, final))
        out["ok"] = True
    except Exception as e:  # the test reports what the SDK raised
        out["ok"] = False
        out["error_type"] = type(e).__name__
        out["error"] = str(e)
        out["status"] = getattr(e, "status_code", None)
        body = getattr(e, "body", None)
        out["body"] = body if isinstance(body, (dict, list, str)) or body is None else str(body)
    return out


def calculator_run(ran_log, a, b, op):
    """The calculator tool of both agent loops: logs the run, computes."""
    with open(ran_log, "a") as f:
        f.write(json.dumps({"a": a, "b": b, "op": op}) + "\n")
    return str(a + b if op == "add" else a * b)


def pydantic_agent(openai_base, key, ran_log):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIResponsesModel("r-agent", provider=OpenAIProvider(base_url=openai_base, api_key=key))
    bot = Agent(model, instructions="Use the calculator.")

    @bot.tool_plain
    def calculator(a: float, b: float, op: str) -> str:
        """Computes a op b (add or multiply)."""
        return calculator_run(ran_log, a, b, op)

    result = bot.run_sync("What is (12 + 7) * 3 * 10?")
    print(json.dumps({"final_output": result.output}))


def agent(openai_base, key, ran_log):
    from agents import Agent, Runner, function_tool, set_default_openai_api, set_default_openai_client, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    set_default_openai_client(AsyncOpenAI(base_url=openai_base, api_key=key, max_retries=0), use_for_tracing=False)
    set_default_openai_api("responses")

    @function_tool
    def calculator(a: float, b: float, op: str) -> str:
        """Computes a op b (add or multiply)."""
        return calculator_run(ran_log, a, b, op)

    import asyncio

    async def main():
        bot = Agent(name="calc", instructions="Use the calculator.", model="r-agent", tools=[calculator])
        result = Runner.run_streamed(bot, "What is (12 + 7) * 3 * 10?")
        async for _ in result.stream_events():
            pass
        return result.final_output

    print(json.dumps({"final_output": asyncio.run(main())}))


if __name__ == "__main__":
    if sys.argv[1] == "cases":
        for case in json.load(sys.stdin):
            print(json.dumps(run_case(case, sys.argv[2], sys.argv[3])), flush=True)
    elif sys.argv[1] == "agent":
        agent(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "pydantic_agent":
        pydantic_agent(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "count_tokens":
        import anthropic

        client = anthropic.Anthropic(base_url=sys.argv[2], api_key=sys.argv[3], max_retries=0, timeout=60)
        n = client.messages.count_tokens(model="a-text", messages=[{"role": "user", "content": "hi"}])
        print(json.dumps({"input_tokens": n.input_tokens}))
