"""Fine-tuning throughput and peak memory: `seedbed finetune` against plain TRL `SFTTrainer` with its defaults.

    python benchmarks/finetune_throughput.py                      # Gemma 3 270M, CPU, full + LoRA
    python benchmarks/finetune_throughput.py --steps 20 --records 400 --methods full   # on a GPU

Both sides get the same model and the same examples (shipped GSM8K + self-instruct seed tasks). The baseline is
what a user gets from TRL with default settings: `SFTTrainer(model, args=SFTConfig(output_dir=...),
train_dataset=<messages>)` (no packing, padding to the longest in the batch, gradient checkpointing on, TRL's
default batch size 8). Seedbed runs its own defaults plus packing (rows of `--max-length` tokens).

Each configuration runs in its own child process, one after the other, so that each peak-memory figure is that
configuration's alone (a process's peak RSS never goes down). Throughput counts non-padding tokens (the trainers'
own `num_input_tokens_seen`) per second of optimizer steps; the first step (warm-up, lazy allocation) is
excluded and the median of the per-step rates is reported, with the whole-run rate beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = ["seedbed:data/gsm8k_demo_train.jsonl", "seedbed:data/seed_tasks_demo_train.jsonl"]


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks = []  # (time, tokens seen) at the end of each optimizer step

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks = [(time.perf_counter(), state.num_input_tokens_seen)]

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    return StepTimer()


def summarise(marks) -> dict:
    import torch

    steps = [(t1 - t0, n1 - n0) for (t0, n0), (t1, n1) in zip(marks, marks[1:])]
    timed = steps[1:] or steps  # drop the first step: warm-up
    return {
        "tokens_per_s": statistics.median(n / t for t, n in timed),
        "tokens_per_s_whole": sum(n for _, n in timed) / sum(t for t, _ in timed),
        "steps_timed": len(timed),
        "tokens_per_step": statistics.median(n for _, n in timed),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def run_trl_default(model_name: str, records: int, steps: int, method: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from seedbed.data.readers import read_examples
    from seedbed.models import load_model

    examples = read_examples(DATA).examples
    examples = [examples[i] for i in sorted(__import__("random").Random(42).sample(range(len(examples)), records))]
    model, tokenizer = load_model(model_name)  # same weights and chat template as seedbed uses
    timer = step_timer()
    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(
            output_dir=tmp, max_steps=steps, report_to="none", save_strategy="no", disable_tqdm=True,
            include_num_input_tokens_seen="non_padding", use_cpu=not torch.cuda.is_available(),
        )
        trainer = SFTTrainer(
            model=model, args=config, processing_class=tokenizer, callbacks=[timer],
            train_dataset=Dataset.from_list([{"messages": e.messages} for e in examples]),
            peft_config=LoraConfig(task_type="CAUSAL_LM") if method == "lora" else None,
        )
        trainer.train()
    return {**summarise(timer.marks), "batch": config.per_device_train_batch_size,
            "gradient_checkpointing": config.gradient_checkpointing, "packing": config.packing}


def run_seedbed(model_name: str, records: int, steps: int, method: str, max_length: int, batch: int) -> dict:
    from seedbed.recipe import FinetuneRecipe
    from seedbed.train.finetune import finetune

    timer = step_timer()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = FinetuneRecipe(
            base=model_name, data=DATA, out=str(Path(tmp) / "out"), method=method, max_records=records,
            max_steps=steps, val_fraction=0, packing=True, max_length=max_length, batch_size=batch,
            save_steps=10**6, quiet=True, lr=2e-4 if method == "lora" else 2e-5,
        )
        finetune(recipe, callbacks=[timer])
    return {**summarise(timer.marks), "batch": f"{batch} x {max_length} packed", "gradient_checkpointing": False,
            "packing": True}


def child(args) -> None:
    if args.side == "trl":
        result = run_trl_default(args.model, args.records, args.steps, args.method)
    else:
        result = run_seedbed(args.model, args.records, args.steps, args.method, args.max_length, args.batch)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--records", type=int, default=200, help="examples both sides draw batches from")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per configuration")
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--max-length", type=int, default=512, help="seedbed's packed row length")
    parser.add_argument("--batch", type=int, default=2, help="seedbed's packed rows per step")
    parser.add_argument("--out", default="benchmarks/results/finetune_throughput.json")
    parser.add_argument("--side", choices=["trl", "seedbed"], help=argparse.SUPPRESS)  # set in child processes
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)

    from seedbed.models import resolve
    from seedbed.train.lineage import hardware, package_versions

    resolve(args.model)  # convert a GGUF once, outside the timed children
    rows = []
    for method in args.methods:
        for side in ("trl", "seedbed"):
            cmd = [sys.executable, __file__, "--side", side, "--method", method, "--model", args.model,
                   "--records", str(args.records), "--steps", str(args.steps), "--max-length", str(args.max_length),
                   "--batch", str(args.batch)]
            print(f"== {side} {method}", flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{side} {method} failed:\n{done.stderr[-3000:]}")
            rows.append({"side": side, "method": method, **json.loads(line[7:])})
            print(rows[-1], flush=True)
    report = {"model": args.model, "records": args.records, "steps": args.steps, "hardware": hardware(),
              "packages": package_versions(), "rows": rows, "command": " ".join(sys.argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("\n| method | side | tokens/s (median step) | tokens/s (whole) | peak RSS GiB | batch | grad. ckpt |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['side']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s_whole']:.0f} | "
              f"{r['peak_rss_gib']:.2f} | {r['batch']} | {r['gradient_checkpointing']} |")
    for method in args.methods:
        trl, ours = (next(r for r in rows if r["side"] == s and r["method"] == method) for s in ("trl", "seedbed"))
        print(f"{method}: seedbed / TRL default = {ours['tokens_per_s'] / trl['tokens_per_s']:.2f}x tokens/s, "
              f"{ours['peak_rss_gib'] / trl['peak_rss_gib']:.2f}x peak memory")


if __name__ == "__main__":
    main()
