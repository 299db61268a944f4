"""The OpenAI-compatible HTTP API, assembled: API keys, body-size limit, error handlers, metrics and the routes.

    seedbed serve --model tuned=runs/demo/model --api-key sk-local

Every invalid input is answered 4xx with `{"error": {"message", "type", "param", "code"}}`; prompts and
completions are never logged unless `log_content` is set. The endpoints themselves live in completions.py,
chat_completions.py and embeddings.py; what they share, in protocol.py.
"""

from __future__ import annotations

import hmac
import logging
import time

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from seedbed.version import __version__
from seedbed.serve.chat_completions import chat_completion
from seedbed.serve.completions import text_completion
from seedbed.serve.embeddings import MODEL_NAMES, embed_response
from seedbed.serve.metrics import ServerMetrics
from seedbed.serve.engine import QueueFull
from seedbed.serve.protocol import APIError, Limits, ServerConfig, error_body, queue_full
from seedbed.serve.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

log = logging.getLogger("seedbed.serve")

__all__ = ["Limits", "ServerConfig", "create_app"]


def create_app(config: ServerConfig) -> FastAPI:
    app = FastAPI(title="Seedbed", version=__version__, description="OpenAI-compatible API for models grown with Seedbed.")
    app.state.config = config
    metrics = ServerMetrics(config.engines)
    app.state.metrics = metrics

    @app.exception_handler(APIError)
    async def api_error(request: HTTPRequest, e: APIError):
        metrics.errors.labels(endpoint_of(app, request.scope), e.type).inc()
        return JSONResponse(error_body(e.message, e.type, e.param, e.code), status_code=e.status, headers=e.headers)

    @app.exception_handler(QueueFull)
    async def queue_is_full(request: HTTPRequest, e: QueueFull):  # filled up between the check and the queueing
        return await api_error(request, queue_full(e))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: HTTPRequest, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        metrics.errors.labels(endpoint_of(app, request.scope), "invalid_request_error").inc()
        message = first["msg"]
        if first.get("type") == "extra_forbidden":  # a field we do not support: said, never silently ignored
            message = "this server does not support this field; remove it (GET /openapi.json lists the fields)"
        return JSONResponse(error_body(f"{param or 'body'}: {message}", "invalid_request_error", param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: HTTPRequest, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), kind), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: HTTPRequest, e: Exception):
        log.exception("internal error on %s", request.url.path)  # the traceback stays in our log, not the reply
        metrics.errors.labels(endpoint_of(app, request.scope), "server_error").inc()
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)

    app.add_middleware(BodyLimit, limit=config.limits.max_body_bytes)  # inside `guard`: strangers' bodies go unread

    @app.middleware("http")
    async def guard(request: HTTPRequest, call_next):
        started = time.perf_counter()
        path = request.url.path
        endpoint = endpoint_of(app, request.scope)  # metrics' label: a route, never a URL a stranger invented
        if path.startswith("/v1/"):
            if config.api_keys and not authorised(request, config.api_keys):
                metrics.requests.labels(endpoint, "401").inc()
                return JSONResponse(error_body("invalid or missing API key (Authorization: Bearer KEY)",
                                               "invalid_request_error", code="invalid_api_key"), status_code=401)
            size = request.headers.get("content-length")
            if size is not None and (not size.isdigit() or int(size) > config.limits.max_body_bytes):
                metrics.requests.labels(endpoint, "413").inc()
                return JSONResponse(error_body(f"request body over {config.limits.max_body_bytes} bytes",
                                               "invalid_request_error", code="body_too_large"), status_code=413)
        response = await call_next(request)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
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
        return await text_completion(config, body, http, metrics)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, http: HTTPRequest):
        return await chat_completion(config, body, http, metrics)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest):
        return await embed_response(config, body)

    def openapi() -> dict:
        # The schema names the models this server actually serves, so clients and fuzzers see what is valid.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for name in ("ChatCompletionRequest", "CompletionRequest"):
                schema["components"]["schemas"][name]["properties"]["model"]["enum"] = sorted(config.engines)
            schema["components"]["schemas"]["EmbeddingRequest"]["properties"]["model"]["enum"] = sorted(MODEL_NAMES)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def endpoint_of(app: FastAPI, scope) -> str:
    """The route template a request is for (`/v1/chat/completions`), or "unmatched": labelling metrics by the raw
    path gave every invented URL a series of its own (300 requests for /nope-<i>, 5,100 lines of /metrics)."""
    route = next((r for r in app.router.routes if r.matches(scope)[0] != Match.NONE), None)
    return getattr(route, "path", "unmatched")


class BodyLimit:
    """ASGI middleware: an API request's body is counted as its bytes arrive and refused (413) past `limit`.

    The Content-Length check in `guard` refuses early, but a chunked body (Transfer-Encoding: chunked) has no
    such header: without this a 50 MB chunked body was read whole, parsed and tokenized before any limit applied.
    The body (at most `limit` bytes) is then handed on as one message; later messages (a client's disconnect)
    pass through as they come.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before its body was whole
                return
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.limit:
                response = JSONResponse(error_body(f"request body over {self.limit} bytes", "invalid_request_error",
                                                   code="body_too_large"), status_code=413)
                return await response(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, handed = b"".join(parts), False

        async def replay():
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def authorised(request: HTTPRequest, keys: list[str]) -> bool:
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    # Compare against every key, always, in constant time: no timing signal about which prefix matched.
    return any([hmac.compare_digest(token.encode(), k.encode()) for k in keys]) and bool(token)
