"""Quality heuristics and language identification: drop records a model should not learn from.

Rules are chosen by the record's shape (`QualityConfig.rules`), because what is wrong with a web page and what is
wrong with an instruction example differ:

- **document rules**, for `text` (pretraining) records: the Gopher quality filter's (Rae et al. 2021, "Scaling
  Language Models", appendix A.1.1) plus two of C4's (Raffel et al. 2020: "lorem ipsum" and "enable JavaScript"
  boilerplate). Gopher's thresholds were set for web pages; the minimum length is lower here (`min_words` 3, not
  50). Applied to a one-line instruction they are wrong: "Play new music from Liang Wern Fook" has no Gopher stop
  word, and a GSM8K answer repeats its numbers.
- **instruction rules**, for instruction and chat records, judged on each answer (`records.turns`):
  `empty_response` (no letter or digit, or an answer that says there is none: Alpaca-cleaned's "N/A",
  "<noinput>", "<No Output>"), `copies_instruction` (the answer repeats the instruction), `refusal` (boilerplate
  refusals and "As an AI language model" disclaimers, which the unfiltered ShareGPT and WizardLM releases removed),
  `truncated_response` (see `ending`), and `length_ratio` (off unless configured).

Every rule has its own reason, so report.json says which rule dropped what.

>>> check_quality("the cat sat on the mat and that was that", QualityConfig())
>>> check_quality("buy buy buy buy buy buy buy buy buy buy buy buy", QualityConfig())
'no_stop_words'
>>> check_turns([Turn("Name a primary colour.", "", "N/A")], QualityConfig())
'empty_response'
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Iterable

from seedbed.curate.config import LanguageConfig, QualityConfig
from seedbed.curate.records import Item, Turn, is_json, text_of, texts, turns

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


# ---- instruction rules ------------------------------------------------------------------------------------

_PLAIN = re.compile(r"\w+")
_EDGE_PUNCTUATION = " \t\n.,;:!?\"'()[]<>{}*-_`"
_CURLY = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})
# How an answer can end. Terminal punctuation (closing quotes and brackets included) or a digit ("#### 72", "42")
# ends cleanly. A comma, colon, semicolon, dash, open bracket or a word that cannot end an English sentence
# (article, conjunction, possessive) leaves it hanging: cut off, whatever the rest of the data does.
_TERMINAL = tuple('.!?…"\'”’)]}>*`»。！？')
_HANGING_MARKS = tuple(",;:(-–—/&")
HANGING_WORDS = frozenset("the a an and or but nor whose their its our your my very such because although than "
                          "if".split())
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*\s")
_LIST_LINE = re.compile(r"^\s*(?:[-*•‣◦▪+>|#]|\d+[.)]|[A-Za-z][.)]\s)")
CLEAN_END_MIN_RESPONSES = 20  # fewer prose answers in a chunk than this: too few to say how the data ends


def check_record(item: Item, config: QualityConfig, clean_ends_normal: bool = False) -> str | None:
    """The name of the first rule the record breaks, or None: document rules for `text` records and instruction
    rules for the others (`config.rules: by_shape`); `clean_ends_normal` as `clean_ends_are_normal` says of the
    record's chunk."""
    document = config.rules == "document" or (config.rules == "by_shape" and item["shape"] == "text")
    if document:
        return check_quality(text_of(item), config)
    if sum(len(_WORD.findall(t)) for t in texts(item)) > config.max_words:
        return "too_long"
    return check_turns(turns(item), config, clean_ends_normal)


def check_turns(record_turns: list[Turn], config: QualityConfig, clean_ends_normal: bool = False) -> str | None:
    """The first instruction rule any answer of the record breaks, or None."""
    for turn in record_turns:
        response = turn.response.strip()
        if _empty(response, config):
            return "empty_response"
        if _copies(turn, config.copy_min_share):
            return "copies_instruction"
        if config.refusals and _refusal(response, config):
            return "refusal"
        if config.truncation:
            end = ending(response, config.truncation_min_words)
            if end == "hanging" or (end == "open" and clean_ends_normal):
                return "truncated_response"
        if (config.max_length_ratio or config.min_length_ratio) and _ratio_breaks(turn, config):
            return "length_ratio"
    return None


def clean_ends_are_normal(responses: Iterable[str], config: QualityConfig) -> bool:
    """Whether these answers (a chunk's) normally end cleanly: at least `clean_end_share` of the prose answers
    long enough to judge end with terminal punctuation, and there are enough of them to say so."""
    judged = [e for e in (ending(r.strip(), config.truncation_min_words) for r in responses) if e is not None]
    return len(judged) >= CLEAN_END_MIN_RESPONSES and judged.count("clean") >= config.clean_end_share * len(judged)


def ending(response: str, min_words: int = 8) -> str | None:
    """How a stripped answer ends: "clean" (terminal punctuation or a digit), "hanging" (a comma, colon, dash or
    article left hanging: cut off), "open" (the last sentence stops on a letter though earlier ones end with a
    full stop: cut off mid-sentence or mid-word where the data's answers end cleanly), "unpunctuated" (prose
    without a full stop anywhere: a style), or None when the answer is not judged: shorter than `min_words`, JSON
    or code, or ending in a list item, a short line (a signature, a title) or a URL.

    >>> ending("Paris is the capital of France. It is known for the Eiffel To")
    'open'
    >>> ending("Here are three ideas you could try this weekend with the kids:")
    'hanging'
    >>> ending('{"intent": "PlayMusic", "slots": [{"name": "artist", "value": "Liang Wern Fook"}]}') is None
    True
    """
    words = _WORD.findall(response)
    if len(words) < min_words or _structured(response):
        return None
    if response.endswith(_TERMINAL) or response[-1].isdigit():
        return "clean"
    last_line = response.rsplit("\n", 1)[-1].strip()
    last_words = _WORD.findall(last_line)
    if len(last_words) >= 3 and (last_line.endswith(_HANGING_MARKS)
                                 or last_words[-1].lower().strip(_EDGE_PUNCTUATION) in HANGING_WORDS):
        return "hanging"
    if _LIST_LINE.match(last_line) or len(last_words) < 4 or any(c in last_words[-1] for c in "/@.") \
            or not last_line[-1].isalpha():
        return None
    return "open" if _SENTENCE_END.search(response) else "unpunctuated"


def _structured(response: str) -> bool:
    """JSON, or text holding a fenced code block: their endings are not prose."""
    return "```" in response or is_json(response)


def _empty(response: str, config: QualityConfig) -> bool:
    if not any(c.isalnum() for c in response):
        return True
    trivial = {t.lower() for t in config.trivial_responses}
    return response.lower() in trivial or response.strip(_EDGE_PUNCTUATION).lower() in \
        {t.strip(_EDGE_PUNCTUATION) for t in trivial}


def _plain(text: str) -> str:
    return " ".join(_PLAIN.findall(text.lower()))


def _copies(turn: Turn, min_share: float) -> bool:
    """The answer is the instruction (or the whole prompt) again, or a passage of the instruction that is most of
    it. Instructions of fewer than 3 words are not judged ("Hello" -> "Hello!")."""
    response, instruction = _plain(turn.response), _plain(turn.instruction)
    if not response or len(instruction.split()) < 3:
        return False
    if response in (instruction, _plain(turn.instruction + " " + turn.context)):
        return True
    return min_share < 1 and f" {response} " in f" {instruction} " and len(response) >= min_share * len(instruction)


def _refusal(response: str, config: QualityConfig) -> bool:
    lowered = response.lower().translate(_CURLY)
    return any(p.lower().translate(_CURLY) in lowered for p in config.refusal_phrases) or \
        lowered.startswith(tuple(p.lower().translate(_CURLY) for p in config.refusal_openings))


def _ratio_breaks(turn: Turn, config: QualityConfig) -> bool:
    answer = len(_WORD.findall(turn.response))
    prompt = len(_WORD.findall(turn.instruction)) + len(_WORD.findall(turn.context))
    if config.max_length_ratio and answer >= config.ratio_min_words and answer > config.max_length_ratio * max(prompt, 1):
        return True
    return bool(config.min_length_ratio and prompt >= config.ratio_min_words
                and answer < config.min_length_ratio * prompt)


# ---- language ---------------------------------------------------------------------------------------------


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


def check_language(text: str | list[str], config: LanguageConfig) -> tuple[str, str | None]:
    """(language label for the histogram, drop reason or None), judged on all of a record's prose fields together
    (the first `max_chars` of each; a JSON answer is structure, not language, and is left out). A record too short
    to tell is not judged; an uncertain one is dropped only when it is long enough that uncertainty means mixed or
    garbled text (`uncertain_min_words`), and a short one is dropped as another language only when the identifier
    is sure (`short_min_confidence`).

    >>> check_language(["Play Maggot Brain by Albano Carrisi", '{"intent": "PlayMusic"}'], LanguageConfig())
    ('uncertain', None)
    """
    fields = [text] if isinstance(text, str) else [t for t in text if not is_json(t)]
    joined = "\n".join(f[: config.max_chars] for f in fields if f)
    n_words = len(joined.split(None, max(config.min_words, config.uncertain_min_words)))
    if n_words < config.min_words:
        return "too_short_to_tell", None
    language, probability = _identifier().classify(joined)
    short = n_words < config.uncertain_min_words
    if probability < config.min_confidence or (short and language not in config.keep
                                                and probability < config.short_min_confidence):
        return "uncertain", None if short else "uncertain"
    return language, None if language in config.keep else language
