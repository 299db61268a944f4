"""Evaluation: the task's metrics (GSM8K exact match, or JSON exact match, field accuracy and slot F1), usability
(stop and repetition rates) and held-out loss, zero- and few-shot, for several models on the same questions;
`seedbed compare` (size, speed and quality side by side) builds on it."""

from seedbed.evaluate.run import EvalResult, evaluate, markdown_table, write_results
from seedbed.inference.hf import heldout_loss

__all__ = ["EvalResult", "evaluate", "heldout_loss", "markdown_table", "write_results"]
