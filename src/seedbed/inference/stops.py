"""Sampling settings and the one stop / hold-back scanner every decode loop uses (torch and llama.cpp alike).

A decode loop hands each new token to a `TextTracker`; the tracker decodes the row's tokens, cuts the text at
the first stop string, and says what is safe to show now: never the end that may still become a stop string,
nor half of a multi-byte character. Written once so that `generate`, `eval` and `serve` stop at the same place.
No torch here: both backends import it.

A sampling may carry a JSON schema (`--json-schema FILE`, the API's `response_format`): each backend then
constrains its decoding to JSON that the schema accepts (`hf.py` with llguidance's token masks, `llamacpp.py` with
llama.cpp's grammar), and the row ends with "stop" as soon as the JSON is complete.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from seedbed.chat import end_of_turn_strings, single_token_ids
from seedbed.errors import SeedbedError

JSON_OBJECT = {"type": "object"}  # the schema of `response_format: {"type": "json_object"}`: any JSON object


class SchemaError(SeedbedError, ValueError):
    """A JSON schema that cannot constrain decoding; the message names where it came from and why."""


@dataclass
class Sampling:
    """How to pick tokens. Greedy when `greedy` is set or `temperature` is 0."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    greedy: bool = False
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    json_schema: dict | None = None  # answers are JSON this schema accepts (constrained decoding)

    @classmethod
    def from_recipe(cls, r) -> "Sampling":
        """From a `GenerateRecipe` (or anything with its sampling fields); `json_schema` is a file's path."""
        return cls(r.max_new_tokens, r.temperature, r.top_p, r.greedy, list(r.stop), r.seed,
                   cls.schema_from_file(r.json_schema))

    @staticmethod
    def schema_from_file(path: str | None) -> dict | None:
        """The JSON schema in file `path` (None: no schema); a missing, malformed or unusable one is a
        `SchemaError` naming the file."""
        if path is None:
            return None
        try:
            schema = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SchemaError(f"{path}: no such JSON schema file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SchemaError(f"{path}: cannot read the JSON schema: {e}") from None
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        return check_schema(schema, path)

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


def check_schema(schema, where: str) -> dict:
    """`schema` if it is a JSON schema decoding can be constrained to; else a `SchemaError` naming `where`.

    llguidance's compiler is the judge (no tokenizer needed, a millisecond): unknown types, broken `$ref`s, bad
    regular expressions and unsatisfiable bounds are all caught here, for both engines, before any decoding.

    >>> check_schema({"type": "object"}, "response_format")
    {'type': 'object'}
    """
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a JSON schema is a JSON object, not {type(schema).__name__} "
                          '(e.g. {"type": "object", "properties": {...}})')
    from llguidance import LLMatcher

    try:
        problem = LLMatcher.validate_grammar(LLMatcher.grammar_from_json_schema(schema))
    except ValueError as e:  # a schema that is not serialisable as JSON
        problem = str(e)
    if problem:
        raise SchemaError(f"{where}: not a usable JSON schema: {problem.strip()}")
    return schema


class CompiledSchemas:
    """Each backend's compiled JSON schemas, one per schema whatever its key order, the least recently used dropped
    past `kept`; safe across threads (the server compiles in its event loop's threads, decodes in its worker).

    >>> cache = CompiledSchemas(kept=1)
    >>> cache.get({"type": "object"}, lambda schema: "compiled")
    'compiled'
    """

    def __init__(self, kept: int = 64):
        self.kept, self.items, self.lock = kept, OrderedDict(), threading.Lock()

    def get(self, schema: dict, compile_schema: Callable[[dict], object]) -> object:
        """The compiled `schema`: from the cache, or checked (`check_schema`) and compiled by `compile_schema`."""
        key = schema_key(schema)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            check_schema(schema, "the JSON schema")
            compiled = self.items[key] = compile_schema(schema)
            while len(self.items) > self.kept:
                self.items.popitem(last=False)
            return compiled


def schema_key(schema: dict) -> str:
    """One string per schema, whatever its key order: what compiled grammars are cached by."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


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
    """Length of the longest end of `text` that is the start of a stop string (it may yet become one).

    Linear in the stop strings' lengths: only the last len(stop) - 1 characters can matter, and they run once
    through the stop's Knuth-Morris-Pratt automaton (comparing every prefix, as this did before, cost the square
    of the stop's length on every token: a 300,000-character stop held a model's worker for seconds per token).

    >>> pending_stop_prefix("five<|e", ["<|end|>", "eve"])
    3
    """
    longest = 0
    for stop in stops:
        tail = text[len(text) - min(len(text), len(stop) - 1):]
        start = tail.find(stop[:1]) if tail else -1  # in C: most tails hold no start of the stop at all
        if start >= 0:
            longest = max(longest, _matched_prefix(tail[start:], stop[: len(tail) - start]))
    return longest


def _matched_prefix(tail: str, stop: str) -> int:
    """Length of the longest end of `tail` that is a start of `stop` (no longer than `tail`): the state of stop's
    KMP automaton after reading `tail`."""
    fail, matched = _failure_table(stop), 0
    for char in tail:
        while matched and stop[matched] != char:
            matched = fail[matched - 1]
        if stop[matched] == char:
            matched += 1
    return matched


@lru_cache(maxsize=256)
def _failure_table(stop: str) -> tuple[int, ...]:
    """KMP's table: for each prefix of `stop`, the length of its longest proper prefix that is also its suffix."""
    fail, k = [0] * len(stop), 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = fail[k - 1]
        if stop[i] == stop[k]:
            k += 1
        fail[i] = k
    return tuple(fail)


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
    return set(eos_ids) | set(single_token_ids(tokenizer, stops))


class TextTracker:
    """One row's completion as its tokens arrive: the text cut at stop strings, what is shown, and how it ended.

    >>> tracker = TextTracker(tokenizer, eos_ids={2}, stops=["\\n\\n"])  # doctest: +SKIP
    >>> piece, finish = tracker.push(token_id, at_limit=False)  # doctest: +SKIP
    """

    def __init__(self, tokenizer, eos_ids, stops: list[str], stop_when: Callable[[str], bool] | None = None):
        self.tokenizer, self.stops, self.stop_when = tokenizer, list(stops), stop_when
        self.end_ids = stop_token_ids(tokenizer, eos_ids, self.stops)
        self.stream = IncrementalDecoder.for_tokenizer(tokenizer)
        self.tokens: list[int] = []
        self.text = ""  # what has been shown so far
        self.finish_reason: str | None = None

    def push(self, token: int, at_limit: bool, complete: bool = False) -> tuple[str, str | None]:
        """Add one generated token; return the newly showable text and "stop" / "length" once the row is done.

        `at_limit`: this is the last token the row may have (its max_tokens or the context is reached).
        `complete`: the answer is whole with this token (a JSON schema's constraint allows nothing after it).
        """
        self.tokens.append(token)
        at_end = token in self.end_ids
        if self.stream is not None:
            text = self.stream.text if at_end else self.stream.push(token)
        else:
            text = self.tokenizer.decode(self.tokens[:-1] if at_end else self.tokens, skip_special_tokens=True)
        cut = cut_at_stop(text, self.stops)
        stopped = complete or at_end or len(cut) < len(text) or bool(self.stop_when and self.stop_when(cut))
        done = stopped or at_limit
        if done and self.stream is not None and self.stream.held and len(cut) == len(text):
            # the row ends inside a character: show what decoding it whole shows (a U+FFFD), as before
            text = self.tokenizer.decode(self.tokens[:-1] if at_end else self.tokens, skip_special_tokens=True)
            cut = cut_at_stop(text, self.stops)
        safe = shown_length(cut, self.stops, final=done)
        piece = cut[len(self.text):safe] if safe > len(self.text) else ""
        self.text += piece
        if done:
            self.finish_reason = "stop" if stopped else "length"
        return piece, self.finish_reason


class IncrementalDecoder:
    """A row's text grown token by token with `tokenizers`' `DecodeStream` (cost per token independent of the
    row's length), instead of decoding every token again at each step. Its text equals `tokenizer.decode(tokens,
    skip_special_tokens=True)`; a token that ends in half a character adds nothing until the character is whole.

    >>> decoder = IncrementalDecoder.for_tokenizer(tokenizer)  # doctest: +SKIP
    >>> decoder.push(token_id)  # doctest: +SKIP
    """

    def __init__(self, backend_tokenizer):
        from tokenizers.decoders import DecodeStream

        self.backend, self.stream, self.text = backend_tokenizer, DecodeStream(skip_special_tokens=True), ""
        self.held = False

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "IncrementalDecoder | None":
        """One for a fast (Rust) tokenizer whose `decode` adds no clean-up of its own; None otherwise (the slow
        path decodes the whole row each step, exactly as before)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
            return None
        return cls(backend)

    def push(self, token: int) -> str:
        """Add `token`; return the whole text so far."""
        piece = self.stream.step(self.backend, token)
        self.held = piece is None  # bytes of an unfinished character wait for the next token
        if piece:
            self.text += piece
        return self.text
