"""The playground's model side: loaded models kept for reuse (one decode path, `seedbed.inference`), blind A/B
pairs awaiting a vote, and votes stored in the evaluation's own judgment store (`seedbed.evaluate.judgments`,
`judge: "human"`) that a Bradley–Terry leaderboard (`seedbed.evaluate.ratings`) is fitted on.

    models = LoadedModels(data_dir)
    for piece in models.chat("runs/ft", [{"role": "user", "content": "Hi"}], Sampling()): ...
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from seedbed.errors import SeedbedError

KEEP_LOADED = 2  # models held in memory (an A/B needs two); the least recently used one goes first
VOTES_FILE = "votes.jsonl"
LEADERBOARD_RESAMPLES = 200  # bootstrap refits for the intervals: enough for a page, ~1 s with a few models
PENDING_LIMIT = 1000  # A/B pairs shown but not yet voted on, kept in memory


class LoadedModels:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.backends: OrderedDict[str, object] = OrderedDict()
        self.lock = threading.Lock()  # one decode at a time: the machine's cores are shared with the jobs

    def path_of(self, model: str) -> str:
        """A model named relative to the data directory (as the registry names it), or a name/absolute path."""
        candidate = self.data_dir / model
        return str(candidate) if candidate.exists() else model

    def backend(self, model: str):
        from seedbed.inference import load

        key = self.path_of(model)
        if key not in self.backends:
            self.backends[key] = load(key, "auto")
            while len(self.backends) > KEEP_LOADED:
                self.backends.popitem(last=False)
        self.backends.move_to_end(key)
        return self.backends[key]

    def chat(self, model: str, messages: list[dict], sampling, calculator: bool = False) -> Iterator[str]:
        """Stream the model's answer to a conversation, through the CLI's own chat path. JSON mode is the
        sampling's `json_schema` (constrained decoding, as `seedbed generate --json-schema` and the server's
        `response_format`); the calculator completes each GSM8K `<<EXPR=` annotation exactly by the loop `seedbed
        eval --tools calculator` and the server run, so its answer comes whole, not piece by piece."""
        from seedbed.chat import render_prompt
        from seedbed.inference.generate import generate_with_calculator, stream

        with self.lock:
            backend = self.backend(model)
            prompt = render_prompt(backend.tokenizer, messages)
            if calculator:
                yield generate_with_calculator(backend, [prompt], sampling, batch_size=1)[0].text
            else:
                yield from stream(backend, prompt, sampling)

    def answer(self, model: str, prompt: str, sampling) -> str:
        return "".join(self.chat(model, [{"role": "user", "content": prompt}], sampling))


class ABPairs:
    """Blind pairs: two models answer one prompt, shown as A and B in a random order; a vote names the winner."""

    def __init__(self, data_dir: Path):
        self.votes_path = data_dir / VOTES_FILE
        self.pending: OrderedDict[str, dict] = OrderedDict()

    def new(self, prompt: str, models: tuple[str, str], answers: dict[str, str]) -> dict:
        if models[0] == models[1]:
            raise SeedbedError("models: choose two different models to compare")
        shown = list(models)
        random.shuffle(shown)
        pair_id = secrets.token_hex(8)
        self.pending[pair_id] = {"prompt": prompt, "model_a": shown[0], "model_b": shown[1]}
        while len(self.pending) > PENDING_LIMIT:
            self.pending.popitem(last=False)
        return {"id": pair_id, "A": answers[shown[0]], "B": answers[shown[1]]}

    def vote(self, pair_id: str, winner: str) -> dict:
        """Record a vote (A, B or tie) as a human judgment; the models are revealed in the reply."""
        from seedbed.evaluate.judgments import WINNERS, JudgmentStore, judgment_key

        if winner.lower() not in WINNERS:
            raise SeedbedError(f"winner: {winner!r}: give A, B or tie")
        pair = self.pending.pop(pair_id, None)
        if pair is None:
            raise SeedbedError("id: no such pair waiting for a vote (already voted, or the studio restarted)")
        record = {"key": judgment_key("human", pair_id), "prompt_id": pair_id, "prompt": pair["prompt"],
                  "judge": "human", "model_a": pair["model_a"], "model_b": pair["model_b"],
                  "winner": WINNERS[winner.lower()], "time": time.time()}
        JudgmentStore(self.votes_path).add(record)
        return record

    def leaderboard(self) -> list[dict]:
        """Bradley–Terry ratings (Elo scale) with 95% bootstrap intervals and vote counts, best first."""
        from seedbed.evaluate.judgments import JudgmentStore
        from seedbed.evaluate.ratings import Outcome, bootstrap, bradley_terry

        votes = [r for r in JudgmentStore(self.votes_path).records.values() if r.get("judge") == "human"]
        if not votes:
            return []
        scores = {"A": 1.0, "B": 0.0, "tie": 0.5}
        outcomes = [Outcome(v["prompt_id"], v["model_a"], v["model_b"], scores[v["winner"]], "human") for v in votes]
        models = sorted({m for o in outcomes for m in (o.model_a, o.model_b)})
        ratings = bradley_terry(outcomes, models)
        low, high = bootstrap(outcomes, lambda sample: bradley_terry(sample, models), LEADERBOARD_RESAMPLES)
        counts = {m: sum(m in (o.model_a, o.model_b) for o in outcomes) for m in models}
        rows = [{"model": m, "rating": float(ratings[i]), "low": float(low[i]), "high": float(high[i]),
                 "votes": counts[m]} for i, m in enumerate(models)]
        return sorted(rows, key=lambda r: -r["rating"])
