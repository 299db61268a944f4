"""Toxicity scoring: the right category for plain and obfuscated offensive words, nothing for innocent words that
contain them, thresholds per category, batch scoring equal to one by one, and the classifier alone.

Offensive strings are kept few and mild; the full list is in seedbed/assets/toxicity/wordlist.tsv."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from seedbed.curate.toxicity import ASSETS, CATEGORIES, ToxicityConfig, ToxicityScorer, normalise, read_wordlist

# A GSM8K train question (openai/grade-school-math, MIT), as benign padding.
BENIGN = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
          "How many clips did Natalia sell altogether in April and May?")


@pytest.fixture(scope="module")
def wordlist() -> ToxicityScorer:
    return ToxicityScorer(ToxicityConfig(backends=["wordlist"]))


@pytest.fixture(scope="module")
def combined() -> ToxicityScorer:
    return ToxicityScorer(ToxicityConfig())  # both backends, the defaults the pipeline uses


def flags(scorer: ToxicityScorer, text: str) -> list[str]:
    return scorer.flagged(scorer.score_many([text])[0])


def test_plain_offensive_words_flag_their_category(wordlist):
    assert flags(wordlist, "this is shit") == ["profanity"]
    assert flags(wordlist, "you bitch") == ["insult"]
    assert flags(wordlist, "go back home, chink") == ["hate"]
    assert flags(wordlist, "I'm getting horny") == ["sexual"]
    assert flags(wordlist, "I will hurt you") == ["threat"]
    assert flags(wordlist, "Why are Polish people so stupid?") == ["hate"]  # a demeaning generalisation, no slur


def test_every_score_is_a_category_in_unit_range(combined):
    for scores in combined.score_many(["fuck this", BENIGN, ""]):
        assert set(scores) == set(CATEGORIES)
        assert all(0.0 <= v <= 1.0 for v in scores.values())


@pytest.mark.parametrize(
    "hidden", ["sh1t", "$h!t", "s.h.i.t", "s-h-i-t", "s h i t", "S_H_I_T", "shiiiiit", "sh*t", "ＳＨＩＴ", "shït"]
)
def test_obfuscated_profanity_is_caught(wordlist, hidden):
    assert flags(wordlist, f"what a load of {hidden}!") == ["profanity"]


def test_normalise_undoes_leetspeak_and_spelling_out():
    assert normalise("F.U.C.K this sh1t, it's fun! Café") == ["fuck", "this", "shit", "it", "s", "fun", "cafe"]
    assert normalise("costs $5 in 2024") == ["costs", "$5", "in", "2024"]  # numbers stay numbers


@pytest.mark.parametrize("innocent", [
    "assessment", "Scunthorpe", "cocktail", "classic", "Dickens", "Middlesex and Sussex", "cockpit", "shiitake",
    "therapist", "analysis", "Penistone", "arsenal", "Homo sapiens", "a chink in the armour", "Moby Dick", "Find me the book The Van Dyke Show",
    "the cock crowed at dawn", "I will never hurt you", "kill the process and restart it", BENIGN,
])
def test_innocent_words_are_not_flagged(combined, innocent):
    assert flags(combined, innocent) == []


def test_thresholds_per_category_change_the_outcome():
    text = "damn, that hurt"  # "damn" is mild profanity: 0.3 on the word list
    assert flags(ToxicityScorer(ToxicityConfig(backends=["wordlist"])), text) == []
    strict = ToxicityScorer(ToxicityConfig(backends=["wordlist"], thresholds={"profanity": 0.3}))
    assert flags(strict, text) == ["profanity"]
    lenient = ToxicityScorer(ToxicityConfig(backends=["wordlist"], thresholds={"sexual": 0.7}))
    assert flags(lenient, "I'm getting horny") == []  # "horny" is ambiguous (0.6): under 0.7
    assert lenient.thresholds["hate"] == 0.5  # categories left out keep their defaults


def test_unknown_category_is_a_validation_error_naming_it():
    with pytest.raises(ValidationError, match="violence"):
        ToxicityConfig(thresholds={"violence": 0.5})
    with pytest.raises(ValidationError, match="hate"):
        ToxicityConfig(thresholds={"hate": 1.5})
    with pytest.raises(ValidationError):
        ToxicityConfig(backends=["keywords"])
    with pytest.raises(ValidationError):
        ToxicityConfig(treshold=0.5)  # a typo is an error, not a silently ignored key


def test_score_many_on_a_batch_equals_one_by_one(combined):
    texts = [BENIGN, "you absolute b1tch", "", BENIGN * 6 + " shut up you worthless moron. " + BENIGN * 6, "F.U.C.K"]
    batch = combined.score_many(texts)
    assert batch == [combined.score_many([t])[0] for t in texts]


def test_classifier_alone_scores_offensive_text_high_and_benign_low():
    scorer = ToxicityScorer(ToxicityConfig(backends=["classifier"]))
    rude, benign, spelled = scorer.score_many(["you are a stupid idiot, fuck off", BENIGN, "F.U.C.K you"])
    assert rude["profanity"] > 0.9 and benign["profanity"] < 0.1
    assert spelled["profanity"] > 0.9  # it reads the de-obfuscated text
    assert all(rude[c] == 0.0 for c in CATEGORIES if c != "profanity")  # it only knows "offensive"
    assert scorer.flagged(rude) == ["profanity"]


def test_classifier_windows_find_an_insult_inside_a_long_record():
    text = BENIGN * 6 + " you are a stupid idiot, fuck off. " + BENIGN * 6  # ~1.7 KB
    windowed = ToxicityScorer(ToxicityConfig(backends=["classifier"]))
    whole = ToxicityScorer(ToxicityConfig(backends=["classifier"], classifier_window_words=0))
    assert windowed.score_many([text])[0]["profanity"] > 0.9
    assert whole.score_many([text])[0]["profanity"] < 0.5  # diluted by the TF-IDF norm


def test_disabled_scores_nothing():
    scorer = ToxicityScorer(ToxicityConfig(enabled=False))
    assert scorer.score_many(["fuck"]) == [dict.fromkeys(CATEGORIES, 0.0)]


def test_allowed_terms_and_an_extra_wordlist(tmp_path):
    allowed = ToxicityScorer(ToxicityConfig(backends=["wordlist"], allowed_terms=["damn", "horny"],
                                            thresholds={"profanity": 0.3}))
    assert flags(allowed, "damn, I'm horny") == []
    extra = tmp_path / "mine.tsv"
    extra.write_text("# our own\nsnollygoster\tinsult\tstrong\n")
    scorer = ToxicityScorer(ToxicityConfig(backends=["wordlist"], extra_wordlist=str(extra)))
    assert flags(scorer, "you SNOLLYGOSTER") == ["insult"]
    extra.write_text("snollygoster\tnasty\tstrong\n")
    with pytest.raises(ValueError, match="line 1"):
        ToxicityScorer(ToxicityConfig(backends=["wordlist"], extra_wordlist=str(extra)))


def test_bundled_lists_hold_every_upstream_entry_once():
    # better-profanity 0.7.0's list has 916 entries; each is categorised or excluded with a reason (SOURCES.md).
    def rows(name: str) -> list[list[str]]:
        return [line.split("\t") for line in (ASSETS / name).read_text().splitlines() if not line.startswith("#")]

    kept = [row[0] for row in rows("wordlist.tsv") if row[3] == "better-profanity-0.7.0"]
    excluded = [row[0] for row in rows("excluded.tsv")]
    assert len(kept) + len(excluded) == 916 and not set(kept) & set(excluded)
    assert len(read_wordlist((ASSETS / "wordlist.tsv").read_text())) == len(kept) + 20  # + Seedbed's own rows
