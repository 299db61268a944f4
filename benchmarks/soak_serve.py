"""Soak and fault test of `seedbed serve`: 64 streaming clients mixed with the faults of issue 13, on loopback.

    python benchmarks/soak_serve.py --seconds 120 --clients 64

Serves a freshly built tiny Llama (`seedbed.tiny`: the server's own code paths, not a real model's speed) with
`seedbed serve --api-key` as its own process on a free 127.0.0.1 port, then runs `--clients` clients for
`--seconds`. Each client loops over a weighted draw of:

- a well-formed streamed chat completion (most draws), read to `[DONE]`;
- a client that disconnects after its first streamed piece;
- a malformed body (not JSON, wrong types, a bad tool-call history, temperature 1e-40);
- a huge stop (300,000 characters) and too many stops;
- an oversize upload: a 5 MB body with Content-Length, and one sent chunked (no Content-Length);
- 50,000 embedding inputs, and an invented URL.

It prints every kind's status counts, the server's RSS at the start, its peak and at the end (sampled every
0.5 s from /proc), and exits 1 if any response was a 5xx or a well-formed request was not answered 200 (or 429).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = "soak"
CHAT = [{"role": "user", "content": "What is two plus three?"}]
KINDS = {  # kind -> weight
    "stream": 60, "disconnect": 10, "malformed": 10, "huge_stop": 5, "oversize": 5, "chunked_oversize": 4,
    "embeddings_flood": 2, "invented_url": 4,
}
MALFORMED = [
    b"{not json",
    json.dumps({"model": "tiny", "messages": "hi"}).encode(),
    json.dumps({"model": "tiny", "messages": CHAT, "temperature": 1e-40, "max_tokens": 4}).encode(),  # answered
    json.dumps({"model": "tiny", "messages": [*CHAT, {"role": "assistant", "tool_calls": [{"function": 7}]}],
                "tools": [{"type": "function", "function": {"name": "f"}}]}).encode(),
    json.dumps({"model": "tiny", "messages": CHAT, "max_tokens": -1}).encode(),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(client, kind: str, rng: random.Random) -> str:
    """Run one draw of `kind`; the status (or what went wrong) as a string."""
    import httpx

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    if kind in ("stream", "disconnect"):
        body = {"model": "tiny", "messages": CHAT, "max_tokens": 24, "stream": True,
                "temperature": rng.choice([0, 0.7, 1.0])}
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                return str(r.status_code)
            async for line in r.aiter_lines():
                if kind == "disconnect" and line.startswith("data: {") and '"content": "' in line:
                    return "200-left"  # leaves mid-stream: the context manager closes the connection
                if line == "data: [DONE]":
                    return "200"
            return "200-truncated"
    if kind == "malformed":
        r = await client.post("/v1/chat/completions", content=rng.choice(MALFORMED), headers=headers)
        return str(r.status_code)
    if kind == "huge_stop":
        stop = rng.choice([["a" * 300_000], ["a", "b", "c", "d", "e"]])
        r = await client.post("/v1/chat/completions", headers=headers,
                              json={"model": "tiny", "messages": CHAT, "max_tokens": 16, "stop": stop})
        return str(r.status_code)
    if kind == "oversize":
        r = await client.post("/v1/chat/completions", content=b"x" * 5_000_000, headers=headers)
        return str(r.status_code)
    if kind == "chunked_oversize":
        async def pieces():
            for _ in range(80):  # 5 MB in 64 kB pieces, no Content-Length
                yield b"x" * 65_536
        try:
            r = await client.post("/v1/chat/completions", content=pieces(), headers=headers)
            return str(r.status_code)
        except httpx.HTTPError:  # the server answered 413 and closed while the rest was still being sent
            return "413-closed"
    if kind == "embeddings_flood":
        r = await client.post("/v1/embeddings", headers=headers,
                              json={"model": "all-MiniLM-L6-v2", "input": ["a"] * 50_000})
        return str(r.status_code)
    r = await client.get(f"/v1/nope-{rng.randrange(10**9)}", headers=headers)
    return str(r.status_code)


async def soak(base: str, clients: int, seconds: float, pid: int) -> tuple[dict, list[float]]:
    import httpx

    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    rss, stop_at = [rss_mb(pid)], time.monotonic() + seconds

    async def client_loop(i: int) -> None:
        rng = random.Random(i)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            while time.monotonic() < stop_at:
                kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
                try:
                    status = await one(client, kind, rng)
                except httpx.HTTPError as e:
                    status = f"client-error:{type(e).__name__}"
                counts[kind][status] += 1

    async def sampler() -> None:
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.5)
            rss.append(rss_mb(pid))

    await asyncio.gather(sampler(), *(client_loop(i) for i in range(clients)))
    await asyncio.sleep(2)
    rss.append(rss_mb(pid))
    return counts, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()

    import httpx

    from seedbed.tiny import build_tiny_llama

    model = build_tiny_llama(Path(tempfile.mkdtemp()) / "tiny")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "seedbed.cli", "serve", "--model", f"tiny={model}",
                               "--api-key", KEY, "--port", str(port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(480):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
            if server.poll() is not None:
                sys.exit(server.stderr.read())
        # warm: the embedder loads on first use; count its memory in the baseline, not as growth
        httpx.post(base + "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "warm"},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
        started = time.monotonic()
        counts, rss = asyncio.run(soak(base, args.clients, args.seconds, server.pid))
        elapsed = time.monotonic() - started
        alive = server.poll() is None and httpx.get(base + "/health", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)

    total = sum(sum(c.values()) for c in counts.values())
    print(f"{args.clients} clients, {elapsed:.0f} s, {total} requests; server alive after: {alive}")
    print(f"server RSS MB: start {rss[0]:.0f}, peak {max(rss):.0f}, end {rss[-1]:.0f}")
    for kind, c in sorted(counts.items()):
        print(f"  {kind:18s} " + ", ".join(f"{status}: {n}" for status, n in sorted(c.items())))
    errors = sum(n for c in counts.values() for status, n in c.items() if status.startswith("5"))
    unanswered = sum(n for status, n in counts["stream"].items() if status not in ("200", "429"))
    print(f"5xx: {errors}; well-formed streams not answered 200/429: {unanswered}")
    sys.exit(0 if alive and errors == 0 and unanswered == 0 else 1)


if __name__ == "__main__":
    main()
