"""Trainer callbacks: a rich progress bar (loss, tokens/s, ETA), a progress log other processes read (the studio's
loss curves), wall-time bookkeeping across resumes, MLflow, and the seal that marks a checkpoint complete."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from seedbed.atomic import append_line, atomic_path

WALL_TIME_FILE = "seedbed_wall_time.json"
PROGRESS_FILE = "progress.jsonl"  # in the run's out: one JSON line per log event (read by seedbed.studio)
CHECKPOINT_SEAL = "seedbed_checkpoint_complete"  # written last into a checkpoint (`SealCheckpoint`)


class RichProgress(TrainerCallback):
    """One progress bar over optimizer steps, with the latest loss, tokens/s and an ETA."""

    def __init__(self, disable: bool = False, label: str = "finetune"):
        self.label = label
        self.disable = disable
        self.progress = None
        self.started_at = 0.0
        self.tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if self.disable:
            return
        self.progress = Progress(
            TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )
        self.progress.start()
        self.task = self.progress.add_task("", total=state.max_steps, completed=state.global_step, loss="-", tps="-")
        self.started_at = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress:
            rate = (state.num_input_tokens_seen - self.tokens_at_start) / max(time.perf_counter() - self.started_at, 1e-9)
            self.progress.update(self.task, completed=state.global_step, tps=f"{rate:,.0f}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress and logs and "loss" in logs:
            self.progress.update(self.task, loss=f"{logs['loss']:.4f}")
        if self.progress and logs and "eval_loss" in logs:
            self.progress.console.print(f"step {state.global_step}: validation loss {logs['eval_loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.stop()


class ProgressLog(TrainerCallback):
    """Append each log event (training loss, validation loss) with the step, total steps, tokens/s and elapsed time
    to `out/progress.jsonl`, a line at a time, so another process (the studio) draws live curves from a run it
    did not start. A run's own progress bar lives in its terminal; this file is what outlives it.

    A line: {"step": 10, "max_steps": 40, "loss": 2.31, "eval_loss": null, "tokens_per_s": 812.0, "elapsed_s": 12.4}
    """

    def __init__(self, out: str | Path):
        self.path = Path(out) / PROGRESS_FILE
        self.started_at = time.perf_counter()
        self.tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen
        self.write(state, {"event": "begin"})

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        line = {k: float(logs[k]) for k in ("loss", "eval_loss") if isinstance(logs.get(k), (int, float))}
        if line:
            self.write(state, line)

    def on_train_end(self, args, state, control, **kwargs):
        self.write(state, {"event": "end"})

    def write(self, state, fields: dict) -> None:
        elapsed = time.perf_counter() - self.started_at
        tokens = state.num_input_tokens_seen - self.tokens_at_start
        line = {"step": state.global_step, "max_steps": state.max_steps, **fields,
                "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None, "elapsed_s": round(elapsed, 2)}
        append_line(self.path, json.dumps(line))


class WallClock(TrainerCallback):
    """Training wall time that survives `--resume`: saved into each checkpoint, picked up from it again."""

    def __init__(self, resumed_from: str | None):
        self.before = 0.0
        if resumed_from and (Path(resumed_from) / WALL_TIME_FILE).is_file():
            self.before = json.loads((Path(resumed_from) / WALL_TIME_FILE).read_text())["wall_time_s"]
        self.started_at = time.perf_counter()
        self.tokens_at_start: int | None = None

    @property
    def total(self) -> float:
        return self.before + time.perf_counter() - self.started_at

    def on_train_begin(self, args, state, control, **kwargs):
        self.started_at = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            (checkpoint / WALL_TIME_FILE).write_text(json.dumps({"wall_time_s": self.total}))


class MLflowLogger(TrainerCallback):
    """Log losses and the learning rate to the active MLflow run as they happen."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        import mlflow

        if mlflow.active_run() is None or not logs:
            return
        metrics = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and k != "epoch"}
        mlflow.log_metrics(metrics, step=state.global_step)


class StopAfter(TrainerCallback):
    """Stop a run after `steps` optimizer steps, as an interrupted run would (tests use it to check resume)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_save = True
            control.should_training_stop = True


class SaveRows(TrainerCallback):
    """Save the template tokens' trainable rows (`seedbed.train.trainable_rows`) into each checkpoint: PEFT's
    checkpoint holds the LoRA weights only, and a resumed run must continue with the same rows."""

    def __init__(self, rows):
        self.rows = rows

    def on_save(self, args, state, control, **kwargs):
        self.rows.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")


class SealCheckpoint(TrainerCallback):
    """Mark a checkpoint complete, after the trainer and every other callback have saved into it: a run killed
    while saving leaves a checkpoint without the seal, which `--resume` passes over (`last_checkpoint`)."""

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            with atomic_path(checkpoint / CHECKPOINT_SEAL) as tmp:
                tmp.write_text(f"step {state.global_step}\n")
