"""Past one process: `--num-processes 2` runs finetune and pretrain under `accelerate launch` (DDP, gloo on CPU)
and gives the loss curve of one process with the same global batch, and a checkpoint resumes under another count.

Tolerance: 1e-4 relative on every logged loss. The two runs see the same sequences in each step and DDP averages
exactly the gradients one process would compute; what differs is the order of floating-point sums (all-reduce
over 2 processes, batched matmuls of 4 rows against 8), ~1e-7 a step in fp32, so the curves agree to ~1e-5 after
tens of steps; a wrong scale (a process learning 1/N) or a wrong data split shows as 1e-2 or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import qa_records, write_jsonl

# Each case starts 3-4 Python processes (~60-120 s on 2 cores); finetune's and pretrain's run in CI (issue 16 asks
# for both there), distill's only under `pytest -m slow`.

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}


def seedbed(*args: str, env: dict = ENV, cwd: Path | None = None) -> None:
    done = subprocess.run([sys.executable, "-m", "seedbed.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def full_finetune(tiny_model: Path, data: Path, steps: int) -> list[str]:
    """Flags of a short full fine-tune whose curve one and two processes can compare (no validation, no card)."""
    return ["--base", str(tiny_model), "--data", str(data), "--method", "full", "--max-steps", str(steps),
            "--lr", "1e-3", "--logging-steps", "1", "--val-fraction", "0", "--truthfulness-questions", "0",
            "--quiet", "--template-tokens", "off"]


def losses(out: Path) -> list[float]:
    return [h["loss"] for h in json.loads((out / "metrics.json").read_text())["train"]]


def val_losses(out: Path) -> list[float]:
    return [h["loss"] for h in json.loads((out / "metrics.json").read_text())["val"]]


def test_finetune_two_processes_give_one_process_curve(tiny_model, tmp_path):
    common = full_finetune(tiny_model, write_jsonl(tmp_path / "qa.jsonl", qa_records(64)), steps=8)
    seedbed("finetune", *common, "--batch-size", "8", "--out", str(tmp_path / "one"))
    seedbed("finetune", *common, "--batch-size", "4", "--num-processes", "2", "--out", str(tmp_path / "two"))
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert two == pytest.approx(one, rel=1e-4)
    assert one[-1] < one[0]


def test_finetune_on_two_ray_train_workers_gives_one_process_curve(tiny_model, tmp_path):
    """`--launcher ray`: the same two processes as Ray Train workers (a local Ray cluster) give the same curve,
    and the relative --out lands where the command was started, not in Ray's run directory."""
    pytest.importorskip("ray.train.torch", reason="the ray extra")
    common = full_finetune(tiny_model, write_jsonl(tmp_path / "qa.jsonl", qa_records(64)), steps=6)
    env = {**ENV, "SEEDBED_HOME": str(tmp_path / "home"), "RAY_ADDRESS": "local"}
    seedbed("finetune", *common, "--batch-size", "8", "--out", "one", env=env, cwd=tmp_path)
    seedbed("finetune", *common, "--batch-size", "4", "--num-processes", "2", "--launcher", "ray", "--out", "two",
            env=env, cwd=tmp_path)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert two == pytest.approx(one, rel=1e-4)
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["processes"] == 2


def test_a_failing_ray_run_exits_nonzero_with_its_reason(tmp_path):
    pytest.importorskip("ray.train.torch", reason="the ray extra")
    env = {**ENV, "SEEDBED_HOME": str(tmp_path / "home"), "RAY_ADDRESS": "local"}
    done = subprocess.run([sys.executable, "-m", "seedbed.cli", "finetune", "--base", str(tmp_path / "missing"),
                           "--data", str(tmp_path / "none.jsonl"), "--num-processes", "2", "--launcher", "ray",
                           "--out", "x", "--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "none.jsonl" in done.stdout + done.stderr


@pytest.mark.slow
def test_distill_two_processes_give_one_process_curve(tiny_model, tmp_path):
    """Logit distillation (the teacher in every process, the student under DDP) with batch 4 in each of 2 processes
    gives the curve of batch 8 in one (before, --num-processes was ignored and every process wrote `out`)."""
    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(64))
    common = ["--teacher", str(tiny_model), "--student", "narrow-half", "--data", str(data), "--max-steps", "8",
              "--lr", "3e-3", "--warmup", "0", "--logging-steps", "1", "--val-fraction", "0",
              "--truthfulness-questions", "0", "--quiet"]
    seedbed("distill", *common, "--batch-size", "8", "--out", str(tmp_path / "one"))
    seedbed("distill", *common, "--batch-size", "4", "--num-processes", "2", "--out", str(tmp_path / "two"))
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert two == pytest.approx(one, rel=1e-4)
    assert one[-1] < one[0]
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["tokens_seen"] == \
        json.loads((tmp_path / "one" / "metrics.json").read_text())["tokens_seen"]


def test_pretrain_two_processes_give_one_process_curve_and_resume_under_one(tmp_path):
    """Regression (issue 16): on a machine without a GPU a bare `PartialState()` saw one process under the launcher,
    so each of 2 processes took the whole batch (16 blocks a step, first loss 5.7063 against 5.7115) and both
    wrote the tokenizer and blocks. 93 blocks: 5 for validation, which batches of 4 do not divide."""
    text = tmp_path / "sums.txt"
    text.write_text("\n\n".join(f"{r['question']}\n{r['answer']}" for r in qa_records(120)) + "\n")
    common = ["--data", str(text), "--vocab-size", "400", "--layers", "2", "--hidden-size", "64", "--heads", "2",
              "--max-length", "32", "--batch-size", "8", "--lr", "3e-3", "--max-steps", "40", "--logging-steps", "1",
              "--save-steps", "6", "--samples", "0", "--quiet"]
    seedbed("pretrain", *common, "--out", str(tmp_path / "one"))
    # The same tokenizer for every run: `tokenizers`' BPE trainer may break ties between equal merges differently
    # from run to run, and other merges make other blocks.
    common += ["--tokenizer", str(tmp_path / "one")]
    seedbed("pretrain", *common, "--num-processes", "2", "--out", str(tmp_path / "two"))
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 40
    assert two == pytest.approx(one, rel=1e-4)
    assert one[-1] < one[0] - 1.0
    meta = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert meta["processes"] == 2 and meta["tokens_seen"] == 40 * 8 * 32
    assert meta["text"]["validation_blocks"] % 4  # the case where padding could leak into the validation loss
    assert val_losses(tmp_path / "two") == pytest.approx(val_losses(tmp_path / "one"), rel=1e-4)

    # Killed under 2 processes after its step-6 checkpoint, resumed under 1: the same curve again.
    import shutil
    import signal
    import time

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "seedbed.cli", "pretrain", *common, "--num-processes", "2",
                             "--out", str(cut)], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = cut / "checkpoints" / "checkpoint-6" / "trainer_state.json"
    deadline = time.time() + 300
    while not saved.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    # The whole tree: torch's elastic agent starts its workers in sessions of their own, out of the launcher's group.
    for process in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        process.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved.is_file() and not (cut / "metrics.json").exists()
    for later in (cut / "checkpoints").glob("checkpoint-*"):  # anything the kill cut halfway
        if later.name != "checkpoint-6":
            shutil.rmtree(later)
    seedbed("pretrain", "--out", str(cut), "--resume", "--quiet")
    assert losses(cut) == pytest.approx(one, rel=1e-4)
