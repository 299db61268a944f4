"""Sampling settings and the one stop / hold-back scanner every decode loop uses (torch and llama.cpp alike).

A decode loop hands each new token to a `TextTracker`; the tracker decodes the row's tokens, cuts the text at
the first stop string, and says what is safe to show now: never the end that may still become a stop string,
nor half of a multi-byte character. Written once so that `generate`, `eval` and `serve` stop at the same place.
No torch here: both backends import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from seedbed.chat import end_of_turn_strings


@dataclass
class Sampling:
    """How to pick tokens. Greedy when `greedy` is set or `temperature` is 0."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    greedy: bool = False
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @classmethod
    def from_recipe(cls, r) -> "Sampling":
        """From a `GenerateRecipe` (or anything with its sampling fields)."""
        return cls(r.max_new_tokens, r.temperature, r.top_p, r.greedy, list(r.stop), r.seed)

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


def stop_strings(tokenizer, stop: list[str]) -> list[str]:
    """The strings generation stops at: the caller's plus the chat template's end-of-turn marker."""
    return list(dict.fromkeys(s for s in [*stop, *end_of_turn_strings(tokenizer)] if s))


def cut_at_stop(text: str, stops: list[str]) -> str:
    """`text` up to (not including) the earliest stop string in it.

    >>> cut_at_stop("five<|end|>more", ["<|end|>"])
    'five'
    """
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(found)] if found else text


def pending_stop_prefix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that is the start of a stop string (it may yet become one)."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


def shown_length(text: str, stops: list[str], final: bool) -> int:
    """How much of a growing completion (already cut at its first stop string) can be shown now: all of it once
    decoding is over; otherwise not the end that may still become a stop string, nor a half-decoded character.

    >>> shown_length("five<|e", ["<|end|>"], final=False), shown_length("five\ufffd", [], final=False)
    (4, 4)
    """
    if final:
        return len(text)
    safe = len(text) - pending_stop_prefix(text, stops)
    return min(safe, len(text) - 1) if text.endswith("\ufffd") else safe


def stop_token_ids(tokenizer, eos_ids, stops: list[str]) -> set[int]:
    """Ids that end a row at once: the model's end-of-turn ids, plus stop strings that are single tokens (a special
    token such as `<|im_end|>` vanishes from decoded text, so only its id can stop the row)."""
    vocab = tokenizer.get_vocab()
    return set(eos_ids) | {vocab[s] for s in stops if s in vocab}


class TextTracker:
    """One row's completion as its tokens arrive: the text cut at stop strings, what is shown, and how it ended.

    >>> tracker = TextTracker(tokenizer, eos_ids={2}, stops=["\\n\\n"])  # doctest: +SKIP
    >>> piece, finish = tracker.push(token_id, at_limit=False)  # doctest: +SKIP
    """

    def __init__(self, tokenizer, eos_ids, stops: list[str], stop_when: Callable[[str], bool] | None = None):
        self.tokenizer, self.stops, self.stop_when = tokenizer, list(stops), stop_when
        self.end_ids = stop_token_ids(tokenizer, eos_ids, self.stops)
        self.tokens: list[int] = []
        self.text = ""  # what has been shown so far
        self.finish_reason: str | None = None

    def push(self, token: int, at_limit: bool) -> tuple[str, str | None]:
        """Add one generated token; return the newly showable text and "stop" / "length" once the row is done.

        `at_limit`: this is the last token the row may have (its max_tokens or the context is reached).
        """
        self.tokens.append(token)
        at_end = token in self.end_ids
        text = self.tokenizer.decode(self.tokens[:-1] if at_end else self.tokens, skip_special_tokens=True)
        cut = cut_at_stop(text, self.stops)
        stopped = at_end or len(cut) < len(text) or bool(self.stop_when and self.stop_when(cut))
        done = stopped or at_limit
        safe = shown_length(cut, self.stops, final=done)
        piece = cut[len(self.text):safe] if safe > len(self.text) else ""
        self.text += piece
        if done:
            self.finish_reason = "stop" if stopped else "length"
        return piece, self.finish_reason
