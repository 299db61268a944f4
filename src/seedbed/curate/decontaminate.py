"""Decontamination: keep evaluation data out of training data.

A training record is dropped when it shares a word n-gram with any evaluation record: n = 13 by default, as
in GPT-3 (Brown et al. 2020, appendix C), over lower-cased words with punctuation removed. Evaluation records
shorter than n words are matched whole (their full word sequence), so a short benchmark question still
counts; below `min_words` they are ignored, since a 3-word phrase matches too much innocent text.

>>> index = EvalNgrams.from_texts(["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."], DecontaminateConfig())
>>> index.overlaps("Q: natalia sold clips to 48 of her friends in april and then she sold half as many")
True
>>> index.overlaps("Natalia sold clips to her friends.")
False
"""

from __future__ import annotations

import re

import xxhash

from seedbed.curate.config import DecontaminateConfig

_WORDS = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def _hashes(words: list[str], n: int) -> set[int]:
    return {xxhash.xxh64_intdigest(" ".join(words[i:i + n]).encode()) for i in range(len(words) - n + 1)}


class EvalNgrams:
    """Hashed n-grams of the evaluation sets (8 bytes each, so large benchmarks fit)."""

    def __init__(self, config: DecontaminateConfig):
        self.config = config
        self.by_length: dict[int, set[int]] = {}  # n-gram length -> hashes; short eval records add shorter lengths

    @classmethod
    def from_texts(cls, texts, config: DecontaminateConfig) -> "EvalNgrams":
        index = cls(config)
        for text in texts:
            words = _words(text)
            if len(words) < config.min_words:
                continue
            n = min(config.ngram, len(words))
            index.by_length.setdefault(n, set()).update(_hashes(words, n))
        return index

    @classmethod
    def from_files(cls, config: DecontaminateConfig) -> "EvalNgrams":
        from seedbed.data.readers import read_examples

        if not config.eval_sets:
            return cls(config)
        data = read_examples(config.eval_sets)
        # Both sides of an evaluation example: a leaked question is contamination, and so is a leaked answer.
        texts = [m["content"] for e in data.examples for m in e.messages] + [e.text for e in data.examples if e.text]
        return cls.from_texts(texts, config)

    def __len__(self) -> int:
        return sum(map(len, self.by_length.values()))

    def overlaps(self, text: str) -> bool:
        words = _words(text)
        return any(not hashes.isdisjoint(_hashes(words, n)) for n, hashes in self.by_length.items())
