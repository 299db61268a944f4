"""kill -9 in the middle of `data prepare` and of a `finetune` checkpoint save, then rerun / --resume (issue 13).

    PYTHONPATH=src python benchmarks/kill_and_resume.py

Tiny model (`seedbed.tiny`), CPU. data prepare: a complete run, a second run killed -9 once its work folder
holds records, then a third: the output's sha256 before the kill, after it and after the rerun. finetune: an
uninterrupted 6-step run (checkpoint every 2), a run killed -9 while checkpoint-4 is saved (its optimizer state
cut in half, no seal), then --resume: the two loss curves side by side and their largest difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(tempfile.mkdtemp(prefix="seedbed-kill-"))
os.environ["SEEDBED_HOME"] = str(ROOT / "home")
os.environ["MLFLOW_TRACKING_URI"] = f"file:{ROOT / 'mlruns'}"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def digest(out: Path) -> str:
    names = ("train.jsonl", "validation.jsonl", "dropped.jsonl")
    return hashlib.sha256(b"".join((out / n).read_bytes() for n in names)).hexdigest()[:16]


def kill_prepare() -> None:
    from seedbed.curate.prepare import prepare
    from seedbed.recipe import DataRecipe

    raw = ROOT / "raw.jsonl"
    raw.write_text("".join(json.dumps({"instruction": f"Tell me about topic {i} and why people study it.",
                                       "response": f"Topic {i} has a long history, and experts say its details "
                                                   f"changed over the years for record {i % 2500}."}) + "\n"
                           for i in range(3000)))
    out = ROOT / "data"
    settings = dict(inputs=[str(raw)], out=str(out), workers=1, chunk_size=100, pii={"names": False}, quiet=True)
    prepare(DataRecipe(**settings))
    first = digest(out)
    script = f"from seedbed.curate.prepare import prepare; from seedbed.recipe import DataRecipe; prepare(DataRecipe(**{settings!r}))"
    child = subprocess.Popen([sys.executable, "-c", script], env=ENV)
    while child.poll() is None and not [p for p in ROOT.glob(".data.tmp-*/kept.jsonl") if p.stat().st_size]:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    killed_rc = child.wait()
    after_kill = digest(out)
    prepare(DataRecipe(**settings))
    print(f"data prepare: rc of the killed run {killed_rc}; output sha256 {first} before, {after_kill} after the "
          f"kill, {digest(out)} after the rerun; work folders left: {len(list(ROOT.glob('.data.*')))}")


def kill_finetune() -> None:
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from seedbed.recipe import FinetuneRecipe
    from seedbed.tiny import build_tiny_llama
    from seedbed.train.finetune import finetune

    tiny = build_tiny_llama(ROOT / "tiny")
    data = ROOT / "train.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a} plus {b}?", "answer": f"{a + b}"}) + "\n"
                            for a, b in [(i % 7, (3 * i) % 5) for i in range(40)]))

    def recipe(name):
        return FinetuneRecipe(base=str(tiny), data=[str(data)], out=str(ROOT / name), max_steps=6, save_steps=2,
                              batch_size=4, lr=5e-3, warmup=0, logging_steps=1, val_fraction=0, quiet=True)

    whole = finetune(recipe("whole")).metrics["train"]
    script = f"""
import os, signal
from transformers import TrainerCallback
from seedbed.recipe import FinetuneRecipe
from seedbed.train.finetune import finetune
class KillWhileSaving(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 4:
            optimizer = os.path.join(args.output_dir, "checkpoint-4", "optimizer.pt")
            os.truncate(optimizer, os.path.getsize(optimizer) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
finetune(FinetuneRecipe.model_validate_json({recipe("killed").model_dump_json()!r}), callbacks=[KillWhileSaving()])
"""
    rc = subprocess.run([sys.executable, "-c", script], env=ENV).returncode
    resumed = finetune(FinetuneRecipe(out=str(ROOT / "killed"), resume=True, quiet=True)).metrics["train"]
    print(f"finetune: rc of the killed run {rc}; resumed from checkpoint-2")
    print("| step | uninterrupted loss | killed at the step-4 save, resumed |\n|---|---|---|")
    for a, b in zip(whole, resumed):
        print(f"| {a['step']} | {a['loss']:.6f} | {b['loss']:.6f} |")
    print(f"largest difference: {max(abs(a['loss'] - b['loss']) for a, b in zip(whole, resumed)):.2e}")


if __name__ == "__main__":
    kill_prepare()
    kill_finetune()
