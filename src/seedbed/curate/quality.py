"""Quality heuristics and language identification: drop text a model should not learn from.

The rules are the Gopher quality filter's (Rae et al. 2021, "Scaling Language Models", appendix A.1.1) plus
two of C4's (Raffel et al. 2020: "lorem ipsum" and "enable JavaScript" boilerplate). Gopher's thresholds were
set for web pages; for instruction records, which are often one short question and answer, the minimum
length is lower (`min_words` 3 rather than 50). Every rule has its own reason, so report.json says which rule
dropped what.

>>> check_quality("the cat sat on the mat and that was that", QualityConfig())
>>> check_quality("buy buy buy buy buy buy buy buy buy buy buy buy", QualityConfig())
'no_stop_words'
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from seedbed.curate.config import LanguageConfig, QualityConfig

STOP_WORDS = frozenset("the be to of and that have with".split())  # Gopher's list
_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"[^\W\d_]")
_HASHES = re.compile(r"#+")
_BULLET = re.compile(r"^\s*(?:[-*•‣◦▪]|\d+[.)])\s")
_BOILERPLATE = re.compile(r"lorem ipsum|enable javascript|javascript (?:is disabled|must be enabled)", re.I)


def check_quality(text: str, config: QualityConfig) -> str | None:
    """The name of the first rule the text breaks, or None if it passes."""
    words = _WORD.findall(text)
    n = len(words)
    if n < config.min_words:
        return "too_short"
    if n > config.max_words:
        return "too_long"
    mean = sum(map(len, words)) / n
    if not config.min_mean_word_length <= mean <= config.max_mean_word_length:
        return "mean_word_length"
    # Runs of '#' count once: GSM8K's "#### 72" answer marker is one symbol, as a hashtag or a heading is.
    if (len(_HASHES.findall(text)) + text.count("...") + text.count("…")) / n > config.max_symbol_ratio:
        return "symbol_ratio"
    if sum(1 for w in words if _ALPHA.search(w)) / n < config.min_alpha_words:
        return "not_alphabetic"
    chars = len("".join(words))  # non-space characters, counted in C rather than one by one
    if chars and sum(map(text.count, "0123456789")) / chars > config.max_digit_ratio:
        return "digit_ratio"
    if config.min_stop_words and len(STOP_WORDS.intersection(w.lower() for w in words)) < config.min_stop_words:
        return "no_stop_words"
    lines = [line for line in text.split("\n") if line.strip()]
    if lines:
        if sum(bool(_BULLET.match(line)) for line in lines) / len(lines) > config.max_bullet_lines and len(lines) > 2:
            return "bullet_lines"
        if sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines) > config.max_ellipsis_lines:
            return "ellipsis_lines"
        if len(lines) > 2 and 1 - len(set(lines)) / len(lines) > config.max_duplicate_lines:
            return "duplicate_lines"
    if config.boilerplate and _BOILERPLATE.search(text):
        return "boilerplate"
    return _repetition(words, config) if n >= config.repetition_min_words else None


def _repetition(words: list[str], config: QualityConfig) -> str | None:
    lowered = [w.lower() for w in words]
    lengths = [len(w) for w in lowered]
    total = sum(lengths) or 1
    for n, limit in sorted(config.max_top_ngram.items()):
        if len(lowered) < n + 1:
            break
        gram, count = Counter(zip(*(lowered[i:] for i in range(n)))).most_common(1)[0]
        if count > 1 and count * sum(map(len, gram)) / total > limit:
            return f"top_{n}gram"
    limits = sorted(config.max_duplicate_ngrams.items())
    for n, limit in limits:
        if len(lowered) < 2 * n:
            break
        seen: set[tuple[str, ...]] = set()
        covered = bytearray(len(lowered))  # each word counted once, as Gopher counts characters, not n-grams
        for i, gram in enumerate(zip(*(lowered[i:] for i in range(n)))):
            if gram in seen:
                covered[i:i + n] = b"\1" * n
            else:
                seen.add(gram)
        share = sum(length for length, c in zip(lengths, covered) if c) / total
        if share > limit:
            return f"duplicate_{n}grams"
        # Text covered by repeated longer n-grams is covered by repeated shorter ones too, so the share can only
        # fall as n grows: below the smallest remaining limit, no longer n can fail.
        if share <= min(rest for m, rest in limits if m >= n):
            break
    return None


@lru_cache(maxsize=1)
def _identifier():
    # py3langid: langid.py's model (Lui & Baldwin 2012, 97 languages) with numpy inference; runs offline.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify_language(text: str, config: LanguageConfig) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's language.

    >>> identify_language("The quick brown fox jumps over the lazy dog.", LanguageConfig())[0]
    'en'
    """
    language, probability = _identifier().classify(text[: config.max_chars])
    return language, float(probability)


def check_language(text: str, config: LanguageConfig) -> tuple[str, str | None]:
    """(language label for the histogram, drop reason or None)."""
    if len(text.split(None, config.min_words)) < config.min_words:
        return "too_short_to_tell", None
    language, probability = identify_language(text, config)
    if probability < config.min_confidence:
        return "uncertain", "uncertain"
    return language, None if language in config.keep else language
