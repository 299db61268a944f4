"""Markdown tables: the one renderer behind `seedbed eval`'s and `seedbed compare`'s tables."""

from __future__ import annotations


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table: a header row, a separator, one line per row (cells already formatted as text).

    >>> print(markdown_table(["model", "accuracy"], [["base", "30.0%"], ["tuned", "55.0%"]]))
    | model | accuracy |
    |---|---|
    | base | 30.0% |
    | tuned | 55.0% |
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
