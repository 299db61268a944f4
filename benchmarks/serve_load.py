"""Load test of `seedbed serve`: many concurrent streaming clients, batching on and off, in one run.

    python benchmarks/serve_load.py                         # Gemma 3 270M on this CPU
    python benchmarks/serve_load.py --model runs/demo/model --clients 1 4 16 64 --tokens 32
    python benchmarks/serve_load.py --model runs/q4/model.gguf --engine llama.cpp --baseline llama-cpp-python \
        --shared-prefix 6      # q4_k_m through our API against llama-cpp-python's own server, same GGUF

`--baseline llama-server` runs llama.cpp's `llama-server` (on PATH) on the same GGUF with `--parallel` slots;
`--baseline llama-cpp-python` runs `python -m llama_cpp.server`. `--shared-prefix K` starts every request with
the same K few-shot examples (what prefix caching is for). A 429 (queue full) is counted apart
from failures.

For each batching setting the server is started in a child process on a localhost port (batching off is
`--max-batch 1`), then for each client count N, N streaming chat requests run concurrently with the official
`openai` async client, `--rounds` times. Reported: aggregate completion tokens/s, p50/p99 request latency, p50
time to first token, failed requests. The ratio that matters: tokens/s at 16 clients against 1, batching on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
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


def few_shot_prefix(k: int) -> str:
    """`k` worked examples that begin every request's user message (empty for k = 0). In the user turn, not a
    system message: Gemma has no system role (its template folds one into the user turn; llama-cpp-python's
    `gemma` chat format drops it), so this way every server sees the same tokens."""
    if not k:
        return ""
    shots = "\n\n".join(f"Q: What is {a} plus {b}?\nA: {a} plus {b} is {a + b}." for a, b in
                         [(3 * i + 1, 7 * i + 2) for i in range(k)])
    return "Answer briefly, as in these examples.\n\n" + shots + "\n\n"


async def one_request(client, model: str, prompt: str, tokens: int, prefix: str) -> dict:
    import openai

    started = time.perf_counter()
    first, completion, pieces = None, 0, 0
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prefix + prompt}], max_tokens=tokens, temperature=0,
            stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                pieces += 1
            if chunk.usage:
                completion = chunk.usage.completion_tokens
        # llama-cpp-python's server sends no usage chunk; it streams one token a chunk, so count those
        completion = completion or pieces
    except openai.RateLimitError:  # the queue was full: counted apart from failures
        return {"ok": False, "rate_limited": True, "error": "429"}
    except Exception as e:  # counted, never hidden
        return {"ok": False, "error": repr(e)[:200]}
    return {"ok": True, "latency": time.perf_counter() - started, "ttft": first or 0.0, "tokens": completion}


async def load(base_url: str, model: str, clients: int, rounds: int, tokens: int, prefix: str) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
    results, started = [], time.perf_counter()
    for _ in range(rounds):
        results += await asyncio.gather(*(one_request(client, model, PROMPTS[i % len(PROMPTS)], tokens, prefix)
                                          for i in range(clients)))
    wall = time.perf_counter() - started
    await client.close()
    ok = [r for r in results if r["ok"]]
    return {
        "clients": clients, "requests": len(results),
        "rate_limited": sum(1 for r in results if r.get("rate_limited")),
        "failed": sum(1 for r in results if not r["ok"] and not r.get("rate_limited")),
        "tokens_per_s": sum(r["tokens"] for r in ok) / wall,
        "p50_latency_s": percentile([r["latency"] for r in ok], 50) if ok else None,
        "p99_latency_s": percentile([r["latency"] for r in ok], 99) if ok else None,
        "p50_ttft_s": statistics.median(r["ttft"] for r in ok) if ok else None,
        "errors": sorted({r["error"] for r in results if not r["ok"]})[:3],
    }


def serve(model: str, port: int, max_batch: int, engine: str = "auto", baseline: str | None = None,
          chat_format: str | None = None) -> subprocess.Popen:
    """Start a server on `port`: `seedbed serve`, or with `baseline` llama.cpp's own on the same GGUF."""
    if baseline == "llama-cpp-python":
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--model_alias", "bench",
               "--port", str(port), "--n_ctx", "8192", "--api_key", "bench",
               # the threads our llama.cpp engine uses (every core): its default is half of them
               "--n_threads", str(os.cpu_count()), "--n_threads_batch", str(os.cpu_count()),
               # its default lets each new request cut off the one streaming: concurrent clients would get
               # truncated answers instead of waiting their turn
               "--interrupt_requests", "False",
               *(["--chat_format", chat_format] if chat_format else [])]
    elif baseline == "llama-server":
        cmd = ["llama-server", "-m", model, "--port", str(port), "--alias", "bench", "--parallel", str(max_batch),
               "-c", str(2048 * max_batch), "--api-key", "bench"]
    else:
        cmd = [sys.executable, "-m", "seedbed.cli", "serve", "--model", f"bench={model}", "--port", str(port),
               "--api-key", "bench", "--max-batch", str(max_batch), "--batch-window-ms", "20", "--engine", engine]
    # stderr to a file, not a pipe nobody reads while it runs: llama.cpp's load log fills a pipe and blocks the server
    log = tempfile.NamedTemporaryFile("w+", prefix="serve-load-", suffix=".log", delete=False)
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1,
                         headers={"Authorization": "Bearer bench"}).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
        if process.poll() is not None:
            sys.exit(f"server exited: {Path(log.name).read_text()[-2000:]}")
    sys.exit("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per request")
    parser.add_argument("--batch", type=int, default=64, help="max batch with batching on")
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "llama.cpp"])
    parser.add_argument("--baseline", choices=["llama-cpp-python", "llama-server"],
                        help="also run llama.cpp's own server on the same GGUF (--model must be a .gguf file)")
    parser.add_argument("--chat-format", help="llama-cpp-python's chat format for the baseline (gemma: the GGUF's own "
                        "Jinja template makes it end every Gemma 3 answer at once, with no content)")
    parser.add_argument("--no-unbatched", action="store_true", help="skip the --max-batch 1 run")
    parser.add_argument("--shared-prefix", type=int, default=0, help="few-shot examples at the start of every request")
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()

    from seedbed.models import resolve

    if args.engine != "llama.cpp":
        resolve(args.model)  # convert a GGUF once, before any server starts
    prefix = few_shot_prefix(args.shared_prefix)
    runs = [("on", args.batch, None)] + ([] if args.no_unbatched else [("off", 1, None)])
    runs += [(args.baseline, args.batch, args.baseline)] if args.baseline else []
    rows = []
    for label, max_batch, baseline in runs:
        port = free_port()
        server = serve(args.model, port, max_batch, args.engine, baseline, args.chat_format)
        try:
            for clients in args.clients:
                row = {"batching": label, **asyncio.run(load(f"http://127.0.0.1:{port}/v1", "bench", clients,
                                                             args.rounds, args.tokens, prefix))}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    from seedbed.train.lineage import hardware

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "hardware": hardware(), "rows": rows}, indent=2))
    print("\n| server | clients | requests | failed | 429 | tokens/s | p50 latency s | p99 latency s | p50 TTFT s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batching']} | {r['clients']} | {r['requests']} | {r['failed']} | {r['rate_limited']} | "
              f"{r['tokens_per_s']:.1f} | "
              f"{r['p50_latency_s']:.2f} | {r['p99_latency_s']:.2f} | {r['p50_ttft_s']:.2f} |")
    on = {r["clients"]: r["tokens_per_s"] for r in rows if r["batching"] == "on"}
    if 1 in on and 16 in on:
        print(f"batching on: tokens/s at 16 clients / 1 client = {on[16] / on[1]:.2f}x")


if __name__ == "__main__":
    main()
