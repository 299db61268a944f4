"""lm-evaluation-harness on one model two ways: in process (`seedbed eval --lm-eval`) and with lm-eval's own CLI
(`local-completions`) against `seedbed serve`; the two accuracies should agree.

    PYTHONPATH=src python benchmarks/lm_eval_both_ways.py --limit 100          # Gemma 3 270M base
    PYTHONPATH=src python benchmarks/lm_eval_both_ways.py --model runs/demo/model --limit 200

Each route runs as its own command (as the README shows them), timed from start to finish (model loading
included). Prints the commands, times and both routes' acc / acc_norm as JSON.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(command: list[str]) -> float:
    print("+", " ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    return time.monotonic() - started


def metrics(results: dict, task: str) -> dict:
    found = results["results"][task]
    return {m: found[f"{m},none"] for m in ("acc", "acc_norm")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--task", default="seedbed_csqa")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="runs/lm-eval-both-ways")
    args = parser.parse_args()
    out = Path(args.out)
    seedbed = [sys.executable, "-m", "seedbed.cli"]

    in_process = timed([*seedbed, "eval", "--models", f"base={args.model}", "--lm-eval", args.task, "--limit",
                        str(args.limit), "--batch-size", str(args.batch_size), "--out", str(out / "in-process"),
                        "--quiet"])
    ours = json.loads((out / "in-process" / "results.json").read_text())["harness"]
    ours = {h["metric"]: h["value"] for h in ours if h["task"] == args.task}

    from seedbed.models import resolve

    tokenizer = resolve(args.model)  # the HF directory the server loads (the embedded default: its conversion)
    port = free_port()
    server = subprocess.Popen([*seedbed, "serve", "--model", f"base={args.model}", "--port", str(port),
                               "--max-batch", str(args.batch_size)])
    try:
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() - started > 600:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        served_s = timed([
            sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args",
            f"base_url=http://127.0.0.1:{port}/v1/completions,model=base,tokenizer={tokenizer},"
            "tokenizer_backend=huggingface,tokenized_requests=True,add_bos_token=True,max_retries=1",
            "--batch_size", str(args.batch_size), "--tasks", args.task,
            "--include_path", str(out / "in-process" / "lm_eval_tasks"), "--limit", str(args.limit),
            "--output_path", str(out / "served")])
    finally:
        server.terminate()
        server.wait(timeout=60)
    result_file = max((out / "served").rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    theirs = metrics(json.loads(result_file.read_text()), args.task)
    print(json.dumps({"model": args.model, "task": args.task, "limit": args.limit,
                      "in_process": {"seconds": round(in_process, 1), **ours},
                      "served": {"seconds_lm_eval": round(served_s, 1), **theirs},
                      "agree_within_half_point": all(abs(ours[m] - theirs[m]) <= 0.005 for m in theirs)}, indent=2))


if __name__ == "__main__":
    main()
