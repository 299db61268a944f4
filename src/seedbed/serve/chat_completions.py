"""`POST /v1/chat/completions`: chat template, tools (client- and server-side), calculator annotations, streaming.

Tools follow OpenAI's protocol both ways: a tool the client declares and the server does not know comes back as
`tool_calls` for the client to run; a tool the server registered (the built-in `calculator`, YAML and entry-point
tools) runs on the server in a bounded loop until the model answers. When `calculator` is among the tools, a
GSM8K-style annotation the model opens (`<<48/2=`) is completed by the calculator (`24>>`) before the model goes on.

The model is told about the tools through its chat template's own `tools` argument when the template takes one
(the format it was trained on), else by a Hermes-style system prompt (`tools.tools_system_prompt`). Streamed, a
reply shows its text as it is decoded and each client call as soon as its `<tool_call>` block closes, also when
server tools run in between (each round's text as it comes, the calculator's values as it computes them): one
reading of the turn (`tools.AssistantTurn`) makes the stream's deltas and the whole reply's message alike.
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
    APIError, Chunks, ServerConfig, choice_seed, complete_within_limits, count_tokens, error_body, find_engine,
    finish_reason, merged, new_request, response_schema, sse_event, sse_response, total_usage, usage,
)
from seedbed.serve.tools import (
    AssistantTurn, messages_for_native_template, messages_for_template, run_tool_loop, tool_from_openai,
    tools_system_prompt,
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


def prompt_ids(engine: Engine, messages: list[dict], tools: list[dict] | None = None, prefill: str = "") -> list[int]:
    """The tokens the model continues: the conversation through the chat template (with `tools` for a template
    that takes them), then `prefill`, the start of the reply written for the model."""
    try:
        text = render_prompt(engine.tokenizer, messages, tools)
    except Exception as e:  # a template that rejects the conversation (e.g. roles out of order) is the caller's input
        raise APIError(400, f"the model's chat template rejected these messages: {e}", param="messages") from None
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + engine.tokenizer(prefill, add_special_tokens=False)["input_ids"] if prefill else ids


async def answer(config: ServerConfig, engine: Engine, messages: list[dict], body, http, calculator: bool,
                 json_schema: dict | None = None, choice: int = 0, prefill: str = "", max_tokens: int | None = None,
                 started: float | None = None, tools: list[dict] | None = None, on_text=None):
    """Generate one assistant reply (choice `choice` of `n`: its seed); with `calculator`, complete each `<<EXPR=`
    annotation exactly on the way (`seedbed.inference.annotations`, the loop `seedbed eval --tools calculator` runs
    too); with `json_schema`, the reply is JSON the schema accepts; `prefill` starts the reply (and is part of
    the returned text); `tools` go to the chat template's `tools` argument. Every round shares one time limit,
    counted from `started` (default: now), and at most `max_tokens` (default: the body's) completion tokens.
    `on_text(piece)`, when given, receives the reply's text as it grows (the calculator's values included)."""
    # templating and tokenizing: off the event loop
    prompt = await asyncio.to_thread(prompt_ids, engine, messages, tools, prefill)
    started = started or time.monotonic()
    reply, total = AnnotatedAnswer(prompt, engine.tokenizer, calculator), None
    while not reply.done:
        request = new_request(config, engine, reply.next_ids(), body,
                              max_tokens or body.max_completion_tokens or body.max_tokens,
                              stop_when=reply.stop_when(), json_schema=json_schema)
        request.seed = choice_seed(body, choice)
        request.started = started  # each calculator round is part of one request, under one time limit
        request.max_tokens = reply.budget(request.max_tokens)
        before = len(reply.text)
        text = await complete_within_limits(engine, request, config, http, on_text)
        reply.take(text, request.finish_reason, request.completion_tokens)
        if on_text is not None and len(reply.text) > before + len(text):
            on_text(reply.text[before + len(text):])  # the calculator's value and `>>`
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

    if body.stream and server_side:  # each round streamed as decoded; the tools run between rounds
        await asyncio.to_thread(check_first_round, config, engine, messages, body, declared, server_side)
        return sse_response(tool_stream(config, engine, messages, body, declared, server_side, metrics, citations,
                                        chunks))
    if body.stream:  # decoded as it streams; tool calls read out of the text as they close
        conversation, tools, prefill, close = messages, None, "", ""
        if declared:
            conversation, tools = tool_conversation(engine, messages, declared)
            if body.forced_tool() is not None:
                prefill, json_schema, close = forced_call(declared, body.forced_tool())
        prompt = await asyncio.to_thread(prompt_ids, engine, conversation, tools, prefill)
        requests = [new_request(config, engine, prompt, body, body.max_completion_tokens or body.max_tokens,
                                json_schema=json_schema) for _ in range(body.n)]
        for j, r in enumerate(requests):
            r.seed = choice_seed(body, j)
        calls = (prefill, close) if declared else None
        return sse_response(chat_stream(engine, requests, body, metrics, citations, chunks, calls))

    async def one_choice(j: int) -> tuple[AssistantTurn | None, str, list]:
        if declared:
            turn, requests = await with_tools(config, engine, messages, body, http, declared, server_side, j)
            return turn, turn.content, requests
        content, request = await answer(config, engine, messages, body, http, calculator=False,
                                        json_schema=json_schema, choice=j)
        return None, content, [request]

    results = await asyncio.gather(*(one_choice(j) for j in range(body.n)))
    for _, _, requests in results:
        for r in requests:
            count_tokens(metrics, engine, r)
    choices = []
    for j, (turn, content, requests) in enumerate(results):
        calls = turn.calls if turn is not None else []
        message = {"role": "assistant", "content": content if not calls else (content or None)}
        if calls:
            message["tool_calls"] = [call_fields(c) for c in calls]
        choices.append({"index": j, "message": message, "finish_reason": turn_finish(turn, requests[-1])})
    response = {"id": chunks.id, "object": "chat.completion", "created": chunks.created, "model": body.model,
                "choices": choices, "usage": turn_usage([requests for _, _, requests in results])}
    if citations is not None:
        response["seedbed_citations"] = citations
    if config.log_content:  # only when the operator asked: prompts and answers are the users' data
        log.info("chat %s: %s -> %s", body.model, json.dumps(messages)[:2000],
                 json.dumps([c["message"] for c in choices])[:2000])
    return response


def call_fields(call) -> dict:
    """A tool call as OpenAI's message (and, with an index, delta) shows it."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def turn_finish(turn: AssistantTurn | None, last) -> str:
    return "tool_calls" if turn is not None and turn.calls else finish_reason(last)


def turn_usage(per_choice: list[list]) -> dict:
    """Usage of `n` choices, each made of one or more requests (tool rounds): the prompt the user sent counted
    once (the choices share it), every round's completion tokens."""
    completion = sum(usage(r)["completion_tokens"] for requests in per_choice for r in requests)
    prompt = sum(usage(r)["prompt_tokens"] for r in per_choice[0])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


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


async def with_tools(config, engine, messages, body, http, declared, server_side, choice: int = 0,
                     turn: AssistantTurn | None = None, show=None) -> tuple[AssistantTurn, list]:
    """Generate with the tools described to the model; run server-side tools in a bounded loop. Under
    tool_choice "required" or a named tool, the model's first turn is a call (`forced_call`). Returns the turn
    as the client sees it (its text, the calls the client is to run) and the requests of its rounds; `show`,
    when given, receives what the client is shown as the rounds are decoded (`AssistantTurn.feed`'s events).

    The whole loop is one request: one time limit from its start, and at most max_tokens completion tokens over
    all its replies (they were per reply: up to 5 replies of 17 calculator rounds each, each with the full
    allowance). A tool the server runs is described with the server's own description and schema, whatever the
    client's declaration of that name said.
    """
    calculator = "calculator" in server_side
    described = described_tools(declared, server_side)
    started = time.monotonic()
    forced = body.forced_tool()
    turn = turn or AssistantTurn(server_side, body.parallel_tool_calls)
    show = show or (lambda events: None)
    requests, left = [], [body.max_completion_tokens or body.max_tokens
                          or min(config.limits.default_max_tokens, config.limits.max_tokens)]

    async def reply(conversation: list[dict]) -> str:
        if left[0] <= 0:
            raise ToolBudgetSpent
        prefill, schema, close = forced_call(described, forced) if forced and not requests else ("", None, "")
        shown, tools = tool_conversation(engine, conversation, described)
        turn.start_round()
        show(turn.feed(prefill))
        text, request = await answer(config, engine, shown, body, http, calculator and not schema,
                                     json_schema=schema, choice=choice, prefill=prefill, max_tokens=left[0],
                                     started=started, tools=tools, on_text=lambda piece: show(turn.feed(piece)))
        close = close if request.finish_reason == "stop" else ""  # a call cut short by max_tokens is no call
        show(turn.feed(close) + turn.end_round())
        left[0] -= request.completion_tokens
        requests.append(request)
        return text + close

    try:
        if server_side:
            await run_tool_loop(reply, messages, server_side, MAX_TOOL_STEPS)
        else:
            await reply(messages)
    except ToolBudgetSpent:
        pass
    return turn, requests


def described_tools(declared: list, server_side: dict) -> list:
    """The tools as the model is told of them: a tool the server runs with the server's own description and
    schema, whatever the client's declaration of that name said."""
    return [server_side.get(t.name, t) for t in declared]


def check_first_round(config, engine, messages, body, declared, server_side) -> None:
    """Raise the APIError the loop's first round would (prompt too long, max_tokens over the limit, a full
    queue, ...) now, while the client can still get it as an HTTP status rather than in a started stream."""
    described = described_tools(declared, server_side)
    forced = body.forced_tool()
    prefill = forced_call(described, forced)[0] if forced else ""
    shown, tools = tool_conversation(engine, messages, described)
    new_request(config, engine, prompt_ids(engine, shown, tools, prefill), body,
                body.max_completion_tokens or body.max_tokens)


def shown_chunks(chunks: Chunks, j: int, events, turn: AssistantTurn):
    """SSE chunks of choice `j` for `AssistantTurn` events: text as content deltas, each call as a tool_calls
    delta with its index among the turn's calls."""
    for kind, value in events:
        if kind == "text":
            yield sse_event(chunks.choice({"delta": {"content": value}}, index=j))
        else:
            call = {"index": turn.calls.index(value), **call_fields(value)}
            yield sse_event(chunks.choice({"delta": {"tool_calls": [call]}}, index=j))


def opening_chunks(chunks: Chunks, n: int, citations):
    for j in range(n):
        first = chunks.choice({"delta": {"role": "assistant", "content": ""}}, index=j)
        if citations is not None:
            first["seedbed_citations"] = citations
        yield sse_event(first)


async def chat_stream(engine: Engine, requests: list, body, metrics: ServerMetrics, citations, chunks: Chunks,
                      calls: tuple[str, str] | None = None):
    """Each choice's text as it is decoded. With `calls` (the forced call's opening and closing text, or empty
    strings), tool calls are read out of the text (`AssistantTurn`) and sent as `tool_calls` deltas, each as soon
    as its block closes."""
    for event in opening_chunks(chunks, len(requests), citations):
        yield event
    turns = [AssistantTurn(parallel=body.parallel_tool_calls) if calls is not None else None for _ in requests]
    if calls is not None and calls[0]:
        for j, turn in enumerate(turns):
            for event in shown_chunks(chunks, j, turn.feed(calls[0]), turn):
                yield event
    waiting_first = set(range(len(requests)))
    async for j, piece in merged(engine, requests):
        r, turn = requests[j], turns[j]
        if piece is None:
            if turn is not None:  # a forced call cut short by max_tokens is no call: its block never closes
                tail = turn.feed(calls[1] if r.finish_reason == "stop" else "") + turn.end_round()
                for event in shown_chunks(chunks, j, tail, turn):
                    yield event
            yield sse_event(chunks.choice({"delta": {}}, turn_finish(turn, r), index=j))
            count_tokens(metrics, engine, r)
            continue
        if j in waiting_first:
            metrics.first_token.labels(engine.name).observe(time.monotonic() - r.started)
            waiting_first.discard(j)
        events = [("text", piece)] if turn is None else turn.feed(piece)
        for event in shown_chunks(chunks, j, events, turn):
            yield event
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event(chunks.usage(total_usage(requests, body.n)))
    yield sse_event("[DONE]")


async def tool_stream(config, engine: Engine, messages: list[dict], body, declared, server_side,
                      metrics: ServerMetrics, citations, chunks: Chunks):
    """Each choice of a turn whose tools the server runs, as it is decoded: every round's text outside its tool
    calls and the calculator's values as they come, the client's calls as their blocks close; the server's tools
    run between rounds, unseen. An error after the stream has begun (a later round's prompt past the limit, the
    time limit) ends it with an error event, which the openai SDK raises."""
    for event in opening_chunks(chunks, body.n, citations):
        yield event
    started, out = time.monotonic(), asyncio.Queue()
    turns = [AssistantTurn(server_side, body.parallel_tool_calls) for _ in range(body.n)]

    async def run(j: int) -> None:
        try:
            _, requests = await with_tools(config, engine, messages, body, None, declared, server_side, j,
                                           turn=turns[j], show=lambda events: out.put_nowait((j, "shown", events)))
            out.put_nowait((j, "done", requests))
        except Exception as e:  # noqa: BLE001 -- handed to the stream, which ends with it
            out.put_nowait((j, "failed", e))

    # No `http` above: a streamed reply's client leaving cancels this generator, which cancels the rounds.
    tasks = [asyncio.ensure_future(run(j)) for j in range(body.n)]
    try:
        done, first = {}, set()
        while len(done) < body.n:
            j, kind, item = await out.get()
            if kind == "failed":
                error = item if isinstance(item, APIError) else APIError(500, "internal server error", "server_error")
                if not isinstance(item, APIError):
                    log.error("tool stream failed", exc_info=item)
                yield sse_event(error_body(error.message, error.type, error.param, error.code))
                return
            if kind == "shown":
                if item and j not in first:
                    metrics.first_token.labels(engine.name).observe(time.monotonic() - started)
                    first.add(j)
                for event in shown_chunks(chunks, j, item, turns[j]):
                    yield event
                continue
            done[j] = item
            for r in item:
                count_tokens(metrics, engine, r)
            yield sse_event(chunks.choice({"delta": {}}, turn_finish(turns[j], item[-1]), index=j))
        if body.stream_options and body.stream_options.include_usage:
            yield sse_event(chunks.usage(turn_usage([done[j] for j in range(body.n)])))
        yield sse_event("[DONE]")
    finally:
        for task in tasks:
            task.cancel()
