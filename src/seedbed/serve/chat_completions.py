"""`POST /v1/chat/completions`: chat template, tools (client- and server-side), calculator annotations, streaming.

Tools follow OpenAI's protocol both ways: a tool the client declares and the server does not know comes back as
`tool_calls` for the client to run; a tool the server registered (the built-in `calculator`, YAML and entry-point
tools) runs on the server in a bounded loop until the model answers. When `calculator` is among the tools, a
GSM8K-style annotation the model opens (`<<48/2=`) is completed by the calculator (`24>>`) before the model goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import Request as HTTPRequest

from seedbed.chat import render_prompt
from seedbed.errors import ToolError
from seedbed.inference.annotations import AnnotatedAnswer
from seedbed.serve.engine import Engine
from seedbed.serve.grounding import ground
from seedbed.serve.metrics import ServerMetrics
from seedbed.serve.protocol import (
    APIError, Chunks, ServerConfig, complete_within_limits, count_tokens, find_engine, finish_reason, new_request,
    response_schema, sse_event, sse_response, usage,
)
from seedbed.serve.tools import (
    messages_for_template, parse_tool_calls, run_tool_loop, tool_from_openai, tools_system_prompt,
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


def prompt_ids(engine: Engine, messages: list[dict]) -> list[int]:
    try:
        text = render_prompt(engine.tokenizer, messages)
    except Exception as e:  # a template that rejects the conversation (e.g. roles out of order) is the caller's input
        raise APIError(400, f"the model's chat template rejected these messages: {e}", param="messages") from None
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


async def answer(config: ServerConfig, engine: Engine, messages: list[dict], body, http, calculator: bool,
                 json_schema: dict | None = None, max_tokens: int | None = None, started: float | None = None):
    """Generate one assistant reply; with `calculator`, complete each `<<EXPR=` annotation exactly on the way
    (`seedbed.inference.annotations`, the loop `seedbed eval --tools calculator` runs too); with `json_schema`, the
    reply is JSON the schema accepts. Every round shares one time limit, counted from `started` (default: now),
    and at most `max_tokens` (default: the body's) completion tokens."""
    prompt = await asyncio.to_thread(prompt_ids, engine, messages)  # templating and tokenizing: off the event loop
    started = started or time.monotonic()
    reply, total = AnnotatedAnswer(prompt, engine.tokenizer, calculator), None
    while not reply.done:
        request = new_request(config, engine, reply.next_ids(), body,
                              max_tokens or body.max_completion_tokens or body.max_tokens,
                              stop_when=reply.stop_when(), json_schema=json_schema)
        request.started = started  # each calculator round is part of one request, under one time limit
        request.max_tokens = reply.budget(request.max_tokens)
        reply.take(await complete_within_limits(engine, request, config, http), request.finish_reason,
                   request.completion_tokens)
        request.prompt_ids = prompt  # usage counts the user's prompt once
        request.completion_tokens = reply.completion_tokens
        total = request
    return reply.text, total


async def chat_completion(config: ServerConfig, body, http: HTTPRequest, metrics: ServerMetrics):
    engine = find_engine(config, body.model)
    messages = plain_messages(body)
    # Off the event loop, as templating and tokenizing are: both embed the question and search.
    if body.model in config.fewshot:
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
    server_side = {t.name: config.tools[t.name] for t in declared if t.name in config.tools}
    if declared and body.json_schema() is not None:  # a tool call is text the schema would not allow
        raise APIError(400, "response_format json_object / json_schema cannot be combined with tools here; send "
                       "one or the other", param="response_format")
    json_schema = await response_schema(engine, body)
    chunks = Chunks("chat.completion.chunk", body.model)

    if not declared and body.stream:
        request = new_request(config, engine, await asyncio.to_thread(prompt_ids, engine, messages), body,
                              body.max_completion_tokens or body.max_tokens, json_schema=json_schema)
        return sse_response(chat_stream(engine, request, body, metrics, citations, chunks))

    if declared:
        text, requests = await with_tools(config, engine, messages, body, http, declared, server_side)
        content, calls = parse_tool_calls(text)
        calls = [c for c in calls if c.name not in server_side]  # server tools already ran; the rest are the client's
    else:
        content, request = await answer(config, engine, messages, body, http, calculator=False,
                                        json_schema=json_schema)
        requests, calls = [request], []
    total = {k: sum(usage(r)[k] for r in requests) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    for r in requests:
        count_tokens(metrics, engine, r)
    message = {"role": "assistant", "content": content if not calls else (content or None)}
    if calls:
        message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in calls]
    finish = "tool_calls" if calls else finish_reason(requests[-1])
    response = {"id": chunks.id, "object": "chat.completion", "created": chunks.created, "model": body.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": total}
    if citations is not None:
        response["seedbed_citations"] = citations
    if config.log_content:  # only when the operator asked: prompts and answers are the users' data
        log.info("chat %s: %s -> %s", body.model, json.dumps(messages)[:2000], json.dumps(message)[:2000])
    if body.stream:  # tools were involved: the answer is complete already, sent as one streamed chunk
        return sse_response(replay(response, body, chunks))
    return response


class ToolBudgetSpent(Exception):
    """The completion tokens the request allowed are spent: no further round."""


async def with_tools(config, engine, messages, body, http, declared, server_side) -> tuple[str, list]:
    """Generate with the tools described to the model; run server-side tools in a bounded loop.

    The whole loop is one request: one time limit from its start, and at most max_tokens completion tokens over
    all its replies (they were per reply: up to 5 replies of 17 calculator rounds each, each with the full
    allowance). A tool the server runs is described with the server's own description and schema, whatever the
    client's declaration of that name said.
    """
    calculator = "calculator" in server_side
    described = [server_side.get(t.name, t) for t in declared]
    prompt = [{"role": "system", "content": tools_system_prompt(described)}, *messages]
    started = time.monotonic()
    requests, left = [], [body.max_completion_tokens or body.max_tokens
                          or min(config.limits.default_max_tokens, config.limits.max_tokens)]

    async def reply(conversation: list[dict]) -> str:
        if left[0] <= 0:
            raise ToolBudgetSpent
        text, request = await answer(config, engine, messages_for_template(conversation), body, http, calculator,
                                     max_tokens=left[0], started=started)
        left[0] -= request.completion_tokens
        requests.append((text, request))
        return text

    try:
        if server_side:
            text, _ = await run_tool_loop(reply, prompt, server_side, MAX_TOOL_STEPS)
        else:
            text = await reply(prompt)
    except ToolBudgetSpent:
        text = requests[-1][0]
    return text, [request for _, request in requests]


async def chat_stream(engine: Engine, request, body, metrics: ServerMetrics, citations, chunks: Chunks):
    first = chunks.choice({"delta": {"role": "assistant", "content": ""}})
    if citations is not None:
        first["seedbed_citations"] = citations
    yield sse_event(first)
    started = True
    async for piece in engine.stream(request):
        if started:
            metrics.first_token.labels(engine.name).observe(time.monotonic() - request.started)
            started = False
        yield sse_event(chunks.choice({"delta": {"content": piece}}))
    yield sse_event(chunks.choice({"delta": {}}, finish_reason(request)))
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event(chunks.usage(usage(request)))
    count_tokens(metrics, engine, request)
    yield sse_event("[DONE]")


async def replay(response: dict, body, chunks: Chunks):
    """A reply computed whole (tools were involved), sent as the chunks of a stream."""
    message, finish = response["choices"][0]["message"], response["choices"][0]["finish_reason"]
    delta = {"role": "assistant", "content": message.get("content") or ""}
    if "tool_calls" in message:
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    first = chunks.choice({"delta": delta})
    if "seedbed_citations" in response:
        first["seedbed_citations"] = response["seedbed_citations"]
    yield sse_event(first)
    yield sse_event(chunks.choice({"delta": {}}, finish))
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event(chunks.usage(response["usage"]))
    yield sse_event("[DONE]")
