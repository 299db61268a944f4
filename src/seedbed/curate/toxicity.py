"""Score text for toxicity (hate, insults, profanity, sexual content, threats) so `seedbed data prepare` can drop it.

Two offline backends, combined per category by taking the maximum:

- **wordlist**: better-profanity 0.7.0's list (MIT), sorted by Seedbed into categories and strengths, plus the
  project's own additions and threat / hate phrase patterns (`seedbed/assets/toxicity/`, see SOURCES.md there).
  Text is normalised first, so `F.U.C.K`, `sh1t`, `@ss` and `fuuuuck` match; terms match whole words only, so
  "assessment", "Scunthorpe", "cocktail" and "classic" do not.
- **classifier**: alt-profanity-check (MIT), a calibrated linear SVM on TF-IDF word features trained on Davidson
  et al. 2017's hate/offensive tweets and the Jigsaw Toxic Comment (Wikipedia talk page) data. It gives one
  general "offensive" probability, reported as the `profanity` category.

>>> scorer = ToxicityScorer(ToxicityConfig(backends=["wordlist"]))
>>> scores = scorer.score_many(["What a lovely day", "what the f.u.c.k"])
>>> scorer.flagged(scores[0]), scorer.flagged(scores[1])
([], ['profanity'])

Measured precision, recall and speed: `python benchmarks/toxicity_eval.py` (BENCHMARKS.md).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from seedbed.curate.config import CATEGORIES, ToxicityConfig

# How much one matched term says, by the strength the project gave it in wordlist.tsv (SOURCES.md says why):
# strong = offensive in nearly every use; ambiguous = usually offensive but has innocent senses ("cock", "prick");
# mild = vulgar or risqué but common in benign text ("damn", "nude").
STRENGTH_SCORES = {"strong": 1.0, "ambiguous": 0.6, "mild": 0.3}

ASSETS = files("seedbed") / "assets" / "toxicity"


class ToxicityScorer:
    """Scores texts per category in [0, 1] and says which categories cross their thresholds.

    >>> scorer = ToxicityScorer(ToxicityConfig(backends=["wordlist"]))
    >>> scorer.score_many(["You absolute b1tch"])[0]["insult"]
    1.0
    """

    def __init__(self, config: ToxicityConfig):
        self.config = config
        self.thresholds = config.thresholds
        self.wordlist = None
        if config.enabled and "wordlist" in config.backends:
            extra = read_wordlist(Path(config.extra_wordlist).read_text()) if config.extra_wordlist else []
            self.wordlist = Wordlist(read_wordlist(_asset("wordlist.tsv")) + extra, set(config.allowed_terms))
        self.classifier = None
        if config.enabled and "classifier" in config.backends:
            # Importing loads the pickled TF-IDF vectorizer and SVM (~2-3 s), so only when asked for. We call the two
            # objects behind `profanity_check.predict_prob` directly: the same numbers without its per-row
            # np.apply_along_axis, which costs a third of the classifier's time on 25-word windows.
            from profanity_check import profanity_check

            self.classifier = profanity_check.vectorizer, profanity_check.model

    def score_many(self, texts: list[str]) -> list[dict[str, float]]:
        """Category -> score for each text; one classifier call per batch, so pass chunks (~1000 texts)."""
        scores = [dict.fromkeys(CATEGORIES, 0.0) for _ in texts]
        if not self.config.enabled:
            return scores
        normalised = [without_innocent_phrases(normalise(t)) for t in texts]
        if self.wordlist is not None:
            for s, tokens in zip(scores, normalised):
                for category, value in self.wordlist.score(tokens).items():
                    s[category] = max(s[category], value)
        if self.classifier is not None:
            for s, value in zip(scores, self._classify(normalised)):
                s["profanity"] = max(s["profanity"], value)
        return scores

    def flagged(self, scores: dict[str, float]) -> list[str]:
        """Categories whose score is at or over their threshold, sorted."""
        return sorted(c for c, v in scores.items() if c in self.thresholds and v >= self.thresholds[c])

    def _classify(self, normalised: list[list[str]]) -> list[float]:
        # The classifier reads de-obfuscated text: its own README says it misses "f4ck" and "b1tch".
        windows, owner = [], []
        size = self.config.classifier_window_words
        for i, tokens in enumerate(normalised):
            for window in _windows(tokens, size):
                windows.append(" ".join(window))
                owner.append(i)
        best = [0.0] * len(normalised)
        if windows:
            vectorizer, model = self.classifier
            for i, p in zip(owner, model.predict_proba(vectorizer.transform(windows))[:, 1]):  # P(offensive)
                best[i] = max(best[i], float(p))
        return best


def _windows(tokens: list[str], size: int) -> list[list[str]]:
    if not tokens:
        return []  # empty text: nothing to be offensive; the SVM would still return its prior
    if size == 0 or len(tokens) <= size:
        return [tokens]
    step = max(1, size // 2)
    return [tokens[i : i + size] for i in range(0, len(tokens) - size + step, step)]


# ---- normalisation: undo the common ways people hide words ----

# Leetspeak as better-profanity's README lists it (p0rn, h4NDjob, b*tCh); applied only inside words that also
# hold letters, so numbers stay numbers.
LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "i", "+": "t"}
)
# Three or more single characters joined by the same kind of separator: "f.u.c.k", "f u c k", "s-h-i-t", "f*u*c*k".
SPELLED_OUT = re.compile(r"(?<![\w@$])[\w@$](?:[ ._*-]{1,2}[\w@$!]){2,}(?![\w@$])")
SEPARATOR = re.compile(r"[ ._*-]")
STRETCHED = re.compile(r"([^\W\d_])\1{2,}")
DOUBLED = re.compile(r"([^\W\d_])\1+")
DOUBLED_VOWEL = re.compile(r"([aeiouy])\1+")
TOKEN = re.compile(r"[\w@$*]+(?:[!|+]+[\w@$*]+)*[!+]*")


def normalise(text: str) -> list[str]:
    """Lower-case words with obfuscations undone: accents, leetspeak, spelled-out letters.

    Stretched letters ("fuuuuck") are left for `Wordlist`, which tries each such word with runs shortened.

    >>> normalise("F.U.C.K this sh1t, it's fun! Café")
    ['fuck', 'this', 'shit', 'it', 's', 'fun', 'cafe']
    """
    if not text.isascii():
        text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = SPELLED_OUT.sub(lambda m: SEPARATOR.sub("", m.group()), text.casefold())
    tokens = []
    for raw in TOKEN.findall(text):
        if raw.isalpha():
            tokens.append(raw)
            continue
        raw = raw.strip("!_*")
        if any(ch.isalpha() for ch in raw):
            raw = raw.translate(LEET)
        tokens.extend(w for w in raw.split("_") if w)
    return tokens


# ---- the word list and patterns ----


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def read_wordlist(text: str) -> list[tuple[str, str, str]]:
    """(term, category, strength) rows of a TSV like wordlist.tsv; '#' starts a comment.

    >>> read_wordlist("# term\\tcategory\\tstrength\\nbad word\\tinsult\\tmild\\n")
    [('bad word', 'insult', 'mild')]
    """
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 3 or fields[1] not in CATEGORIES or fields[2] not in STRENGTH_SCORES:
            raise ValueError(f"word list line {number}: want term<TAB>category<TAB>strength, got {line!r}")
        rows.append((fields[0], fields[1], fields[2]))
    return rows


class Wordlist:
    """Whole-word matching of categorised terms and phrase patterns on normalised tokens."""

    def __init__(self, rows: list[tuple[str, str, str]], allowed: set[str] = frozenset()):
        allowed_norm = {" ".join(normalise(a)) for a in allowed}
        self.terms: dict[str, dict[str, float]] = {}  # normalised term -> category -> score
        for term, category, strength in rows:
            key = " ".join(normalise(term))
            if key and key not in allowed_norm:
                by_category = self.terms.setdefault(key, {})
                by_category[category] = max(by_category.get(category, 0.0), STRENGTH_SCORES[strength])
        self.words = {k for k in self.terms if " " not in k}
        self.starts: dict[str, set[int]] = {}  # first word of a phrase -> the phrase lengths starting with it
        self.wildcards: dict[int, list[str]] = {}  # length -> one-word terms, for "f**k"-style tokens
        for k in self.terms:
            if " " in k:
                self.starts.setdefault(k.split(" ")[0], set()).add(k.count(" ") + 1)
            else:
                self.wildcards.setdefault(len(k), []).append(k)
        slurs = tuple(k for k, c in self.terms.items() if c.get("hate", 0) >= STRENGTH_SCORES["ambiguous"])
        self.patterns = _compile_patterns(_asset("patterns.txt"), slurs)

    def score(self, tokens: list[str]) -> dict[str, float]:
        """Per category, 1 - prod(1 - s) over the distinct terms found: one strong term gives 1.0, three mild 0.66."""
        # Sets first: most words of most texts are on no list, and set algebra skips them at C speed.
        distinct = set(tokens)
        joined = " " + " ".join(tokens) + " "
        found = {t: self.terms[t] for t in distinct & self.words}
        for token in distinct - self.words:
            for shorter in _shortened(token):  # stretched: "booooobs" -> "boobs", "fuuuck" -> "fuck"
                if shorter in self.words:
                    found[shorter] = self.terms[shorter]
            # A slur's plural ("kill all the faggots"), which the list spells out only for some; other categories'
            # plurals stay unmatched, because surnames end that way too ("Cummings").
            singular = token[:-1] if token.endswith("s") and len(token) > 3 else ""
            if singular in self.words and "hate" in self.terms[singular]:
                found[singular] = self.terms[singular]
        if "*" in joined:
            for token in distinct:
                if "*" in token:
                    found.update((t, self.terms[t]) for t in self._wildcard(token))
        if not distinct.isdisjoint(self.starts):
            for i in [i for i, token in enumerate(tokens) if token in self.starts]:
                for n in self.starts[tokens[i]]:
                    phrase = " ".join(tokens[i : i + n])
                    if phrase in self.terms:
                        found[phrase] = self.terms[phrase]
        for name, (category, value, regex, needs) in self.patterns.items():
            # A pattern can only match if each of its words (or one of each slot's first words) is present.
            if all(not distinct.isdisjoint(n) for n in needs) and regex.search(joined):
                found[name] = {category: value}
        result: dict[str, float] = {}
        for by_category in found.values():
            for category, value in by_category.items():
                result[category] = 1 - (1 - result.get(category, 0.0)) * (1 - value)
        return {c: round(v, 6) for c, v in result.items()}

    def _wildcard(self, token: str) -> list[str]:
        # "f**k", "b*tch": each * stands for one letter; a token of only stars and one letter means nothing.
        if sum(ch.isalpha() for ch in token) < 2:
            return []
        shape = re.compile(re.escape(token).replace(r"\*", "[a-z]"))
        return [t for t in self.wildcards.get(len(token), []) if shape.fullmatch(t)]


@lru_cache(maxsize=1 << 16)  # words repeat across records; the cache saves two regex passes per word
def _shortened(token: str) -> tuple[str, ...]:
    """Other forms of an unlisted word to look up: runs of 3+ letters cut to two ("fuuuuck" -> "fuuck"), then runs
    of any length cut to one ("fuuck" -> "fuck"), but a doubled consonant is left alone when nothing was
    stretched: English spells words and names that way ("Bonner" is not "boner", "Cummins" not "cumins")."""
    if not DOUBLED.search(token):
        return ()
    two = STRETCHED.sub(r"\1\1", token)
    return two, DOUBLED.sub(r"\1", token) if two != token else DOUBLED_VOWEL.sub(r"\1", token)


@lru_cache(maxsize=1)
def _innocent_phrases() -> tuple[re.Pattern, frozenset[str]]:
    lines = _asset("innocent_phrases.txt").splitlines()
    phrases = {" ".join(normalise(p)) for p in lines if p.strip() and not p.startswith("#")}
    listed = {" ".join(normalise(term)) for term, _, _ in read_wordlist(_asset("wordlist.tsv"))}
    regex = re.compile("(?<= )(?:" + "|".join(map(re.escape, sorted(phrases, key=len, reverse=True))) + ")(?= )")
    return regex, frozenset(w for p in phrases for w in p.split() if w in listed)


def without_innocent_phrases(tokens: list[str]) -> list[str]:
    """Drop phrases that are innocent as a whole though a word of them is listed (both backends read the result).

    >>> without_innocent_phrases(["a", "chink", "in", "the", "armour", "again"])
    ['a', 'again']
    """
    regex, listed_words = _innocent_phrases()
    if listed_words.isdisjoint(tokens):
        return tokens
    return regex.sub(" ", " " + " ".join(tokens) + " ").split()


# Up to three words, none a negation: "i will never hurt you" must not read as a threat.
FILLER = r"(?:(?!(?:not|never|no|t|dont|wont|cant)\b)\S+ ){0,3}"


@lru_cache(maxsize=4)  # one compile per process, however many scorers the pipeline makes
def _compile_patterns(text: str, slurs: tuple[str, ...]) -> dict[str, tuple[str, float, re.Pattern, list]]:
    """Pattern name -> (category, score, regex, words it needs); the file's syntax is described in its header."""
    slots: dict[str, str] = {"slur": "|".join(re.escape(s) for s in sorted(slurs, key=len, reverse=True))}
    firsts: dict[str, frozenset[str]] = {"slur": frozenset(s.split()[0] for s in slurs)}
    compiled = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            name, _, alternatives = line[1:].partition("=")
            words = sorted({" ".join(normalise(a)) for a in alternatives.split("|") if a.strip()}, key=len)[::-1]
            slots[name.strip()] = "|".join(map(re.escape, words))  # longest first, so "my mom" beats "my"
            firsts[name.strip()] = frozenset(w.split()[0] for w in words)
            continue
        head, _, body = line.partition(":")
        category, strength = head.split()
        parts, needs = [], []
        for word in body.split():
            if word == "~":
                parts.append(FILLER)
            elif word.startswith("@"):
                parts.append(f"(?:{slots[word[1:]]}) ")
                needs.append(firsts[word[1:]])
            else:
                parts.append(re.escape(word) + " ")
                needs.append(frozenset([word]))
        regex = re.compile(" " + "".join(parts))
        compiled[f"pattern {number}: {body.strip()}"] = (category, STRENGTH_SCORES[strength], regex, needs)
    return compiled

