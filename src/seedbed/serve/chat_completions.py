"""`POST /v1/chat/completions`: chat template, tools (client- and server-side), calculator annotations, streaming.

Tools follow OpenAI's protocol both ways: a tool the client declares and the server does not know comes back as
`tool_calls` for the client to run; a tool the server registered (the built-in `calculator`, YAML and entry-point
tools) runs on the server in a bounded loop until the model answers. When `calculator` is among the tools, a
GSM8K-style annotation the model opens (`<<48/2=`) is completed by the calculator (`24>>`) before the model goes on.

The model is told about the tools through its chat template's own `tools` argument when the template takes one
(the format it was trained on), else by a Hermes-style system prompt (`tools.tools_system_prompt`). Streamed, a
reply with client tools shows its text as it is decoded and each call as soon as its `<tool_call>` block closes
(`tools.ToolCallStream`); only a reply that runs server tools is computed whole and then sent as chunks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import Request as HTTPRequest

from seedbed.chat import render_prompt, template_takes_tools
from seedbed.errors import ToolError
from seedbed.inference.annotations import AnnotatedAnswer
from seedbed.serve.engine import Engine
from seedbed.serve.grounding import ground
from seedbed.serve.metrics import ServerMetrics
from seedbed.serve.protocol import (
    APIError, Chunks, ServerConfig, choice_seed, complete_within_limits, count_tokens, find_engine, finish_reason,
    merged, new_request, response_schema, sse_event, sse_response, total_usage, usage,
)
from seedbed.serve.tools import (
    ToolCallStream, messages_for_native_template, messages_for_template, parse_tool_calls, run_tool_loop,
    tool_from_openai, tools_system_prompt,
)

log = logging.getLogger("seedbed.serve")
MAX_TOOL_STEPS = 4


def content_text(message) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for i, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, "only text content parts are supported", param=f"messages.content.{i}")
        texts.append(part["text"])
    return "\n".join(texts)


def plain_messages(body) -> list[dict]:
    out = []
    for m in body.messages:
        message = {"role": "system" if m.role == "developer" else m.role, "content": content_text(m)}
        if m.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


def prompt_ids(engine: Engine, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    try:
        text = render_prompt(engine.tokenizer, messages, tools)
    except Exception as e:  # a template that rejects the conversation (e.g. roles out of order) is the caller's input
        raise APIError(400, f"the model's chat template rejected these messages: {e}", param="messages") from None
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


async def answer(config: ServerConfig, engine: Engine, messages: list[dict], body, http, calculator: bool,
                 json_schema: dict | None = None, choice: int = 0, prefill: str = "", max_tokens: int | None = None,
                 started: float | None = None, tools: list[dict] | None = None):
    """Generate one assistant reply (choice `choice` of `n`: its seed); with `calculator`, complete each `<<EXPR=`
    annotation exactly on the way (`seedbed.inference.annotations`, the loop `seedbed eval --tools calculator` runs
    too); with `json_schema`, the reply is JSON the schema accepts; `prefill` starts the reply (and is part of
    the returned text); `tools` go to the chat template's `tools` argument. Every round shares one time limit,
    counted from `started` (default: now), and at most `max_tokens` (default: the body's) completion tokens."""
    prompt = await asyncio.to_thread(prompt_ids, engine, messages, tools)  # templating and tokenizing: off the event loop
    started = started or time.monotonic()
    if prefill:
        prompt = prompt + engine.tokenizer(prefill, add_special_tokens=False)["input_ids"]
    reply, total = AnnotatedAnswer(prompt, engine.tokenizer, calculator), None
    while not reply.done:
        request = new_request(config, engine, reply.next_ids(), body,
                              max_tokens or body.max_completion_tokens or body.max_tokens,
                              stop_when=reply.stop_when(), json_schema=json_schema)
        request.seed = choice_seed(body, choice)
        request.started = started  # each calculator round is part of one request, under one time limit
        request.max_tokens = reply.budget(request.max_tokens)
        reply.take(await complete_within_limits(engine, request, config, http), request.finish_reason,
                   request.completion_tokens)
        request.prompt_ids = prompt  # usage counts the user's prompt once
        request.completion_tokens = reply.completion_tokens
        total = request
    return prefill + reply.text, total


async def chat_completion(config: ServerConfig, body, http: HTTPRequest, metrics: ServerMetrics):
    engine = find_engine(config, body.model)
    messages = plain_messages(body)
    if body.model in config.fewshot:
        # Off the event loop, as templating and tokenizing are: both embed the question and search.
        messages = await asyncio.to_thread(config.fewshot[body.model].apply, messages)
    citations = None
    if body.model in config.rag:
        messages, citations = await asyncio.to_thread(ground, config.rag[body.model], messages)
    declared = []
    if body.tools and body.tool_choice != "none":
        try:
            declared = [tool_from_openai(spec) for spec in body.tools]
        except ToolError as e:
            raise APIError(400, str(e), param="tools") from None
    forced = body.forced_tool()
    if forced is not None and not declared:
        raise APIError(400, f"tool_choice {body.tool_choice if forced == '*' else repr(forced)} needs tools",
                       param="tool_choice")
    if forced not in (None, "*") and forced not in {t.name for t in declared}:
        raise APIError(400, f"tool_choice names '{forced}', which is not among the tools", param="tool_choice")
    server_side = {t.name: config.tools[t.name] for t in declared if t.name in config.tools}
    if declared and body.json_schema() is not None:  # a tool call is text the schema would not allow
        raise APIError(400, "response_format json_object / json_schema cannot be combined with tools here; send "
                       "one or the other", param="response_format")
    json_schema = await response_schema(engine, body)
    chunks = Chunks("chat.completion.chunk", body.model)

    if body.stream and not server_side:  # decoded as it streams; tool calls read out of the text as they close
        conversation, tools, prefill, close = messages, None, "", ""
        if declared:
            conversation, tools = tool_conversation(engine, messages, declared)
            if body.forced_tool() is not None:
                prefill, json_schema, close = forced_call(declared, body.forced_tool())
        prompt = await asyncio.to_thread(prompt_ids, engine, conversation, tools)
        if prefill:
            prompt = prompt + engine.tokenizer(prefill, add_special_tokens=False)["input_ids"]
        requests = [new_request(config, engine, prompt, body, body.max_completion_tokens or body.max_tokens,
                                json_schema=json_schema) for _ in range(body.n)]
        for j, r in enumerate(requests):
            r.seed = choice_seed(body, j)
        calls = (prefill, close) if declared else None
        return sse_response(chat_stream(engine, requests, body, metrics, citations, chunks, calls))

    async def one_choice(j: int) -> tuple[dict, str, list]:
        if declared:
            text, requests = await with_tools(config, engine, messages, body, http, declared, server_side, j)
            content, calls = parse_tool_calls(text)
            calls = [c for c in calls if c.name not in server_side]  # server tools ran; the rest are the client's
            if not body.parallel_tool_calls:
                calls = calls[:1]
        else:
            content, request = await answer(config, engine, messages, body, http, calculator=False,
                                            json_schema=json_schema, choice=j)
            requests, calls = [request], []
        message = {"role": "assistant", "content": content if not calls else (content or None)}
        if calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        return message, "tool_calls" if calls else finish_reason(requests[-1]), requests

    results = await asyncio.gather(*(one_choice(j) for j in range(body.n)))
    every = [r for _, _, requests in results for r in requests]
    total = {k: sum(usage(r)[k] for r in every) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    total["prompt_tokens"] = sum(usage(r)["prompt_tokens"] for r in results[0][2])  # the choices share the prompt
    total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
    for r in every:
        count_tokens(metrics, engine, r)
    choices = [{"index": j, "message": message, "finish_reason": finish}
               for j, (message, finish, _) in enumerate(results)]
    response = {"id": chunks.id, "object": "chat.completion", "created": chunks.created, "model": body.model,
                "choices": choices, "usage": total}
    if citations is not None:
        response["seedbed_citations"] = citations
    if config.log_content:  # only when the operator asked: prompts and answers are the users' data
        log.info("chat %s: %s -> %s", body.model, json.dumps(messages)[:2000],
                 json.dumps([c["message"] for c in choices])[:2000])
    if body.stream:  # server tools ran: the answer is complete already, sent as one streamed chunk per choice
        return sse_response(replay(response, body, chunks))
    return response


def tool_conversation(engine: Engine, conversation: list[dict], tools: list) -> tuple[list[dict], list[dict] | None]:
    """The messages to render and the template's `tools` argument: OpenAI's tool turns and the tools themselves
    for a template that takes them (`chat.template_takes_tools`); else the Hermes system prompt, with calls and
    results as plain turns (`tools.messages_for_template`) and no `tools` argument."""
    if template_takes_tools(engine.tokenizer):
        return messages_for_native_template(conversation), [t.spec() for t in tools]
    prompt = {"role": "system", "content": tools_system_prompt(tools)}
    return messages_for_template([prompt, *conversation]), None


def forced_call(declared: list, forced: str) -> tuple[str, dict, str]:
    """For tool_choice "required" (`forced` "*") or a named tool: how the reply starts, the JSON schema the rest
    keeps to (constrained decoding) and what closes it, so that the model calls (one of) the tool(s) with
    arguments its parameters' schema accepts. One possible tool: its name is written for the model and only the
    arguments are decoded."""
    tools = [t for t in declared if forced in ("*", t.name)]
    if len(tools) == 1:
        return f'<tool_call>{{"name": {json.dumps(tools[0].name)}, "arguments": ', tools[0].parameters, "}</tool_call>"
    options = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    return "<tool_call>", {"anyOf": options}, "</tool_call>"


class ToolBudgetSpent(Exception):
    """The completion tokens the request allowed are spent: no further round."""


async def with_tools(config, engine, messages, body, http, declared, server_side, choice: int = 0
                     ) -> tuple[str, list]:
    """Generate with the tools described to the model; run server-side tools in a bounded loop. Under
    tool_choice "required" or a named tool, the model's first turn is a call (`forced_call`).

    The whole loop is one request: one time limit from its start, and at most max_tokens completion tokens over
    all its replies (they were per reply: up to 5 replies of 17 calculator rounds each, each with the full
    allowance). A tool the server runs is described with the server's own description and schema, whatever the
    client's declaration of that name said.
    """
    calculator = "calculator" in server_side
    described = [server_side.get(t.name, t) for t in declared]
    started = time.monotonic()
    forced = body.forced_tool()
    requests, left = [], [body.max_completion_tokens or body.max_tokens
                          or min(config.limits.default_max_tokens, config.limits.max_tokens)]

    async def reply(conversation: list[dict]) -> str:
        if left[0] <= 0:
            raise ToolBudgetSpent
        prefill, schema, close = forced_call(described, forced) if forced and not requests else ("", None, "")
        shown, tools = tool_conversation(engine, conversation, described)
        text, request = await answer(config, engine, shown, body, http, calculator and not schema,
                                     json_schema=schema, choice=choice, prefill=prefill, max_tokens=left[0],
                                     started=started, tools=tools)
        text += close if request.finish_reason == "stop" else ""  # a call cut short by max_tokens is no call
        left[0] -= request.completion_tokens
        requests.append((text, request))
        return text

    try:
        if server_side:
            text, _ = await run_tool_loop(reply, messages, server_side, MAX_TOOL_STEPS)
        else:
            text = await reply(messages)
    except ToolBudgetSpent:
        text = requests[-1][0]
    return text, [request for _, request in requests]


async def chat_stream(engine: Engine, requests: list, body, metrics: ServerMetrics, citations, chunks: Chunks,
                      calls: tuple[str, str] | None = None):
    """Each choice's text as it is decoded. With `calls` (the forced call's opening and closing text, or empty
    strings), tool calls are read out of the text (`ToolCallStream`) and sent as `tool_calls` deltas, each as soon
    as its block closes."""
    for j in range(len(requests)):
        first = chunks.choice({"delta": {"role": "assistant", "content": ""}}, index=j)
        if citations is not None:
            first["seedbed_citations"] = citations
        yield sse_event(first)
    readers = [ToolCallStream() if calls is not None else None for _ in requests]
    made = [0] * len(requests)  # tool calls sent, per choice

    def deltas(j: int, events):
        for kind, value in events:
            if kind == "text" and value:
                yield sse_event(chunks.choice({"delta": {"content": value}}, index=j))
            elif kind == "call" and (body.parallel_tool_calls or not made[j]):
                call = {"index": made[j], "id": value.id, "type": "function",
                        "function": {"name": value.name, "arguments": value.arguments}}
                made[j] += 1
                yield sse_event(chunks.choice({"delta": {"tool_calls": [call]}}, index=j))

    if calls is not None and calls[0]:
        for j, reader in enumerate(readers):
            for event in deltas(j, reader.feed(calls[0])):
                yield event
    waiting_first = set(range(len(requests)))
    async for j, piece in merged(engine, requests):
        r, reader = requests[j], readers[j]
        if piece is None:
            if reader is not None:  # a forced call cut short by max_tokens is no call: its block never closes
                tail = reader.feed(calls[1] if r.finish_reason == "stop" else "") + reader.close()
                for event in deltas(j, tail):
                    yield event
            yield sse_event(chunks.choice({"delta": {}}, "tool_calls" if made[j] else finish_reason(r), index=j))
            count_tokens(metrics, engine, r)
            continue
        if j in waiting_first:
            metrics.first_token.labels(engine.name).observe(time.monotonic() - r.started)
            waiting_first.discard(j)
        for event in deltas(j, [("text", piece)] if reader is None else reader.feed(piece)):
            yield event
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event(chunks.usage(total_usage(requests, body.n)))
    yield sse_event("[DONE]")


async def replay(response: dict, body, chunks: Chunks):
    """A reply computed whole (tools were involved), sent as the chunks of a stream: one per choice, then each
    choice's finish."""
    for j, choice in enumerate(response["choices"]):
        message = choice["message"]
        delta = {"role": "assistant", "content": message.get("content") or ""}
        if "tool_calls" in message:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        first = chunks.choice({"delta": delta}, index=j)
        if "seedbed_citations" in response:
            first["seedbed_citations"] = response["seedbed_citations"]
        yield sse_event(first)
    for j, choice in enumerate(response["choices"]):
        yield sse_event(chunks.choice({"delta": {}}, choice["finish_reason"], index=j))
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event(chunks.usage(response["usage"]))
    yield sse_event("[DONE]")
