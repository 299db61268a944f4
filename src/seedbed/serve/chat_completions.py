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
import uuid

from fastapi import Request as HTTPRequest

from seedbed.chat import render_prompt
from seedbed.serve.app import APIError, ServerConfig, _complete, _count, _engine, _finish, _request, _sse, _usage, sse_event
from seedbed.serve.engine import Engine

log = logging.getLogger("seedbed.serve")
MAX_ANNOTATIONS = 16  # calculator completions per answer: bounds a model that loops on `<<`
MAX_TOOL_STEPS = 4


def _content(message) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for i, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, "only text content parts are supported", param=f"messages.content.{i}")
        texts.append(part["text"])
    return "\n".join(texts)


def _messages(body) -> list[dict]:
    out = []
    for m in body.messages:
        message = {"role": "system" if m.role == "developer" else m.role, "content": _content(m)}
        if m.tool_calls:
            message["tool_calls"] = m.tool_calls
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


def _render(engine: Engine, messages: list[dict]) -> list[int]:
    try:
        text = render_prompt(engine.tokenizer, messages)
    except Exception as e:  # a template that rejects the conversation (e.g. roles out of order) is the caller's input
        raise APIError(400, f"the model's chat template rejected these messages: {e}", param="messages") from None
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


async def _answer(config: ServerConfig, engine: Engine, messages: list[dict], body, http, calculator: bool):
    """Generate one assistant reply; with `calculator`, complete each `<<EXPR=` annotation exactly on the way."""
    if calculator:
        from seedbed.serve.calculator import CalculatorError, calculate, pending_annotation
    prompt_ids = _render(engine, messages)
    text, total = "", None
    for _ in range(MAX_ANNOTATIONS + 1):
        ids = prompt_ids + (engine.tokenizer(text, add_special_tokens=False)["input_ids"] if text else [])
        request = _request(config, engine, ids, body, body.max_completion_tokens or body.max_tokens,
                           stop_when=(lambda t: pending_annotation(text + t) is not None) if calculator else None)
        if total is not None:
            request.max_tokens = max(1, request.max_tokens - total.completion_tokens)
        text += await _complete(engine, request, config, http)
        request.prompt_ids = prompt_ids  # usage counts the user's prompt once
        request.completion_tokens += total.completion_tokens if total else 0
        total = request
        expression = pending_annotation(text) if calculator and request.finish_reason == "stop" else None
        if expression is None:
            break
        try:
            text += f"{calculate(expression)}>>"
        except CalculatorError:
            text += "?>>"  # the model wrote something no calculator computes; say so in place and go on
    return text, total


async def chat_completion(config: ServerConfig, body, http: HTTPRequest, metrics) -> dict:
    engine = _engine(config, body.model)
    messages = _messages(body)
    if body.model in config.fewshot:
        messages = config.fewshot[body.model].apply(messages)
    citations = None
    if body.model in config.rag:
        from seedbed.serve.grounding import ground

        messages, citations = ground(config.rag[body.model], messages)
    declared = []
    if body.tools and body.tool_choice != "none":
        from seedbed.serve.tools import ToolError, tool_from_openai

        try:
            declared = [tool_from_openai(spec) for spec in body.tools]
        except ToolError as e:
            raise APIError(400, str(e), param="tools") from None
    server_side = {t.name: config.tools[t.name] for t in declared if t.name in config.tools}

    if not declared and body.stream:
        ids = _render(engine, messages)
        request = _request(config, engine, ids, body, body.max_completion_tokens or body.max_tokens)
        return _sse(_chat_stream(engine, request, body, metrics, citations), http)

    if declared:
        text, requests = await _with_tools(config, engine, messages, body, http, declared, server_side)
        from seedbed.serve.tools import parse_tool_calls

        content, calls = parse_tool_calls(text)
        calls = [c for c in calls if c.name not in server_side]  # server tools already ran; the rest are the client's
    else:
        content, request = await _answer(config, engine, messages, body, http, calculator=False)
        requests, calls = [request], []
    usage = {k: sum(_usage(r)[k] for r in requests) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    for r in requests:
        _count(metrics, engine, r)
    message = {"role": "assistant", "content": content if not calls else (content or None)}
    if calls:
        message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in calls]
    finish = "tool_calls" if calls else _finish(requests[-1])
    response = {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": body.model, "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage,
    }
    if citations is not None:
        response["seedbed_citations"] = citations
    if config.log_content:  # only when the operator asked: prompts and answers are the users' data
        log.info("chat %s: %s -> %s", body.model, json.dumps(messages)[:2000], json.dumps(message)[:2000])
    if body.stream:  # tools were involved: the answer is complete already, sent as one streamed chunk
        return _sse(_replay(response, body), http)
    return response


async def _with_tools(config, engine, messages, body, http, declared, server_side) -> tuple[str, list]:
    """Generate with the tools described to the model; run server-side tools in a bounded loop."""
    from seedbed.serve.tools import messages_for_template, run_tool_loop, tools_system_prompt

    calculator = "calculator" in server_side
    prompt = [{"role": "system", "content": tools_system_prompt(declared)}, *messages]
    requests, loop = [], asyncio.get_running_loop()

    def reply(conversation: list[dict]) -> str:  # runs in a worker thread inside run_tool_loop
        future = asyncio.run_coroutine_threadsafe(
            _answer(config, engine, messages_for_template(conversation), body, http, calculator), loop)
        text, request = future.result()
        requests.append(request)
        return text

    if server_side:
        text, _ = await asyncio.to_thread(run_tool_loop, reply, prompt, server_side, MAX_TOOL_STEPS)
    else:
        text = await asyncio.to_thread(reply, prompt)
    return text, requests


def _chunk(cid, created, model, delta: dict, finish=None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def _chat_stream(engine: Engine, request, body, metrics, citations):
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    first = _chunk(cid, created, body.model, {"role": "assistant", "content": ""})
    if citations is not None:
        first["seedbed_citations"] = citations
    yield sse_event(first)
    async for piece in engine.stream(request):
        yield sse_event(_chunk(cid, created, body.model, {"content": piece}))
    yield sse_event(_chunk(cid, created, body.model, {}, _finish(request)))
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event({**_chunk(cid, created, body.model, {}), "choices": [], "usage": _usage(request)})
    _count(metrics, engine, request)
    yield sse_event("[DONE]")


async def _replay(response: dict, body):
    cid, created, model = response["id"], response["created"], response["model"]
    message, finish = response["choices"][0]["message"], response["choices"][0]["finish_reason"]
    delta = {"role": "assistant", "content": message.get("content") or ""}
    if "tool_calls" in message:
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    first = _chunk(cid, created, model, delta)
    if "seedbed_citations" in response:
        first["seedbed_citations"] = response["seedbed_citations"]
    yield sse_event(first)
    yield sse_event(_chunk(cid, created, model, {}, finish))
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event({**_chunk(cid, created, model, {}), "choices": [], "usage": response["usage"]})
    yield sse_event("[DONE]")
