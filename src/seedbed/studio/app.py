"""The studio's web app: assembly of the pages' routers, the token check, the read-only file view and the script.

    app = build_app(Studio(data_dir, token="s3cret"))   # uvicorn serves it (seedbed.studio.server)

With a token, every request must carry it: `Authorization: Bearer TOKEN`, or a cookie the page sets after the
first visit with `?token=TOKEN` (so links and the page's script keep working).
"""

from __future__ import annotations

import hmac
import mimetypes
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from seedbed.studio import compare_page, datasets_page, jobs_page, models_page, playground_page
from seedbed.studio.jobs import Scheduler

COOKIE = "seedbed_studio_token"
MAX_UPLOAD_BYTES = 200 * 2**20  # a dataset upload; larger files: point at them on disk instead


@dataclass
class Studio:
    """What every page shares: the data directory, the scheduler over the job store, the token and limits."""

    data_dir: Path
    token: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    scheduler: Scheduler = field(init=False)
    stop: threading.Event = field(default_factory=threading.Event)
    models: dict = field(default_factory=dict)  # loaded playground backends by model path

    def __post_init__(self):
        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.scheduler = Scheduler(self.data_dir)


def build_app(studio: Studio, schedule: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        if schedule:  # the queue moves while the studio runs; jobs already running go on regardless
            studio.scheduler.run_in_background(studio.stop)
        yield
        studio.stop.set()

    app = FastAPI(title="Seedbed Studio", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.studio = studio

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if studio.token is None:
            return await call_next(request)
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:]
        if not hmac.compare_digest(given.encode(), studio.token.encode()):
            return PlainTextResponse("Seedbed Studio needs its token: open the link with ?token=... once.", 401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, studio.token, httponly=True, samesite="strict")
        return response

    @app.get("/")
    def home():
        return RedirectResponse("/jobs")

    @app.get("/static/studio.js")
    def script():
        text = (files("seedbed.studio") / "studio.js").read_text()
        return Response(text, media_type="text/javascript")

    @app.get("/files/{path:path}")
    def data_file(path: str):
        """A file the studio's jobs wrote (a datasheet, a model card), read-only, never outside the data dir."""
        target = (studio.data_dir / path).resolve()
        if studio.data_dir not in target.parents or not target.is_file():
            return JSONResponse({"error": f"no file {path} in the data directory"}, status_code=404)
        kind = mimetypes.guess_type(target.name)[0] or "text/plain"
        if target.suffix in (".md", ".jsonl", ".yaml", ".json", ".txt"):
            kind = "text/plain; charset=utf-8"
        return Response(target.read_bytes(), media_type=kind)

    for module in (jobs_page, datasets_page, compare_page, models_page, playground_page):
        app.include_router(module.router)
    return app
