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
    fix_mojibake: bool = Field(True, description="Repair text decoded with the wrong encoding ('MÃºsica' -> 'Música') "
                               "with ftfy's encoding fixes only (quotes, ligatures and widths are left as written).")


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
    public_names: bool = Field(
        True, description="Leave public names alone where a request names them: artists and titles after 'play', "
        "'a track by', 'the ... playlist'; places after 'in'/'at' or 'weather for'; services after 'on' in a media "
        "request; names inside a title (spaCy WORK_OF_ART). Unknown words spaCy calls a place, organisation or "
        "product are not taken for names in such sentences. false: every name NER finds is redacted")

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
    # Fine-tuning trains on the answer: a red-team request with a clean refusal, or a request naming a song
    # "Bitch Please II" whose answer copies the title into a slot (SNIPS: 14-20 such requests of 13,784 were
    # dropped when the whole record was scored), teaches nothing toxic. Such records are kept and counted.
    scope: Literal["answers", "record"] = Field(
        "answers", description="answers: score what a record with answers teaches the model to say (its answers, "
        "less the words they copy from the request; a record without answers is scored whole); record: score "
        "all its text (drop toxic requests too).")
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


# Responses that say there is no response: Alpaca-cleaned (gururise/AlpacaDataCleaned, "Empty outputs", "N/A
# outputs", "<No Output>", and the "<noinput>" family of its "inconsistent input field") found these in Alpaca.
TRIVIAL_RESPONSES = ("n/a", "na", "nan", "null", "undefined", "<no output>", "<nooutput>", "no output", "nooutput",
                     "<no input>", "<noinput>", "no input", "noinput", "<no answer>", "no answer", "tbd", "todo")
# Boilerplate refusals and AI disclaimers. The datasets that removed them (ShareGPT_Vicuna_unfiltered's
# optional_clean.py, WizardLM_alpaca_evol_instruct_70k_unfiltered's wizardlm_clean.py) match phrases anywhere; we
# match the disclaimers anywhere and the refusals only where a response opens with one, so that an answer that
# says "I cannot stress enough..." halfway through is kept. Apostrophes are matched straight or curly.
REFUSAL_PHRASES = ("as an ai language model", "as a large language model", "as an ai model", "as an ai assistant",
                   "i am an ai language model", "i'm an ai language model", "i'm just an ai", "i am just an ai")
REFUSAL_OPENINGS = ("i'm sorry, but i can", "i'm sorry, but i cannot", "i'm sorry, i can't", "i'm sorry, i cannot",
                    "i am sorry, but i can", "i apologize, but i can", "i apologise, but i can", "sorry, but i can",
                    "sorry, i can't", "i cannot help with", "i can't help with", "i cannot assist with",
                    "i can't assist with", "i'm unable to help", "i am unable to help", "i'm not able to help",
                    "i cannot fulfill", "i can't fulfill", "i cannot comply", "i can't comply", "i won't be able to help")


class QualityConfig(BaseModel):
    """Quality rules, chosen by the record's shape: Gopher's and C4's web-document rules for `text` (pretraining)
    records; rules of instruction data for instruction and chat records (`rules: by_shape`).

    >>> QualityConfig().rules, QualityConfig(rules="document").rules
    ('by_shape', 'document')
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the quality stage.")
    rules: Literal["by_shape", "document", "instruction"] = Field(
        "by_shape", description="by_shape: document rules (Gopher, C4) for text records, instruction rules for "
        "instruction and chat records; document or instruction: one set for every record.")
    max_words: int = Field(100_000, ge=1, description="Most words, every shape (Gopher: 100,000).")
    # ---- document rules (text records)
    min_words: int = Field(3, ge=0, description="Document rule: fewest words (Gopher: 50, for web pages).")
    min_mean_word_length: float = Field(2.0, ge=0, description="Document rule. Gopher: 3; lower here because Q&A has many short words.")
    max_mean_word_length: float = Field(10.0, ge=0, description="Document rule. Gopher: 10.")
    max_symbol_ratio: float = Field(0.1, ge=0, description="Document rule: '#' runs and ellipses per word (Gopher: 0.1).")
    max_bullet_lines: float = Field(0.9, ge=0, le=1, description="Document rule: share of lines starting with a bullet (Gopher: 0.9).")
    max_ellipsis_lines: float = Field(0.3, ge=0, le=1, description="Document rule: share of lines ending with an ellipsis (Gopher: 0.3).")
    min_alpha_words: float = Field(0.8, ge=0, le=1, description="Document rule: share of words with a letter (Gopher: 0.8).")
    max_digit_ratio: float = Field(0.5, ge=0, le=1, description="Document rule: share of non-space characters that are digits (tables of numbers).")
    min_stop_words: int = Field(2, ge=0, description="Document rule: English stop words required (Gopher: 2 of the, be, to, of, and, that, have, with); 0 for other languages.")
    max_duplicate_lines: float = Field(0.3, ge=0, le=1, description="Document rule: share of lines that repeat an earlier line (Gopher: 0.3).")
    max_top_ngram: dict[int, float] = Field(
        {2: 0.2, 3: 0.18, 4: 0.16}, description="Document rule: share of characters in the most frequent n-gram, by n (Gopher).")
    max_duplicate_ngrams: dict[int, float] = Field(
        {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="Document rule: share of characters in repeated n-grams, by n (Gopher).")
    repetition_min_words: int = Field(50, ge=0, description="Apply the n-gram repetition rules only to texts this long (Gopher's own minimum length): in a short answer, naming the subject three times is not spam.")
    boilerplate: bool = Field(True, description="Document rule: drop 'lorem ipsum' and 'enable JavaScript' pages (C4).")
    # ---- instruction rules (instruction and chat records), each its own drop reason
    trivial_responses: list[str] = Field(
        list(TRIVIAL_RESPONSES), description="Instruction rule (empty_response): answers that say there is no answer "
        "(Alpaca-cleaned's 'N/A', '<noinput>', '<No Output>'), compared without case and surrounding punctuation; an "
        "answer with no letter or digit at all is empty too.")
    copy_min_share: float = Field(
        0.8, ge=0, le=1, description="Instruction rule (copies_instruction): drop an answer that repeats the "
        "instruction, or is a passage of it at least this share of the instruction's length (1: identical only). "
        "The context/input is not compared: extracting from it is the task.")
    truncation: bool = Field(True, description="Instruction rule (truncated_response): drop answers cut off.")
    truncation_min_words: int = Field(
        8, ge=1, description="Answers shorter than this are never judged truncated (labels, numbers, names).")
    clean_end_share: float = Field(
        0.8, ge=0, le=1, description="An answer whose last sentence lacks its full stop while its earlier ones have "
        "theirs is truncated only where the data's answers normally end cleanly: at least this share of the prose "
        "answers of its chunk (answers ending in a hanging comma, colon or article are truncated regardless).")
    refusals: bool = Field(True, description="Instruction rule (refusal): drop boilerplate refusals and AI "
                                            "disclaimers (turn off for safety data whose refusals are the point).")
    refusal_phrases: list[str] = Field(list(REFUSAL_PHRASES), description="Refusal/disclaimer phrases matched anywhere in an answer (case-insensitive).")
    refusal_openings: list[str] = Field(list(REFUSAL_OPENINGS), description="Refusal phrases matched where an answer opens (case-insensitive).")
    max_length_ratio: float | None = Field(
        None, gt=0, description="Instruction rule (length_ratio): drop an answer more than this many times as many "
        "words as its prompt (instruction + context), when the answer has at least ratio_min_words. Off by default: "
        "'Write a story' earns its long answer.")
    min_length_ratio: float | None = Field(
        None, gt=0, description="Instruction rule (length_ratio): drop an answer under this share of its prompt's "
        "words, when the prompt has at least ratio_min_words. Off by default: a one-word label for a long passage "
        "(classification, extraction) is a good answer.")
    ratio_min_words: int = Field(50, ge=1, description="The longer side needs this many words before a length ratio "
                                                       "counts.")


class LanguageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run language identification.")
    keep: list[str] = Field(["en"], description="ISO 639-1 codes to keep; others are dropped as 'language:<code>'.")
    min_confidence: float = Field(0.5, ge=0, le=1, description="Below this the language is uncertain.")
    min_words: int = Field(4, ge=0, description="Records with fewer words are not judged (too short to tell); quality decides on them.")
    uncertain_min_words: int = Field(
        25, ge=0, description="An uncertain record is dropped ('language:uncertain') only from this many words up: "
        "on a short request with foreign names the identifier is unsure though the record is fine.")
    short_min_confidence: float = Field(
        0.9, ge=0, le=1, description="A record shorter than uncertain_min_words is dropped as another language only "
        "at this confidence: on a one-line request the identifier often says Nigerian Pidgin ('pcm') at 0.5-0.8 "
        "for plain English, while a real German or French sentence of that length scores 0.95 or more.")
    max_chars: int = Field(300, ge=50, description="Identify on the first N characters of each of the record's prose "
                                                  "fields together (JSON answers are not language and are left out): "
                                                  "every field has its say, at bounded cost.")


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
    prompt_threshold: float = Field(
        0.9, gt=0, le=1, description="Two records with answers (instruction, chat) are near-duplicates when their "
        "prompts are at least this similar and their answers at least `threshold`: a request that differs in one "
        "word ('the weather in Detroit' / 'in Detroit Lakes', 'rate this album a 1' / 'a 5') asks for something "
        "else, while the same request with a reworded answer is the same example twice.")
    seed: int = Field(1, description="Seed of the MinHash permutations.")
    template_share: float = Field(
        0.1, gt=0, le=1, description="A shingle found in at least this share of the records (a prompt template, "
        "a system prompt, the keys of a JSON answer) is left out when comparing records: what every record shares "
        "is no evidence that two of them are duplicates. 1 keeps every shingle.")
    template_min_records: int = Field(
        10, ge=2, description="...and in at least this many distinct records, so that in a small file a few "
        "near-duplicates are not taken for a template.")


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
