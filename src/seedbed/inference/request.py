"""A decode request: prompt tokens and sampling settings in; text pieces, token count and finish reason out.

Both backends decode lists of these; whoever submits one (the server's engine, `generate`, `eval`) says where
its text goes by setting `on_piece` and `on_end`. The backend calls `emit(piece)` as text becomes safe to show and
`end(reason)` once, when the row is done ("stop", "length" or "cancelled"); a backend calls `fail(error)` on a
row that failed alone (its sampling settings, its `stop_when`), and whoever runs the backend calls it on the
requests a failure of the whole batch left unfinished. With no `on_error` set, `fail` raises the error.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from seedbed.inference.stops import Sampling, stop_strings


GREEDY_BELOW = 1e-5  # temperatures under this decode greedily


def _ignore(*_args) -> None:
    return None


def _reraise(error: BaseException) -> None:
    raise error  # no one to hand a failed row to (generate, eval): the error ends the whole decode, as it always did


@dataclass
class Request:
    """One generation. Temperature 0 is greedy; `seed` makes sampling reproducible."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)  # complete list: the template's end-of-turn marker included
    seed: int | None = None
    stop_when: Callable[[str], bool] | None = None  # stop early when true of the text (the calculator's `<<EXPR=`)
    json_schema: dict | None = None  # decode only JSON this schema accepts; ends ("stop") when the JSON is whole
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit (OpenAI's -100..100)
    presence_penalty: float = 0.0  # subtracted from the logit of every token generated so far
    frequency_penalty: float = 0.0  # subtracted once per time a token was generated so far
    on_piece: Callable[[str], None] = _ignore
    on_end: Callable[[], None] = _ignore
    on_error: Callable[[BaseException], None] = _reraise  # the backend failed before the request ended
    # Filled in while decoding:
    text: str = ""
    tokens: list[int] = field(default_factory=list)  # the sampled ids, in order (what logprobs score)
    completion_tokens: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        # Below this, logits / temperature overflow (1e-40 gives inf, then NaN probabilities) and the answer is the
        # greedy one anyway: decode greedily, as vLLM does under its _SAMPLING_EPS (1e-5).
        if self.temperature < GREEDY_BELOW:
            self.temperature = 0.0

    @classmethod
    def from_sampling(cls, prompt_ids: list[int], sampling: Sampling, tokenizer) -> "Request":
        """A request for `prompt_ids` with `sampling`'s settings; stops include the template's end of turn."""
        return cls(prompt_ids, max_tokens=sampling.max_new_tokens,
                   temperature=0.0 if sampling.is_greedy else sampling.temperature, top_p=sampling.top_p,
                   stop=stop_strings(tokenizer, sampling.stop), seed=sampling.seed, json_schema=sampling.json_schema)

    def logit_adjustments(self) -> tuple[list[int], list[float]]:
        """What to add to which logits before sampling the next token: `logit_bias`, less the presence and
        frequency penalties of the tokens generated so far (OpenAI's formula, as vLLM applies it). Both backends
        apply these, so a request samples the same way on either.

        >>> Request([1], 4, logit_bias={5: 2.0}, presence_penalty=0.5, tokens=[5, 5]).logit_adjustments()
        ([5], [1.5])
        """
        deltas = dict(self.logit_bias)
        if self.presence_penalty or self.frequency_penalty:
            for token, count in Counter(self.tokens).items():
                deltas[token] = deltas.get(token, 0.0) - self.presence_penalty - self.frequency_penalty * count
        return list(deltas), list(deltas.values())

    def emit(self, piece: str) -> None:
        self.text += piece
        self.on_piece(piece)

    def take(self, token: int, tracker, limit: int, complete: bool) -> bool:
        """Record one new token (both backends): emit the text it makes safe to show (`tracker`, a
        `stops.TextTracker`), and return True, after ending the request, once the row is done: a stop, the end of
        turn, `limit` completion tokens, or `complete` (the JSON its schema asks for is whole)."""
        self.completion_tokens += 1
        self.tokens.append(token)
        piece, finish = tracker.push(token, at_limit=self.completion_tokens >= limit, complete=complete)
        if piece:
            self.emit(piece)
        if finish:
            self.end(finish)
            return True
        return False

    def end(self, reason: str) -> None:
        self.finish_reason = reason
        self.on_end()

    def fail(self, error: BaseException) -> None:
        self.on_error(error)
