"""The settings of every `seedbed data prepare` stage, one pydantic model per stage.

Pydantic and the standard library only, so that `seedbed.recipe` (and with it every CLI command) validates a
recipe without importing numpy, xxhash, phonenumbers or spaCy; a validator that needs a stage's library imports
it inside the validator. Each stage module (`normalise.py`, `pii.py`, ...) imports its config from here.

>>> PIIConfig(types=["email"]).types, DedupConfig().threshold
(['EMAIL'], 0.7)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


# ---- normalise ----


class NormaliseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the normalisation stage.")
    nfc: bool = Field(True, description="Unicode NFC composition.")
    whitespace: bool = Field(True, description="Collapse spaces and tabs, at most one blank line, strip line ends.")
    strip_markup: bool = Field(False, description="Remove HTML/XML tags and unescape entities (&amp; -> &).")
    strip_citations: bool = Field(True, description="Remove bracketed citation markers such as [42], [3-5], [citation needed].")


# ---- pii ----

# Overlaps are settled in this order: the earlier type keeps its span. Secrets and URL credentials first (an
# email regex would otherwise claim "password@host"), IBANs before cards (an IBAN's digits can pass Luhn),
# checksummed numbers and IPs before looser phone layouts ("220.73.52.110" is also a valid US number), and the
# statistical PERSON last.
PII_TYPES = ("SECRET", "URL_CREDENTIALS", "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "IP_ADDRESS", "PHONE",
             "ADDRESS", "PERSON")


class PIIConfig(BaseModel):
    """What the PII stage looks for and what it does with a record that has some."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    action: Literal["redact", "drop"] = Field(
        "redact", description="redact: replace each span with <TYPE>; drop: drop the whole record when any is found")
    types: list[str] = Field(list(PII_TYPES), description=f"which detectors run, from {', '.join(PII_TYPES)}")
    names: bool = Field(True, description="find person names with spaCy NER (the slow detector); false = "
                                          "pattern and checksum types only")
    phone_region: str = Field(
        "US", description="region for phone numbers written without a country code (ISO 3166 alpha-2)")
    # 2.5 bits/char rejects fillers ("aaaa1111" is 1.0, "xxxxxxxx1" 0.5); of 5,000 random passwords and keys
    # of 8+ characters drawn as in benchmarks/pii_eval.py, the lowest scored 2.65 ("D(E0GGGprD").
    secret_min_entropy: float = Field(
        2.5, ge=0, description="Shannon bits per character a value next to key/token/password needs to count as "
                               "a secret (known token formats are redacted regardless)")
    names_scope: Literal["candidate_windows", "full_text"] = Field(
        "candidate_windows", description="candidate_windows: run NER only on the few words around capitalised "
        "words that could be names (not sentence-initial common words, acronyms, weekdays); several times faster "
        "at the same recall, see BENCHMARKS.md. full_text: run NER on everything")
    ner_batch_size: int = Field(256, gt=0, description="texts per spaCy nlp.pipe batch")

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        upper = [t.upper() for t in types]
        unknown = [t for t, u in zip(types, upper) if u not in PII_TYPES]
        if unknown:
            raise ValueError(f"unknown PII type(s) {', '.join(map(repr, unknown))}; known: {', '.join(PII_TYPES)}")
        return list(dict.fromkeys(upper))

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        import phonenumbers  # here, not at the top: validating a recipe must not load the stage's libraries

        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {region!r}; use an ISO 3166 alpha-2 code such as 'US' or 'GB'")
        return region.upper()


# ---- toxicity ----

CATEGORIES = ("hate", "insult", "profanity", "sexual", "threat")

# Defaults put each category's bar between strengths: a strong or ambiguous term flags hate, insult, sexual and
# threat (0.5); profanity needs a strong term or a classifier probability of 0.9, because mild swearing ("damn",
# "what the hell") is everyday speech and the classifier is confident about it: on the project's labelled red-team
# turns it flags 33 of 513 non-toxic ones at 0.5 and 6 at 0.9, while the combined stage's F1 on the dev split stays
# within 0.63-0.66 from 0.5 to 0.95 (benchmarks/results/toxicity_eval.json, profanity_threshold_sweep).
DEFAULT_THRESHOLDS = {"hate": 0.5, "insult": 0.5, "profanity": 0.9, "sexual": 0.5, "threat": 0.5}


class ToxicityConfig(BaseModel):
    """Settings of the toxicity stage.

    >>> ToxicityConfig(thresholds={"hate": 0.3}).thresholds["hate"], ToxicityConfig().thresholds["profanity"]
    (0.3, 0.9)
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Score records for toxicity (off: every score is 0).")
    backends: list[Literal["wordlist", "classifier"]] = Field(
        default_factory=lambda: ["wordlist", "classifier"],
        description="wordlist (categorised terms and phrases) and/or classifier (alt-profanity-check's SVM).",
    )
    thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS),
        description=f"Per category, flag a record whose score is at or over this; categories: {', '.join(CATEGORIES)}. "
        "Categories left out keep their defaults.",
    )
    # 25 words, about one tweet of Davidson et al.'s 140-character era: the classifier was trained on tweets and
    # Wikipedia talk comments, and its TF-IDF vectors are L2-normalised, so one insult inside a 200-word record is
    # diluted below any threshold. Scoring 25-word windows (half overlapping) and keeping the maximum restores most
    # of it without new false positives (benchmark: recall on toxic turns inside ~1.1 KB of benign text).
    classifier_window_words: int = Field(
        25, ge=0, description="Classifier scores windows of this many words and keeps the maximum (0: whole text)."
    )
    allowed_terms: list[str] = Field(
        default_factory=list, description="Word-list terms never to match (e.g. 'breast' for medical data)."
    )
    extra_wordlist: str | None = Field(
        None, description="A TSV of more terms: term, category, strength (strong/ambiguous/mild) per line."
    )

    @field_validator("thresholds")
    @classmethod
    def _known_categories(cls, given: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(given) - set(CATEGORIES))
        if unknown:
            known = ", ".join(CATEGORIES)
            raise ValueError(f"unknown toxicity category {', '.join(map(repr, unknown))}; known: {known}")
        outside = sorted(k for k, v in given.items() if not 0.0 <= v <= 1.0)
        if outside:
            raise ValueError(f"thresholds must lie in [0, 1]; {', '.join(outside)} do not")
        return {**DEFAULT_THRESHOLDS, **given}

    @field_validator("backends")
    @classmethod
    def _some_backend(cls, given: list[str]) -> list[str]:
        if not given:
            raise ValueError("name at least one backend (wordlist, classifier), or set enabled: false")
        return list(dict.fromkeys(given))


# ---- quality and language ----


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the quality stage.")
    min_words: int = Field(3, ge=0, description="Fewest words (Gopher: 50, for web pages).")
    max_words: int = Field(100_000, ge=1, description="Most words (Gopher: 100,000).")
    min_mean_word_length: float = Field(2.0, ge=0, description="Gopher: 3; lower here because Q&A has many short words.")
    max_mean_word_length: float = Field(10.0, ge=0, description="Gopher: 10.")
    max_symbol_ratio: float = Field(0.1, ge=0, description="'#' runs and ellipses per word (Gopher: 0.1).")
    max_bullet_lines: float = Field(0.9, ge=0, le=1, description="Share of lines starting with a bullet (Gopher: 0.9).")
    max_ellipsis_lines: float = Field(0.3, ge=0, le=1, description="Share of lines ending with an ellipsis (Gopher: 0.3).")
    min_alpha_words: float = Field(0.8, ge=0, le=1, description="Share of words with a letter (Gopher: 0.8).")
    max_digit_ratio: float = Field(0.5, ge=0, le=1, description="Share of non-space characters that are digits (tables of numbers).")
    min_stop_words: int = Field(2, ge=0, description="English stop words required (Gopher: 2 of the, be, to, of, and, that, have, with); 0 for other languages.")
    max_duplicate_lines: float = Field(0.3, ge=0, le=1, description="Share of lines that repeat an earlier line (Gopher: 0.3).")
    max_top_ngram: dict[int, float] = Field(
        {2: 0.2, 3: 0.18, 4: 0.16}, description="Share of characters in the most frequent n-gram, by n (Gopher).")
    max_duplicate_ngrams: dict[int, float] = Field(
        {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="Share of characters in repeated n-grams, by n (Gopher).")
    repetition_min_words: int = Field(50, ge=0, description="Apply the n-gram repetition rules only to texts this long (Gopher's own minimum length): in a short answer, naming the subject three times is not spam.")
    boilerplate: bool = Field(True, description="Drop 'lorem ipsum' and 'enable JavaScript' pages (C4).")


class LanguageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run language identification.")
    keep: list[str] = Field(["en"], description="ISO 639-1 codes to keep; others are dropped as 'language:<code>'.")
    min_confidence: float = Field(0.5, ge=0, le=1, description="Below this the record is dropped as 'language:uncertain'.")
    min_words: int = Field(4, ge=0, description="Texts with fewer words are not judged (too short to tell); quality decides on them.")
    max_chars: int = Field(300, ge=50, description="Identify on the first N characters: enough for the decision (a few sentences), bounded cost.")


# ---- decontaminate ----


class DecontaminateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eval_sets: list[str] = Field(default_factory=list, description="Evaluation files whose text must not appear in training data (any readable shape).")
    ngram: int = Field(13, ge=4, description="Words per n-gram (GPT-3: 13).")
    min_words: int = Field(8, ge=1, description="Evaluation records shorter than this are not used (too likely to match by chance).")


# ---- dedup ----


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(True, description="Drop records whose normalised text repeats an earlier record's.")
    near: bool = Field(True, description="Drop near-duplicates found by MinHash LSH.")
    shingle_size: int = Field(3, ge=1, description="Words per shingle. 3 suits short instruction records; web-scale pipelines use 5 (datatrove).")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (datasketch's default, 128).")
    threshold: float = Field(0.7, gt=0, lt=1, description="Jaccard similarity at which two records are near-duplicates.")
    seed: int = Field(1, description="Seed of the MinHash permutations.")


# ---- balance and split ----


class BalanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the balance stage.")
    max_per_category: int | None = Field(None, ge=1, description="Keep at most this many records of any one category.")
    caps: dict[str, int] = Field(default_factory=dict, description="Per-category caps that override max_per_category.")
    min_per_category: int | None = Field(None, ge=1, description="Upsample smaller categories towards this many (train only).")
    max_repeat: int = Field(1, ge=1, description="Most copies of one record when upsampling; 1 never repeats (no oversampling).")
    seed: int = Field(42, description="Seed for choosing which records a cap keeps.")


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    validation_fraction: float = Field(0.05, ge=0, lt=1, description="Share of each category held out for validation.")
    seed: int = Field(42, description="Seed of the split.")
    stratify: bool = Field(True, description="Split each category separately, so validation has the same mix as train.")
