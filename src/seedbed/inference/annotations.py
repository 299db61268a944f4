"""The calculator annotation loop, written once: `seedbed serve` drives it asynchronously (one request at a time
through its engine), `seedbed eval --tools calculator` synchronously (every question of a condition in lockstep
rounds, batched), so both stop, compute and go on in exactly the same way.

A model fine-tuned on GSM8K writes `48/2 = <<48/2=`. Each round decodes from `next_ids()` (the prompt, then the
answer so far) with `stop_when()` (true once the text ends in an open annotation) and at most `budget(max_tokens)`
new tokens; `take()` receives the round's text: for an open annotation it appends the exact value and `>>`
(`calculator.calculate`; `?` where the calculator refuses the expression) and asks for another round.

    >>> chars = lambda text, add_special_tokens=False: {"input_ids": [ord(c) for c in text]}  # a stand-in tokenizer
    >>> answer = AnnotatedAnswer([1, 2], chars)
    >>> answer.take("48/2 = <<48/2=", "stop", 9)
    >>> answer.text, answer.done, answer.calls, answer.budget(40)
    ('48/2 = <<48/2=24>>', False, [CalculatorCall(expression='48/2', value='24')], 31)
    >>> answer.take("25 clips", "stop", 3)
    >>> answer.text, answer.done, answer.completion_tokens
    ('48/2 = <<48/2=24>>25 clips', True, 12)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from seedbed.inference.calculator import CalculatorError, calculate, pending_annotation

MAX_ANNOTATIONS = 16  # calculator completions per answer: bounds a model that loops on `<<`
REFUSED = "?"  # written as the value of an expression the calculator refuses, so the model sees it and goes on


@dataclass
class CalculatorCall:
    """One completed annotation: the expression the model wrote and the value appended (`?`: refused)."""

    expression: str
    value: str


@dataclass
class AnnotatedAnswer:
    """One answer being generated with calculator annotations completed on the way; see the module docstring.

    `tokenizer` is the model's (called as `tokenizer(text, add_special_tokens=False)["input_ids"]`); with
    `calculator` false there is one round and nothing is appended, as for any plain answer.
    """

    prompt_ids: list[int]
    tokenizer: Callable
    calculator: bool = True
    text: str = ""  # the answer so far, computed values included
    calls: list[CalculatorCall] = field(default_factory=list)
    completion_tokens: int = 0  # over all rounds: what the model generated, not what the calculator appended
    rounds: int = 0
    finish_reason: str | None = None  # the last round's
    done: bool = False

    def next_ids(self) -> list[int]:
        """The tokens the next round continues: the prompt, then the answer so far (values included) re-tokenized."""
        return self.prompt_ids + (self.tokenizer(self.text, add_special_tokens=False)["input_ids"] if self.text else [])

    def stop_when(self) -> Callable[[str], bool] | None:
        """For the round's `Request.stop_when`: true once the answer (so far + this round's text) opens an
        annotation; None without the calculator."""
        if not self.calculator:
            return None
        written = self.text
        return lambda new: pending_annotation(written + new) is not None

    def budget(self, max_tokens: int) -> int:
        """The next round's max_tokens: what the answer's `max_tokens` leaves after the rounds before, at least 1."""
        return max_tokens if self.rounds == 0 else max(1, max_tokens - self.completion_tokens)

    def take(self, text: str, finish_reason: str | None, completion_tokens: int) -> None:
        """The round's decoded `text`, how it ended and its token count; completes an annotation it left open."""
        self.text += text
        self.completion_tokens += completion_tokens
        self.finish_reason = finish_reason
        self.rounds += 1
        # Only a round that stopped can have stopped at `<<EXPR=`; one cut at max_tokens is over.
        expression = pending_annotation(self.text) if self.calculator and finish_reason == "stop" else None
        if expression is None:
            self.done = True
            return
        try:
            value = calculate(expression)
        except CalculatorError:
            value = REFUSED
        self.text += f"{value}>>"
        self.calls.append(CalculatorCall(expression, value))
        self.done = self.rounds > MAX_ANNOTATIONS
