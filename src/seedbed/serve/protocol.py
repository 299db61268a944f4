"""What every endpoint shares: server settings, OpenAI-shaped errors, limits on a request, usage, SSE chunks.

It sits below the route modules (completions, chat_completions, embeddings) and the app that assembles them, so
imports run one way: app -> routes -> protocol -> engine.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

from fastapi import Request as HTTPRequest
from fastapi.responses import StreamingResponse

from seedbed.inference.request import Request
from seedbed.inference.stops import SchemaError, check_schema
from seedbed.inference.scores import TokenScore
from seedbed.serve.engine import Engine, QueueFull, ScoreJob
from seedbed.serve.metrics import ServerMetrics


@dataclass
class Limits:
    max_prompt_tokens: int = 4096
    max_tokens: int = 2048  # most completion tokens one request may ask for
    default_max_tokens: int = 512
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 300.0
    max_prompts: int = 64  # prompts in one /v1/completions request (lm-eval batches several per request)
    max_batch_tokens: int = 65_536  # their tokens together, completions' max_tokens included
    max_stops: int = 16  # stop strings in one request (ServeRecipe.max_stops says why not OpenAI's 4)
    max_stop_chars: int = 1000  # characters in one stop string (each is held back while it may still match)
    max_embedding_inputs: int = 2048  # texts in one /v1/embeddings request: OpenAI's limit
    max_embedding_tokens: int = 32_768  # their word pieces together


@dataclass
class ServerConfig:
    engines: dict[str, Engine]
    api_keys: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    tools: dict = field(default_factory=dict)  # server-side tools by name (seedbed.serve.tools.Tool)
    rag: dict = field(default_factory=dict)  # model name -> (retrieval store, k)
    fewshot: dict = field(default_factory=dict)  # model name -> FewshotProfile
    log_content: bool = False


class APIError(Exception):
    """An error answered to the client as OpenAI does: a status and `{"error": {message, type, param, code}}`."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param=None, code=None,
                 headers: dict | None = None):
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers


def queue_full(e: QueueFull) -> APIError:
    """The 429 of a full queue, with the seconds to wait in `Retry-After` (the `openai` SDK honours it)."""
    return APIError(429, str(e), "rate_limit_error", code="queue_full", headers={"Retry-After": str(e.retry_after)})


def error_body(message: str, type_: str, param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def find_engine(config: ServerConfig, name: str) -> Engine:
    if name not in config.engines:
        raise APIError(404, f"model '{name}' is not served here; GET /v1/models lists them", param="model",
                       code="model_not_found")
    return config.engines[name]


def new_request(config: ServerConfig, engine: Engine, ids: list[int], body, max_tokens: int | None,
                **extra) -> Request:
    """A decode request for `ids` with the body's sampling settings, checked against the server's limits."""
    limits = config.limits
    try:  # refused here, before a streamed reply has started, so that the client gets a 429 and not a broken stream
        engine.check_room()
    except QueueFull as e:
        raise queue_full(e) from None
    if not ids:  # an empty prompt: start from BOS, as a model's own generation would
        if engine.tokenizer.bos_token_id is None:
            raise APIError(400, "the prompt is empty", param="prompt")
        ids = [engine.tokenizer.bos_token_id]
    if len(ids) > limits.max_prompt_tokens:
        raise APIError(400, f"the prompt has {len(ids)} tokens; this server takes at most {limits.max_prompt_tokens}",
                       param="messages" if hasattr(body, "messages") else "prompt", code="context_length_exceeded")
    if len(ids) >= engine.max_context:  # past its context a model reads out of range (IndexError; on CUDA a device
        # assert that breaks every later request), whatever the server's own prompt limit says
        raise APIError(400, f"the prompt has {len(ids)} tokens; model '{engine.name}' reads at most "
                       f"{engine.max_context} (its context) and must have room to answer",
                       param="messages" if hasattr(body, "messages") else "prompt", code="context_length_exceeded")
    max_tokens = max_tokens or min(limits.default_max_tokens, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                       param="max_tokens")
    bias = body.logit_bias_ids()
    vocab = len(engine.tokenizer)
    if bad := [t for t in bias if not 0 <= t < vocab]:
        raise APIError(400, f"logit_bias: token {bad[0]} is not in this model's vocabulary (0..{vocab - 1})",
                       param="logit_bias")
    return Request(ids, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                   stop=checked_stops(limits, body.stop_list()), seed=body.seed, logit_bias=bias, presence_penalty=body.presence_penalty,
                   frequency_penalty=body.frequency_penalty, **extra)


def choice_seed(body, j: int) -> int | None:
    """The seed of choice `j` of `n`: the body's seed for the first, then the next ones (reproducible, and the
    choices differ when sampled); None without a seed."""
    return None if body.seed is None else (body.seed + j) % 2**63


def checked_stops(limits: Limits, stops: list[str]) -> list[str]:
    """`stops` if within the server's limits (how many, how long), else a 400 naming `stop`."""
    if len(stops) > limits.max_stops:
        raise APIError(400, f"{len(stops)} stop strings; this server takes at most {limits.max_stops}", param="stop")
    if (longest := max((len(s) for s in stops), default=0)) > limits.max_stop_chars:
        raise APIError(400, f"a stop string of {longest} characters; this server takes at most "
                       f"{limits.max_stop_chars}", param="stop")
    return stops


async def response_schema(engine: Engine, body) -> dict | None:
    """The JSON schema of the body's `response_format` (None for text), compiled for the engine's backend now so
    that a schema it cannot use is the caller's 400, naming `response_format`, before anything is queued."""
    schema = body.json_schema()
    if schema is None:
        return None
    try:
        check_schema(schema, "response_format.json_schema.schema")
        # Off the event loop: the first schema a torch model sees builds llguidance's view of its vocabulary.
        await asyncio.to_thread(engine.backend.compile_schema, schema)
    except SchemaError as e:
        message = str(e) if str(e).startswith("response_format") else f"response_format: {e}"
        raise APIError(400, message, param="response_format") from None
    return schema


async def complete_within_limits(engine: Engine, request: Request, config: ServerConfig,
                                 http: HTTPRequest | None, on_piece=None) -> str:
    """The whole completion, cancelled if the client disconnects or the request outlives its time limit; each
    piece also goes to `on_piece` as it is decoded, when given."""
    return await within_limits(engine.complete(request, on_piece), request, config, http, "generation")


async def score_within_limits(engine: Engine, job: ScoreJob, config: ServerConfig,
                              http: HTTPRequest | None) -> list[list[TokenScore]]:
    """`engine.score(job)`, given up (and the job skipped if it has not started) as a completion is."""
    return await within_limits(engine.score(job), job, config, http, "scoring")


async def within_limits(work, request: Request | ScoreJob, config: ServerConfig, http: HTTPRequest | None,
                        what: str):
    """Await `work` for `request`; if the client disconnects or the time limit passes, mark the request
    cancelled (the worker drops it) and answer 499 or 408."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if http is not None and await http.is_disconnected():
                request.cancelled = True
                task.cancel()
                raise APIError(499, "client closed the request", code="client_closed")
            if time.monotonic() - request.started > config.limits.request_timeout_s:
                request.cancelled = True
                task.cancel()
                raise APIError(408, f"{what} took over {config.limits.request_timeout_s:.0f} s; ask for "
                               "fewer or shorter prompts or fewer max_tokens", "timeout_error", code="timeout")
        return task.result()
    finally:
        if not task.done():
            task.cancel()


def finish_reason(request: Request) -> str:
    return "length" if request.finish_reason == "length" else "stop"


def usage(request: Request) -> dict:
    n_in, n_out = len(request.prompt_ids), request.completion_tokens
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def count_tokens(metrics: ServerMetrics, engine: Engine, request: Request) -> None:
    metrics.tokens_in.labels(engine.name).inc(len(request.prompt_ids))
    metrics.tokens_out.labels(engine.name).inc(request.completion_tokens)


# --- server-sent events ---------------------------------------------------------------------------------------


def sse_event(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def sse_response(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class Chunks:
    """The chunks of one streamed reply, in OpenAI's shape: one id, object kind, time and model for them all.

    >>> Chunks("chat.completion.chunk", "tiny", "chatcmpl-1", 0).choice({"delta": {}}, "stop")["choices"]
    [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]
    """

    def __init__(self, kind: str, model: str, id_: str | None = None, created: int | None = None):
        prefix = "cmpl" if kind == "text_completion" else "chatcmpl"
        self.kind, self.model = kind, model
        self.id, self.created = id_ or f"{prefix}-{uuid.uuid4().hex}", created or int(time.time())

    def choice(self, fields: dict, finish: str | None = None, index: int = 0) -> dict:
        """A chunk with one choice (`index`) made of `fields` and the finish reason."""
        return {"id": self.id, "object": self.kind, "created": self.created, "model": self.model,
                "choices": [{"index": index, **fields, "finish_reason": finish}]}

    def usage(self, counts: dict) -> dict:
        """The closing chunk of `stream_options.include_usage`: no choices, the usage."""
        return {"id": self.id, "object": self.kind, "created": self.created, "model": self.model, "choices": [],
                "usage": counts}


async def merged(engine: Engine, requests: list[Request]):
    """Yield (index, piece) from every request's stream as pieces come, and (index, None) when one ends: the
    choices of a streamed `n` > 1 or prompt list, decoded together. Leaving early cancels the unfinished ones."""
    out: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, r: Request) -> None:
        try:
            async for piece in engine.stream(r):
                out.put_nowait((i, piece))
            out.put_nowait((i, None))
        except BaseException as e:  # noqa: BLE001 -- handed to the reader, which raises it
            out.put_nowait((i, e))

    tasks = [asyncio.ensure_future(pump(i, r)) for i, r in enumerate(requests)]
    try:
        ended = 0
        while ended < len(requests):
            i, item = await out.get()
            if isinstance(item, BaseException):
                raise item
            ended += item is None
            yield i, item
    finally:
        for task in tasks:
            task.cancel()


def total_usage(requests: list[Request], n: int = 1) -> dict:
    """Usage of several choices, `n` per prompt in order: each prompt counted once (its choices share it, as
    OpenAI counts), completions summed."""
    n_in, n_out = sum(len(r.prompt_ids) for r in requests[::n]), sum(r.completion_tokens for r in requests)
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
