"""`seedbed studio --data-dir DIR`: the studio on localhost, or on another address only with a token; one studio
per data directory.

    seedbed studio --data-dir ~/seedbed-studio                      # http://127.0.0.1:7860
    SEEDBED_STUDIO_TOKEN=s3cret seedbed studio --host 0.0.0.0 ...   # refuses to start without the token

Two studios on one data directory would be two schedulers over one SQLite job store, each starting queued jobs
and marking the other's running ones as failed. So a studio holds the directory's `studio.lock` (filelock: an OS
lock, flock on Linux) while it runs, and a second one refuses to start, naming the first (its pid and URL, from
`studio.owner.json`). The OS drops the lock when its process dies, even by SIGKILL, so a stale lock file blocks
nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from seedbed.atomic import atomic_write_text
from seedbed.errors import SeedbedError

LOCK_FILE, OWNER_FILE = "studio.lock", "studio.owner.json"  # the owner is apart: filelock truncates its lock file


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_exposure(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise SeedbedError(f"host: {host} is reachable from other machines; give a token (--token or the "
                           f"SEEDBED_STUDIO_TOKEN environment variable) or listen on 127.0.0.1")


@contextmanager
def one_studio(data_dir: Path, url: str):
    """Hold `data_dir`'s studio lock for the `with` block, or raise SeedbedError naming the studio that holds it.

    >>> with one_studio(Path("studio"), "http://127.0.0.1:7860/"):  # doctest: +SKIP
    ...     serve()
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(data_dir / LOCK_FILE, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            owner = json.loads((data_dir / OWNER_FILE).read_text())
            who = f"pid {owner['pid']}, {owner['url']}"
        except (OSError, ValueError, KeyError):  # it is still starting: locked, its owner file not yet written
            who = "it is starting"
        raise SeedbedError(f"data-dir: a studio already runs on {data_dir} ({who}); open that one, or stop it "
                           "before starting another (two would run each other's queued jobs)") from None
    try:
        atomic_write_text(data_dir / OWNER_FILE, json.dumps({"pid": os.getpid(), "url": url}) + "\n")
        yield
    finally:
        lock.release()


def run_studio(data_dir: str, host: str = "127.0.0.1", port: int = 7860, token: str | None = None,
               max_upload_mb: int = 200, on_ready=None) -> None:
    """Serve the studio until interrupted; its jobs keep running after it stops."""
    check_exposure(host, token)
    import uvicorn

    from seedbed.studio.app import Studio, build_app

    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    with one_studio(Path(data_dir).expanduser().resolve(), url):  # the token stays out of the owner file
        studio = Studio(data_dir, token=token or None, max_upload_bytes=max_upload_mb * 2**20)
        if on_ready:
            on_ready(url + (f"?token={token}" if token else ""))
        uvicorn.run(build_app(studio), host=host, port=port, log_level="warning")
