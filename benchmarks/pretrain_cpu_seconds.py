"""The CPU demo recipe's cost in CPU-seconds, which a shared machine's load does not inflate the way it does wall time.

    OMP_NUM_THREADS=2 python benchmarks/pretrain_cpu_seconds.py --max-steps 20 --out benchmarks/results/pretrain_cpu_2t.json
    OMP_NUM_THREADS=1 python benchmarks/pretrain_cpu_seconds.py --max-steps 20 --set hidden_size=96 layers=3

Runs `seedbed pretrain` on recipes/pretrain-cpu.yaml (fields overridable with --set) in this process with a callback
that reads the process's CPU clock (`time.process_time`: user + system of every thread) at each phase: before the
run (start-up excluded), when training starts (tokenizer learnt, blocks packed), after every step and every
validation, and when the run returns (samples written, model saved). With 1 thread the CPU-seconds are the work
itself; with 2, what both cores spend (work plus OpenMP's spinning), which an idle 2-core machine shows as twice
its wall time. Wall seconds are recorded too, with the load average, and mean little on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import TrainerCallback

from seedbed.pretrain.run import pretrain
from seedbed.recipe import PretrainRecipe

ROOT = Path(__file__).resolve().parents[1]


class CpuClock(TrainerCallback):
    """CPU-seconds of each training step and each validation pass."""

    def __init__(self):
        self.train_start = None
        self.steps: list[float] = []
        self.evals: list[float] = []
        self.mark = None

    def on_train_begin(self, args, state, control, **kw):
        self.train_start = self.mark = time.process_time()

    def on_step_end(self, args, state, control, **kw):
        now = time.process_time()
        self.steps.append(now - self.mark)
        self.mark = now

    def on_evaluate(self, args, state, control, **kw):  # validation runs after the step that triggered it
        now = time.process_time()
        self.evals.append(now - self.mark)
        self.mark = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes/pretrain-cpu.yaml")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--set", nargs="*", default=[], help="recipe fields, name=value (YAML values)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    fields = yaml.safe_load(args.recipe.read_text())["pretrain"]
    fields.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"file:{tmp}/mlruns"
        recipe = PretrainRecipe(**{**fields, "out": f"{tmp}/out", "max_steps": args.max_steps, "quiet": True})
        clock = CpuClock()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        metrics = pretrain(recipe, callbacks=[clock]).metrics
        cpu_total, wall_total = time.process_time() - cpu0, time.perf_counter() - wall0
    steps = clock.steps[1:] or clock.steps  # the first step also warms up (allocator, threads)
    per_step = statistics.median(steps)
    row = {
        "threads": torch.get_num_threads(), "fields": {k: v for k, v in fields.items() if k != "data"},
        "max_steps": args.max_steps, "parameters": metrics["total_parameters"],
        "tokens_per_step": recipe.batch_size * recipe.max_length,
        "cpu_s": {"total": round(cpu_total, 1), "before_training": round(clock.train_start - cpu0, 1),
                  "step_median": round(per_step, 3), "step_first": round(clock.steps[0], 3),
                  "validation_each": [round(e, 2) for e in clock.evals],
                  "after_training": round(cpu0 + cpu_total - clock.mark, 1)},
        "cpu_tokens_per_s": round(recipe.batch_size * recipe.max_length / per_step, 1),
        "wall_s": round(wall_total, 1), "load_avg_1min_after": round(os.getloadavg()[0], 1),
        "train": [(h["step"], round(h["loss"], 3)) for h in metrics["train"]],
        "val": [(h["step"], round(h["loss"], 3)) for h in metrics["val"]],
    }
    print(json.dumps(row, indent=2))
    if args.out:
        args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
