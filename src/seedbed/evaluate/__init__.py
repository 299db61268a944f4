"""Evaluation: exact-match accuracy (zero- and few-shot) and held-out loss, for several models on the same questions."""

from seedbed.evaluate.heldout import heldout_loss
from seedbed.evaluate.run import EvalResult, evaluate, markdown_table

__all__ = ["EvalResult", "evaluate", "heldout_loss", "markdown_table"]
