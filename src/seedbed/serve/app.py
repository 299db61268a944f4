"""The OpenAI-compatible HTTP API: routes, API keys, limits and OpenAI-shaped errors.

    seedbed serve --model tuned=runs/demo/model --api-key sk-local

Every invalid input is answered 4xx with `{"error": {"message", "type", "param", "code"}}`; prompts and
completions are never logged unless `log_content` is set.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from seedbed.serve.engine import Engine, Request
from seedbed.serve.metrics import ServerMetrics
from seedbed.serve.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

log = logging.getLogger("seedbed.serve")


@dataclass
class Limits:
    max_prompt_tokens: int = 4096
    max_tokens: int = 2048  # most completion tokens one request may ask for
    default_max_tokens: int = 512
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 300.0


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
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param=None, code=None):
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_body(message: str, type_: str, param=None, code=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def create_app(config: ServerConfig) -> FastAPI:
    app = FastAPI(title="Seedbed", version="0.1.0", description="OpenAI-compatible API for models grown with Seedbed.")
    app.state.config = config
    metrics = ServerMetrics(config.engines)
    app.state.metrics = metrics

    @app.exception_handler(APIError)
    async def api_error(request: HTTPRequest, e: APIError):
        metrics.errors.labels(request.url.path, e.type).inc()
        return JSONResponse(error_body(e.message, e.type, e.param, e.code), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: HTTPRequest, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        metrics.errors.labels(request.url.path, "invalid_request_error").inc()
        return JSONResponse(error_body(f"{param or 'body'}: {first['msg']}", "invalid_request_error", param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: HTTPRequest, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), kind), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: HTTPRequest, e: Exception):
        log.exception("internal error on %s", request.url.path)  # the traceback stays in our log, not the reply
        metrics.errors.labels(request.url.path, "server_error").inc()
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)

    @app.middleware("http")
    async def guard(request: HTTPRequest, call_next):
        started = time.perf_counter()
        path = request.url.path
        if path.startswith("/v1/"):
            if config.api_keys and not _authorised(request, config.api_keys):
                metrics.requests.labels(path, "401").inc()
                return JSONResponse(error_body("invalid or missing API key (Authorization: Bearer KEY)",
                                               "invalid_request_error", code="invalid_api_key"), status_code=401)
            size = request.headers.get("content-length")
            if size is not None and (not size.isdigit() or int(size) > config.limits.max_body_bytes):
                metrics.requests.labels(path, "413").inc()
                return JSONResponse(error_body(f"request body over {config.limits.max_body_bytes} bytes",
                                               "invalid_request_error", code="body_too_large"), status_code=413)
        response = await call_next(request)
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": sorted(config.engines)}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": e.created, "owned_by": "seedbed"}
            for name, e in config.engines.items()
        ]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: HTTPRequest):
        engine = _engine(config, body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise APIError(400, "only one prompt per request is supported", param="prompt")
        ids = engine.tokenizer(prompts[0], add_special_tokens=True)["input_ids"]
        request = _request(config, engine, ids, body, body.max_tokens)
        prefix = prompts[0] if body.echo else ""
        if body.stream:
            return _sse(_text_stream(engine, request, body, metrics, prefix), http)
        text = await _complete(engine, request, config, http)
        _count(metrics, engine, request)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": body.model,
            "choices": [{"index": 0, "text": prefix + text, "logprobs": None, "finish_reason": _finish(request)}],
            "usage": _usage(request),
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, http: HTTPRequest):
        from seedbed.serve.chat_completions import chat_completion

        return await chat_completion(config, body, http, metrics)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest):
        from seedbed.serve.embeddings import embed_response

        return await embed_response(body)

    def openapi() -> dict:
        # The schema names the models this server actually serves, so clients and fuzzers see what is valid.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for name in ("ChatCompletionRequest", "CompletionRequest"):
                schema["components"]["schemas"][name]["properties"]["model"]["enum"] = sorted(config.engines)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def _authorised(request: HTTPRequest, keys: list[str]) -> bool:
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    # Compare against every key, always, in constant time: no timing signal about which prefix matched.
    return any([hmac.compare_digest(token.encode(), k.encode()) for k in keys]) and bool(token)


def _engine(config: ServerConfig, name: str) -> Engine:
    if name not in config.engines:
        raise APIError(404, f"model '{name}' is not served here; GET /v1/models lists them", param="model",
                       code="model_not_found")
    return config.engines[name]


def _request(config: ServerConfig, engine: Engine, ids: list[int], body, max_tokens: int | None, **extra) -> Request:
    limits = config.limits
    if not ids:  # an empty prompt: start from BOS, as a model's own generation would
        if engine.tokenizer.bos_token_id is None:
            raise APIError(400, "the prompt is empty", param="prompt")
        ids = [engine.tokenizer.bos_token_id]
    if len(ids) > limits.max_prompt_tokens:
        raise APIError(400, f"the prompt has {len(ids)} tokens; this server takes at most {limits.max_prompt_tokens}",
                       param="messages" if hasattr(body, "messages") else "prompt", code="context_length_exceeded")
    max_tokens = max_tokens or min(limits.default_max_tokens, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                       param="max_tokens")
    return Request(ids, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                   stop=body.stop_list(), seed=body.seed, **extra)


async def _complete(engine: Engine, request: Request, config: ServerConfig, http: HTTPRequest | None) -> str:
    """The whole completion, cancelled if the client disconnects or the request outlives its time limit."""
    task = asyncio.ensure_future(engine.complete(request))
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
                raise APIError(408, f"generation took over {config.limits.request_timeout_s:.0f} s; ask for "
                               "fewer max_tokens", "timeout_error", code="timeout")
        return task.result()
    finally:
        if not task.done():
            task.cancel()


def _finish(request: Request) -> str:
    return "length" if request.finish_reason == "length" else "stop"


def _usage(request: Request) -> dict:
    n_in, n_out = len(request.prompt_ids), request.completion_tokens
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def _count(metrics: ServerMetrics, engine: Engine, request: Request) -> None:
    metrics.tokens_in.labels(engine.name).inc(len(request.prompt_ids))
    metrics.tokens_out.labels(engine.name).inc(request.completion_tokens)


def sse_event(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def _sse(events, http: HTTPRequest) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _text_stream(engine: Engine, request: Request, body: CompletionRequest, metrics, prefix: str):
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(text: str, finish=None) -> dict:
        return {"id": cid, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    if prefix:
        yield sse_event(chunk(prefix))
    async for piece in engine.stream(request):
        yield sse_event(chunk(piece))
    yield sse_event(chunk("", _finish(request)))
    if body.stream_options and body.stream_options.include_usage:
        yield sse_event({**chunk(""), "choices": [], "usage": _usage(request)})
    _count(metrics, engine, request)
    yield sse_event("[DONE]")
