"""What a job's files say about it while it runs and after: the training curves and progress from the run's
`progress.jsonl` (written by `seedbed.train.callbacks.ProgressLog`), the tail of its log, and an ETA.

    live = job_progress(data_dir / job.out, data_dir / "jobs" / "7" / "log.txt")
    live.step, live.max_steps, live.eta_s, live.train  # [(step, loss), ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from seedbed.atomic import complete_lines

PROGRESS_FILE = "progress.jsonl"  # seedbed.train.callbacks.PROGRESS_FILE (train imports torch; this must not)
LOG_TAIL_BYTES = 16_000


@dataclass
class Progress:
    step: int = 0
    max_steps: int = 0
    tokens_per_s: float | None = None
    elapsed_s: float = 0.0
    train: list[tuple[int, float]] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first step)."""
        if self.step <= 0 or self.max_steps <= self.step:
            return None if self.step <= 0 else 0.0
        return self.elapsed_s / self.step * (self.max_steps - self.step)

    @property
    def fraction(self) -> float:
        return min(self.step / self.max_steps, 1.0) if self.max_steps > 0 else 0.0


def read_progress(out: Path | None) -> Progress:
    """The run's curves and its latest step; an empty Progress when the run wrote none (yet)."""
    progress = Progress()
    if out is None:
        return progress
    for line in complete_lines(out / PROGRESS_FILE):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "begin":  # a resumed run starts its clock again; the curve continues
            progress.elapsed_s = 0.0
        progress.step, progress.max_steps = event.get("step", 0), event.get("max_steps", 0)
        progress.tokens_per_s = event.get("tokens_per_s") or progress.tokens_per_s
        progress.elapsed_s = event.get("elapsed_s", progress.elapsed_s)
        if "loss" in event:
            progress.train.append((event["step"], event["loss"]))
        if "eval_loss" in event:
            progress.val.append((event["step"], event["eval_loss"]))
    return progress


def log_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last `limit` bytes of a log, from a line start; rich's carriage-return redraws reduced to their last."""
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(size - limit, 0))
        text = handle.read().decode("utf-8", "replace")
    if size > limit:
        text = text.split("\n", 1)[-1]
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
