"""`seedbed studio --data-dir DIR`: the studio on localhost, or on another address only with a token.

    seedbed studio --data-dir ~/seedbed-studio                      # http://127.0.0.1:7860
    SEEDBED_STUDIO_TOKEN=s3cret seedbed studio --host 0.0.0.0 ...   # refuses to start without the token
"""

from __future__ import annotations

import ipaddress

from seedbed.errors import SeedbedError


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


def run_studio(data_dir: str, host: str = "127.0.0.1", port: int = 7860, token: str | None = None,
               max_upload_mb: int = 200, on_ready=None) -> None:
    """Serve the studio until interrupted; its jobs keep running after it stops."""
    check_exposure(host, token)
    import uvicorn

    from seedbed.studio.app import Studio, build_app

    studio = Studio(data_dir, token=token or None, max_upload_bytes=max_upload_mb * 2**20)
    if on_ready:
        on_ready(f"http://{host}:{port}/" + (f"?token={token}" if token else ""))
    uvicorn.run(build_app(studio), host=host, port=port, log_level="warning")
