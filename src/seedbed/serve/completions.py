"""`POST /v1/completions`: plain text continuation (no chat template), streamed or whole, with OpenAI's legacy
`logprobs` and `echo`: what lm-evaluation-harness's `local-completions` model sends.

`prompt` is a text, a list of texts, a list of token ids (used as given: no BOS is added) or a list of such
lists; each prompt has `n` choices (`index` = prompt * n + choice, as OpenAI orders them), all decoded together.
`max_tokens: 0` with `echo` scores the prompt only. A stream interleaves its choices' chunks as they are decoded;
it takes no `logprobs` and `max_tokens` >= 1 (else a 400 naming the field): lm-eval never streams, and a stream's
logprobs would need a scoring pass per chunk.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Request as HTTPRequest

from seedbed.inference.request import Request
from seedbed.serve.engine import Engine, ScoreJob
from seedbed.serve.logprobs import legacy_logprobs
from seedbed.serve.metrics import ServerMetrics
from seedbed.serve.protocol import (
    APIError, Chunks, ServerConfig, choice_seed, complete_within_limits, count_tokens, find_engine, finish_reason,
    merged, new_request, response_schema, score_within_limits, sse_event, sse_response, total_usage,
)
from seedbed.serve.schemas import CompletionRequest


async def text_completion(config: ServerConfig, body: CompletionRequest, http: HTTPRequest, metrics: ServerMetrics):
    engine = find_engine(config, body.model)
    prompts = await asyncio.to_thread(prompt_list, config, engine, body)  # tokenizing up to a megabyte: off the loop
    if body.max_tokens == 0 and not body.echo:
        raise APIError(400, "max_tokens 0 asks for no completion: add echo: true to score the prompt",
                       param="max_tokens")
    if body.stream and (body.logprobs is not None or body.max_tokens == 0):
        param = "logprobs" if body.logprobs is not None else "max_tokens"
        raise APIError(400, "a streamed completion takes no logprobs and max_tokens of 1 or more; "
                       f"drop stream or change {param}", param=param)
    if len(prompts) * body.n > config.limits.max_prompts:
        raise APIError(400, f"{len(prompts)} prompts x n={body.n} choices in one request; this server takes at "
                       f"most {config.limits.max_prompts}", param="n")
    schema = await response_schema(engine, body)
    # Every prompt is checked as a decode would be (length, max_tokens), even when only scored.
    requests = []
    for _, ids in prompts:
        for j in range(body.n):
            requests.append(new_request(config, engine, ids, body, body.max_tokens or 1, json_schema=schema))
            requests[-1].seed = choice_seed(body, j)
    prompts = [p for p in prompts for _ in range(body.n)]
    total = sum(len(r.prompt_ids) + body.max_tokens for r in requests)
    if total > config.limits.max_batch_tokens:
        raise APIError(400, f"the prompts and completions come to {total} tokens; this server takes at most "
                       f"{config.limits.max_batch_tokens} per request", param="prompt")
    echoes = [(text if text is not None else engine.tokenizer.decode(r.prompt_ids, skip_special_tokens=True))
              if body.echo else "" for (text, _), r in zip(prompts, requests)]
    chunks = Chunks("text_completion", body.model)
    if body.stream:
        return sse_response(text_stream(engine, requests, body, metrics, echoes, chunks))
    if body.max_tokens > 0:
        texts = await complete_all(engine, requests, config, http)
    else:
        texts = [""] * len(requests)
        for r in requests:
            r.finish_reason = "length"
    logprobs = await score_choices(engine, requests, body, config, http)
    choices = []
    for i, (r, echo, text, lp) in enumerate(zip(requests, echoes, texts, logprobs)):
        count_tokens(metrics, engine, r)
        choices.append({"index": i, "text": echo + text, "logprobs": lp, "finish_reason": finish_reason(r)})
    return {"id": chunks.id, "object": "text_completion", "created": chunks.created, "model": body.model,
            "choices": choices, "usage": total_usage(requests, body.n)}


def prompt_list(config: ServerConfig, engine: Engine, body: CompletionRequest) -> list[tuple[str | None, list[int]]]:
    """Each prompt as (its text, or None for token ids; its token ids), within the server's limits."""
    prompt = body.prompt
    if isinstance(prompt, str) or (prompt and all(isinstance(t, int) for t in prompt)):
        prompt = [prompt]  # one prompt: a text or a list of token ids
    if not prompt:
        raise APIError(400, "prompt is an empty list; give a text, texts, token ids or lists of token ids",
                       param="prompt")
    if len(prompt) > config.limits.max_prompts:
        raise APIError(400, f"{len(prompt)} prompts in one request; this server takes at most "
                       f"{config.limits.max_prompts}", param="prompt")
    vocab = len(engine.tokenizer)
    out = []
    for i, p in enumerate(prompt):
        if isinstance(p, str):
            out.append((p, engine.tokenizer(p, add_special_tokens=True)["input_ids"]))
            continue
        if bad := [t for t in p if not 0 <= t < vocab]:
            raise APIError(400, f"prompt[{i}]: token id {bad[0]} is not in this model's vocabulary (0..{vocab - 1})",
                           param="prompt")
        out.append((None, list(p)))
    return out


async def complete_all(engine: Engine, requests: list[Request], config: ServerConfig, http: HTTPRequest) -> list[str]:
    """Every request's completion (the engine batches them); if one fails, the others are cancelled."""
    try:
        return list(await asyncio.gather(*(complete_within_limits(engine, r, config, http) for r in requests)))
    except BaseException:
        for r in requests:
            r.cancelled = True
        raise


async def score_choices(engine: Engine, requests: list[Request], body: CompletionRequest, config: ServerConfig,
                        http: HTTPRequest) -> list[dict | None]:
    """Each choice's legacy logprobs (None unless asked for).

    The completion's tokens are scored after decoding, with the prompt, in one forward pass (`Backend.score`)
    rather than captured while sampling: one mechanism for echo and completion alike, the same in both engines,
    and the numbers are the model's own distribution (before temperature and top-p, as vLLM reports by default),
    so a prompt scored alone and the same tokens sampled get the same logprobs.
    """
    if body.logprobs is None:
        return [None] * len(requests)
    tokenizer = engine.tokenizer
    sequences = [r.prompt_ids + r.tokens for r in requests]
    shown = [0 if body.echo else len(r.prompt_ids) for r in requests]
    job = ScoreJob(sequences, [max(s, 1) for s in shown], body.logprobs)
    job.started = min(r.started for r in requests)  # one time limit for the whole request
    scores = await score_within_limits(engine, job, config, http)
    return [legacy_logprobs(tokenizer, ids, first, row) for ids, first, row in zip(sequences, shown, scores)]


async def text_stream(engine, requests: list[Request], body: CompletionRequest, metrics: ServerMetrics,
                      prefixes: list[str], chunks: Chunks):
    for i, prefix in enumerate(prefixes):
        if prefix:
            yield sse_event(chunks.choice({"text": prefix, "logprobs": None}, index=i))
    waiting_first = set(range(len(requests)))
    async for i, piece in merged(engine, requests):
        r = requests[i]
        if piece is None:
            yield sse_event(chunks.choice({"text": "", "logprobs": None}, finish_reason(r), index=i))
            count_tokens(metrics, engine, r)
            continue
        if i in waiting_first:
            metrics.first_token.labels(engine.name).observe(time.monotonic() - r.started)
            waiting_first.discard(i)
        yield sse_event(chunks.choice({"text": piece, "logprobs": None}, index=i))
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event(chunks.usage(total_usage(requests, body.n)))
    yield sse_event("[DONE]")
