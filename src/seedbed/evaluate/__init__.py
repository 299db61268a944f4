"""Evaluation: exact-match accuracy (zero- and few-shot) and held-out loss, for several models on the same questions;
`seedbed compare` (size, speed and quality side by side) builds on it."""

from seedbed.evaluate.run import EvalResult, evaluate, markdown_table
from seedbed.inference.hf import heldout_loss

__all__ = ["EvalResult", "evaluate", "heldout_loss", "markdown_table"]
