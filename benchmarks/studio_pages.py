"""Seedbed Studio page loads with 100 runs in the store (issue 15: "page loads under 1 s with 100 runs").

    python benchmarks/studio_pages.py                 # 100 finished fine-tunes; 20 loads per page
    python benchmarks/studio_pages.py --runs 1000

Builds a data directory with N finished fine-tune jobs, each with a 200-point progress log and a registered model
(recipe.yaml, config.json, metrics.json, a model card), serves the studio with uvicorn on a localhost port, and
times full HTTP GETs of each page (server-side rendering included: the browser's own layout is not counted).
Baseline in the same process: the same pages over an empty store. Reports the median and the worst load per page
and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))

PAGES = ["/jobs", "/jobs/{last}", "/jobs/{last}/live", "/models", "/playground", "/datasets"]


def fill(data_dir: Path, runs: int) -> int:
    """N finished fine-tune jobs with their progress logs and model directories; returns the last job's id."""
    from seedbed.recipe import save_recipe
    from seedbed.studio.jobs import Scheduler
    from seedbed.studio.verbs import build_recipe

    jobs = Scheduler(data_dir)
    last = 0
    for i in range(runs):
        out = data_dir / "runs" / f"ft-{i}"
        out.mkdir(parents=True)
        recipe = build_recipe("finetune", {"data": ["train.jsonl"], "out": f"runs/ft-{i}", "max_steps": 400}, data_dir)
        last = jobs.submit("finetune", recipe)
        jobs.store.mark_running(last, 0)
        jobs.store.mark_finished(last, "done", 0)
        lines = [{"step": s * 2, "max_steps": 400, "loss": 3.0 / (1 + s / 20), "elapsed_s": s, "tokens_per_s": 900.0}
                 for s in range(1, 201)]
        lines += [{"step": s * 40, "max_steps": 400, "eval_loss": 3.2 / (1 + s), "elapsed_s": s} for s in range(11)]
        (out / "progress.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        save_recipe(recipe, out / "recipe.yaml", "finetune")  # the whole resolved recipe, as finetune writes it
        (out / "config.json").write_text("{}")
        (out / "README.md").write_text("# card\n" * 200)
        (out / "metrics.json").write_text(json.dumps({
            "data_files": [{"path": "train.jsonl", "sha256": "0" * 64, "records": 500}],
            "val": [{"step": 400, "loss": 1.1}]}))
    return last


def time_pages(data_dir: Path, last: int, loads: int) -> dict[str, list[float]]:
    import uvicorn

    from seedbed.studio.app import Studio, build_app

    sock_port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(Studio(data_dir), schedule=False), host="127.0.0.1",
                                           port=sock_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    timings: dict[str, list[float]] = {}
    try:
        for page in PAGES:
            url = f"http://127.0.0.1:{sock_port}" + page.format(last=last)
            start = time.perf_counter()
            urllib.request.urlopen(url).read()  # the first load: imports, the first SQLite read, no cache yet
            timings[page + " (first)"] = [time.perf_counter() - start]
            samples = []
            for _ in range(loads):
                start = time.perf_counter()
                with urllib.request.urlopen(url) as r:
                    r.read()
                    assert r.status == 200, (url, r.status)
                samples.append(time.perf_counter() - start)
            timings[page] = samples
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return timings


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as full_dir, tempfile.TemporaryDirectory() as empty_dir:
        empty_last = fill(Path(empty_dir), 1)  # one job, so the job pages exist
        last = fill(Path(full_dir), args.runs)
        base = time_pages(Path(empty_dir), empty_last, args.loads)
        full = time_pages(Path(full_dir), last, args.loads)
    print(f"| page | 1 run: median ms | {args.runs} runs: median ms | {args.runs} runs: worst ms | ratio | "
          f"{args.runs} runs: first load ms |")
    print("|---|---|---|---|---|---|")
    for page in PAGES:
        b, f = statistics.median(base[page]) * 1000, statistics.median(full[page]) * 1000
        print(f"| `{page}` | {b:.1f} | {f:.1f} | {max(full[page]) * 1000:.1f} | {f / b:.2f}x | "
              f"{full[page + ' (first)'][0] * 1000:.1f} |")


if __name__ == "__main__":
    main()
