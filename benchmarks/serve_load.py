"""Load test of `seedbed serve`: many concurrent streaming clients, batching on and off, in one run.

    python benchmarks/serve_load.py                         # Gemma 3 270M on this CPU
    python benchmarks/serve_load.py --model runs/demo/model --clients 1 4 16 64 --tokens 32

For each batching setting the server is started in a child process on a localhost port (batching off is
`--max-batch 1`), then for each client count N, N streaming chat requests run concurrently with the official
`openai` async client, `--rounds` times. Reported: aggregate completion tokens/s, p50/p99 request latency, p50
time to first token, failed requests. The ratio that matters: tokens/s at 16 clients against 1, batching on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain why the sky is blue.",
    "Give three tips for learning a language.",
    "Describe a busy market in the morning.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def one_request(client, model: str, prompt: str, tokens: int) -> dict:
    started = time.perf_counter()
    first, completion = None, 0
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0,
            stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
            if chunk.usage:
                completion = chunk.usage.completion_tokens
    except Exception as e:  # counted, never hidden
        return {"ok": False, "error": repr(e)[:200]}
    return {"ok": True, "latency": time.perf_counter() - started, "ttft": first or 0.0, "tokens": completion}


async def load(base_url: str, model: str, clients: int, rounds: int, tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
    results, started = [], time.perf_counter()
    for _ in range(rounds):
        results += await asyncio.gather(*(one_request(client, model, PROMPTS[i % len(PROMPTS)], tokens)
                                          for i in range(clients)))
    wall = time.perf_counter() - started
    await client.close()
    ok = [r for r in results if r["ok"]]
    return {
        "clients": clients, "requests": len(results), "failed": len(results) - len(ok),
        "tokens_per_s": sum(r["tokens"] for r in ok) / wall,
        "p50_latency_s": percentile([r["latency"] for r in ok], 50) if ok else None,
        "p99_latency_s": percentile([r["latency"] for r in ok], 99) if ok else None,
        "p50_ttft_s": statistics.median(r["ttft"] for r in ok) if ok else None,
        "errors": sorted({r["error"] for r in results if not r["ok"]})[:3],
    }


def serve(model: str, port: int, max_batch: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "seedbed.cli", "serve", "--model", f"bench={model}", "--port", str(port),
           "--api-key", "bench", "--max-batch", str(max_batch), "--batch-window-ms", "20"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
        if process.poll() is not None:
            sys.exit(f"server exited: {process.stderr.read()[-2000:]}")
    sys.exit("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per request")
    parser.add_argument("--batch", type=int, default=64, help="max batch with batching on")
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()

    from seedbed.models import resolve

    resolve(args.model)  # convert a GGUF once, before any server starts
    rows = []
    for label, max_batch in (("on", args.batch), ("off", 1)):
        port = free_port()
        server = serve(args.model, port, max_batch)
        try:
            for clients in args.clients:
                row = {"batching": label, **asyncio.run(load(f"http://127.0.0.1:{port}/v1", "bench", clients,
                                                             args.rounds, args.tokens))}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    from seedbed.train.lineage import hardware

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "hardware": hardware(), "rows": rows}, indent=2))
    print("\n| batching | clients | requests | failed | tokens/s | p50 latency s | p99 latency s | p50 TTFT s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batching']} | {r['clients']} | {r['requests']} | {r['failed']} | {r['tokens_per_s']:.1f} | "
              f"{r['p50_latency_s']:.2f} | {r['p99_latency_s']:.2f} | {r['p50_ttft_s']:.2f} |")
    on = {r["clients"]: r["tokens_per_s"] for r in rows if r["batching"] == "on"}
    if 1 in on and 16 in on:
        print(f"batching on: tokens/s at 16 clients / 1 client = {on[16] / on[1]:.2f}x")


if __name__ == "__main__":
    main()
