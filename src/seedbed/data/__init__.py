"""Instruction data: read the files users have into canonical `seedbed.chat.Example`s.

>>> from seedbed.data import read_examples
>>> data = read_examples(["train.jsonl", "more/"])  # doctest: +SKIP
"""

from seedbed.data.readers import (
    DataError,
    FileSummary,
    InstructionData,
    Problem,
    read_examples,
    resolve_data_path,
)

__all__ = ["DataError", "FileSummary", "InstructionData", "Problem", "read_examples", "resolve_data_path"]
