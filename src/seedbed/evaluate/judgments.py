"""The judgment store: one JSONL file, appended to line by line, holding every judgment and every human vote.

    store = JudgmentStore(out / "judgments.jsonl")
    store.add({"key": ..., "prompt_id": "81", "judge": "gemma-3-270m", ...})   # one complete line, fsynced
    store.has(key)                                                            # resume: asked already?

A judgment line holds what it takes to audit it: the prompt, the two answers in the order the judge saw them
(`first`, `second` and their models), the judge's raw reply, the parsed verdict ("A" = `first` is better, "B",
"tie" or null) and the problem, if any. A vote line has `judge: "human"`. A line that a killed run left half
written is skipped. A judgment whose request failed ("timeout", "http") is stored too, and asked again on the
next run; the latest line for a key wins.

Human votes come from JSONL files (`--votes`), one vote a line:

    {"prompt_id": "81", "model_a": "base", "model_b": "tuned", "winner": "A"}    # A, B or tie

Every bad line is reported at once as file:line: field: problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from seedbed.atomic import append_line, complete_lines
from seedbed.data.readers import Problem, data_error, stream_records

RETRIED = ("timeout", "http")  # problems of the request, not of the judge: asked again on resume
WINNERS = {"a": "A", "b": "B", "tie": "tie"}


def judgment_key(*parts: str) -> str:
    """A short, stable key of the things a judgment depends on (judge, prompt, models, the answers shown)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


class JudgmentStore:
    """An append-only JSONL file of judgments and votes, read back as {key: latest record}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.unreadable = 0  # lines a killed run garbled
        for line in complete_lines(self.path):
            try:
                record = json.loads(line)
                self.records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                self.unreadable += 1

    def has(self, key: str) -> bool:
        """Whether `key` is stored with an answer from the judge (a failed request does not count)."""
        record = self.records.get(key)
        return record is not None and record.get("problem") not in RETRIED

    def add(self, record: dict) -> None:
        append_line(self.path, json.dumps(record, ensure_ascii=False))
        self.records[record["key"]] = record


@dataclass(frozen=True)
class Vote:
    prompt_id: str
    model_a: str
    model_b: str
    winner: str  # "A", "B" or "tie"
    source: str  # file:line


def read_votes(paths: list[str], models: list[str], prompt_ids: set[str]) -> list[Vote]:
    """Human votes from JSONL files; each must name a prompt of this eval and two different models of it.

    >>> read_votes([], ["base", "tuned"], {"81"})
    []
    """
    problems: list[Problem] = []
    votes: list[Vote] = []
    for file, line, record in stream_records(paths, problems):
        found = vote_problems(record, models, prompt_ids)
        problems += [Problem(file, line, field, message) for field, message in found]
        if not found:
            votes.append(Vote(str(record["prompt_id"]), str(record["model_a"]), str(record["model_b"]),
                              WINNERS[str(record["winner"]).strip().lower()], f"{file}:{line}"))
    if problems:
        raise data_error(problems)
    return votes


def vote_problems(record, models: list[str], prompt_ids: set[str]) -> list[tuple[str, str]]:
    """(field, problem) for everything wrong with one vote record; [] for a good one."""
    if not isinstance(record, dict):
        return [("-", "expected a vote: a JSON object with prompt_id, model_a, model_b and winner")]
    missing = [f for f in ("prompt_id", "model_a", "model_b", "winner") if record.get(f) is None or str(record[f]).strip() == ""]
    if missing:
        return [(f, "missing") for f in missing]
    found = []
    if str(record["prompt_id"]) not in prompt_ids:
        found.append(("prompt_id", f"{record['prompt_id']!r} is not one of this eval's prompts"))
    for f in ("model_a", "model_b"):
        if str(record[f]) not in models:
            found.append((f, f"{record[f]!r} is not one of --models ({', '.join(models)})"))
    if str(record["model_a"]) == str(record["model_b"]):
        found.append(("model_b", "a vote compares two different models"))
    if str(record["winner"]).strip().lower() not in WINNERS:
        found.append(("winner", f"{record['winner']!r}: give A, B or tie"))
    return found
