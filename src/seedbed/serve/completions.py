"""`POST /v1/completions`: plain text continuation (no chat template), streamed or whole."""

from __future__ import annotations

import time

from fastapi import Request as HTTPRequest

from seedbed.serve.metrics import ServerMetrics
from seedbed.serve.protocol import (
    APIError, Chunks, ServerConfig, complete_within_limits, count_tokens, find_engine, finish_reason, new_request,
    response_schema, sse_event, sse_response, usage,
)
from seedbed.serve.schemas import CompletionRequest


async def text_completion(config: ServerConfig, body: CompletionRequest, http: HTTPRequest, metrics: ServerMetrics):
    engine = find_engine(config, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise APIError(400, "only one prompt per request is supported", param="prompt")
    ids = engine.tokenizer(prompts[0], add_special_tokens=True)["input_ids"]
    request = new_request(config, engine, ids, body, body.max_tokens, json_schema=await response_schema(engine, body))
    prefix = prompts[0] if body.echo else ""
    chunks = Chunks("text_completion", body.model)
    if body.stream:
        return sse_response(text_stream(engine, request, body, metrics, prefix, chunks))
    text = await complete_within_limits(engine, request, config, http)
    count_tokens(metrics, engine, request)
    done = chunks.choice({"text": prefix + text, "logprobs": None}, finish_reason(request))
    return {**done, "usage": usage(request)}


async def text_stream(engine, request, body: CompletionRequest, metrics: ServerMetrics, prefix: str, chunks: Chunks):
    if prefix:
        yield sse_event(chunks.choice({"text": prefix, "logprobs": None}))
    first = True
    async for piece in engine.stream(request):
        if first:
            metrics.first_token.labels(engine.name).observe(time.monotonic() - request.started)
            first = False
        yield sse_event(chunks.choice({"text": piece, "logprobs": None}))
    yield sse_event(chunks.choice({"text": "", "logprobs": None}, finish_reason(request)))
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event(chunks.usage(usage(request)))
    count_tokens(metrics, engine, request)
    yield sse_event("[DONE]")
