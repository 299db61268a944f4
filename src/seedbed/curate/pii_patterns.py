"""Pattern and checksum detectors for personal data, one function per type, each yielding `(start, end)`.

Every detector is a precompiled regex plus a validator (Luhn, mod-97, SSA rules, phonenumbers metadata,
Shannon entropy) and a cheap prefilter, so ordinary text costs a few regex scans. `pii.py` runs them, resolves
overlaps and redacts; person names (spaCy) live there too.

>>> list(find_emails("write to ada@example.org today"))
[(9, 24)]
>>> luhn_ok("4111 1111 1111 1111"), iban_ok("DE89 3704 0044 0532 0130 00"), ssn_ok("078-05-1121")
(True, True, True)
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from typing import Iterator

import phonenumbers

Found = Iterator[tuple[int, int]]

# --- checksums and validity rules --------------------------------------------------------------------------


def luhn_ok(number: str) -> bool:
    """Luhn mod-10 check (ISO/IEC 7812-1 annex B) over the digits of `number`.

    >>> luhn_ok("4111-1111-1111-1111"), luhn_ok("4111-1111-1111-1112")
    (True, False)
    """
    digits = [int(c) for c in number if c.isdigit()]
    total = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
    return bool(digits) and total % 10 == 0


# IBAN length by country, from the SWIFT IBAN Registry. Unlisted countries fall back to the
# ISO 13616 bounds (15..34) so that a newly added country is not silently missed.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_ok(iban: str) -> bool:
    """ISO 13616 check: registry length for the country, then mod-97 of the rearranged number equals 1.

    >>> iban_ok("GB82 WEST 1234 5698 7654 32"), iban_ok("GB82 WEST 1234 5698 7654 33")
    (True, False)
    """
    s = iban.replace(" ", "").upper()
    if len(s) != IBAN_LENGTHS.get(s[:2], len(s)) or not 15 <= len(s) <= 34 or not s.isalnum():
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def ssn_ok(ssn: str) -> bool:
    """US Social Security number validity (SSA, "SSN Randomization", 2011): area not 000, 666 or 900-999,
    group not 00, serial not 0000.

    >>> ssn_ok("123-45-6789"), ssn_ok("666-45-6789"), ssn_ok("123-00-6789")
    (True, False, False)
    """
    d = "".join(c for c in ssn if c.isdigit())
    area, group, serial = d[:3], d[3:5], d[5:]
    return len(d) == 9 and area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def shannon_entropy(token: str) -> float:
    """Bits per character of the token's own character distribution.

    >>> round(shannon_entropy("aaaa"), 2), round(shannon_entropy("abcd"), 2)
    (0.0, 2.0)
    """
    n = len(token)
    return sum(c / n * math.log2(n / c) for c in Counter(token).values()) if n else 0.0


# Speed note: Python's `re` scans fast (a C loop over a character set) only when a pattern starts with a plain
# character or set. So patterns below start with one (`\d`, `[A-Z]`) and check what precedes it with a
# lookbehind placed after it (`\d(?<![\w.]\d)`), and case-insensitive keyword patterns run only after a
# substring test on the lowercased text says a keyword is there.

# --- email, URL credentials, IP ----------------------------------------------------------------------------

EMAIL = re.compile(
    r"[A-Za-z0-9](?<![\w.+%-][A-Za-z0-9])[A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")


def find_emails(text: str) -> Found:
    if "@" in text:
        yield from (m.span() for m in EMAIL.finditer(text))


# scheme://user:password@host (RFC 3986 userinfo); only the userinfo is redacted, the host stays readable.
URL_CREDENTIALS = re.compile(r"[A-Za-z](?<!\w[A-Za-z])[A-Za-z0-9+.-]{1,15}://([^\s:/?#@\[\]]+:[^\s/?#@\[\]]+)@")


def find_url_credentials(text: str) -> Found:
    if "://" in text:
        yield from (m.span(1) for m in URL_CREDENTIALS.finditer(text))


# Four dotted numbers not inside a longer dotted run (OIDs, 4+-part versions like Chrome 122.0.6261.94).
IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)")
IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")


def _octets_ok(dotted: str) -> bool:
    return all(int(o) <= 255 and (o == "0" or o[0] != "0") for o in dotted.split("."))


def find_ip_addresses(text: str) -> Found:
    if text.count(".") >= 3:
        yield from (m.span() for m in IPV4.finditer(text) if _octets_ok(m.group()))
    if not IPV6_HINT.search(text):
        return
    for m in IPV6.finditer(text):
        candidate = m.group()
        # "1::2" is a valid address but more often a slice; ask for 4+ hex digits in 2+ groups (fe80::1 passes)
        groups = [g for g in candidate.split(":") if g]
        if len(groups) < 2 or sum(len(g) for g in groups) < 4:
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield m.span()


# --- numbers: cards, IBAN, SSN, phones ---------------------------------------------------------------------

# 12-19 digits (ISO/IEC 7812 PANs; 12 is Maestro), optionally in groups split by one space or dash; not glued to
# words, decimals or longer dashed ids.
CARD = re.compile(r"\d(?<![\w.,-]\d)(?:[ -]?\d){11,18}(?![\w]|[.,-]\d)")
IBAN_HEAD = re.compile(r"[A-Z]{2}\d{2} $")  # "DE89 3704 ...": the digits of an IBAN that failed its checksum


CARD_CUE = re.compile(r"(?i:card|visa|mastercard|maestro|amex|american express|discover|debit|credit|\bcc\b)")


def _card_grouping_ok(groups: list[str]) -> bool:
    """Printed layouts: fours with a shorter last group (Visa, Mastercard, Discover, JCB, Maestro), 4-6-5
    (Amex), 4-6-4 (Diners), or unseparated."""
    sizes = [len(g) for g in groups]
    if len(sizes) == 1:
        return True
    return sizes in ([4, 6, 5], [4, 6, 4]) or (all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4)


def find_credit_cards(text: str) -> Found:
    for m in CARD.finditer(text):
        s = m.group()
        if len({c for c in s if not c.isdigit()}) > 1 or not _card_grouping_ok(re.split("[ -]", s)):
            continue
        # First digit = ISO/IEC 7812 major industry identifier: 1 (UATP, JCB's 1800) to 6 are the card
        # networks; ISBNs and EANs starting 9 are not.
        if not (s[0] in "123456" and luhn_ok(s)) or IBAN_HEAD.search(text, max(0, m.start() - 5), m.start()):
            continue
        # a bare 12-digit run (Maestro's shortest) is more often a tracking number: only with a cue word before
        if len(s) > 12 or CARD_CUE.search(text, max(0, m.start() - 40), m.start()):
            yield m.span()


IBAN = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")


def find_ibans(text: str) -> Found:
    for m in IBAN.finditer(text):
        s = m.group()
        # the match may have swallowed a following 4-letter word ("... 00 THEN"): try shorter ends too
        ends = [len(s)] + [i for i in range(len(s) - 1, 14, -1) if s[i] == " "]
        for end in ends:
            if iban_ok(s[:end]):
                yield m.start(), m.start() + end
                break


SSN = re.compile(r"\d(?<![\w-]\d)\d{2}([- ])\d{2}\1\d{4}(?![\w]|-\d)")
SSN_AFTER_KEYWORD = re.compile(r"(?i:\bssn|social\s+security(?:\s+(?:number|no\.?|#))?)[\s:#=]{0,4}(\d{9})\b")


def find_ssns(text: str) -> Found:
    for m in SSN.finditer(text):
        if ssn_ok(m.group()):
            yield m.span()
    lower = text.lower()
    if "ssn" in lower or "social" in lower:  # bare 9 digits only when labelled: too many 9-digit ids
        yield from (m.span(1) for m in SSN_AFTER_KEYWORD.finditer(text) if ssn_ok(m.group(1)))


# Prefilter: a run of digits with phone separators, not glued to ids (ORD-2024-..., #123, v1.2) or decimals.
PHONE_RUN = re.compile(r"[+(\d](?<![\w+./#-][+(\d])[\d \t().\-/]{5,23}\d(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?"
                       r"(?![\w]|[./-]\d)")
EXTENSION = re.compile(r"\s?(?:x|ext\.?|extension)\s?\d{1,6}$")
DATE_LIKE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{2,4}")
DOTTED_QUAD = re.compile(r"\d+(?:\.\d+){3,}")  # IPv4 addresses and versions; dotted phones use 3 or 5 groups
# Unmistakable layouts whose digits metadata may call unassigned: North American 3-3-4 and trunk-0 national
# numbers in groups (UK/EU/AU style). Both need separators; bare digit strings must pass metadata validation
# or follow a cue word.
NANP_SHAPE = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}")
TRUNK_ZERO_SHAPE = re.compile(r"(?:\(0\d{1,4}\)[ .-]?|0\d{1,4}[ .-])\d{2,8}(?:[ .-]\d{2,8}){0,3}")
# Presidio's phone recognizer raises confidence on the same kind of context words.
PHONE_CUE = re.compile(r"(?i:\b(?:phone|tel|telephone|mobile|cell|call|dial|fax|whatsapp|sms|text|reach|contact)"
                       r"\b|\b(?:my|his|her|their|your|our)\s+number\b)")


def find_phones(text: str, region: str = "US") -> Found:
    """Phone numbers: regex prefilter, then `phonenumbers` (valid in `region`, or possible when written in
    international form), then the two unmistakable layouts above, then any 7-15 digits after a cue word."""
    for m in PHONE_RUN.finditer(text):
        run = m.group()
        bare = EXTENSION.sub("", run)
        digits = sum(c.isdigit() for c in bare)
        if not 7 <= digits <= 15 or DATE_LIKE.fullmatch(bare) or DOTTED_QUAD.fullmatch(bare):
            continue
        international = run.startswith("+") or (run.startswith("00") and not run.startswith("000"))
        if run.startswith("00") and international:
            run = " +" + run[2:]  # 00 is the international prefix outside North America; same length
        leniency = phonenumbers.Leniency.POSSIBLE if international else phonenumbers.Leniency.VALID
        # a bare run of 12+ digits is an id (tracking numbers) unless written internationally or cued
        spans = [] if digits > 11 and bare.isdigit() and not international else [
            (m.start() + p.start, m.start() + p.end)
            for p in phonenumbers.PhoneNumberMatcher(run, region, leniency=leniency)]
        if not spans and (NANP_SHAPE.fullmatch(bare) or (TRUNK_ZERO_SHAPE.fullmatch(bare) and 9 <= digits <= 12)
                          or PHONE_CUE.search(text, max(0, m.start() - 40), m.start())):
            spans = [m.span()]
        yield from spans


# --- secrets -----------------------------------------------------------------------------------------------

# Published token formats (each vendor's docs): AWS access key ids, GitHub classic and fine-grained tokens,
# OpenAI/Anthropic keys, Stripe secret/restricted keys, Slack tokens, Google API keys, JWTs (base64url '{"').
SECRET_FORMATS = re.compile("|".join([
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api03-)?)?[A-Za-z0-9_-]{20,}",
    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
]))
SECRET_MARKERS = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ghp_", "gho_", "ghu_", "ghs_",
                  "ghr_", "github_pat_", "sk-", "k_live_", "k_test_", "xox", "AIza", "eyJ")
# A whole PEM block; when its END line is missing, the base64 body that follows the BEGIN line.
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"
                         r"(?:[\s\S]{0,16384}?-----END [A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=:,\s-]*)")
SECRET_KEYWORDS = ("key", "secret", "token", "passw", "passphrase", "pwd", "credential", "bearer", "authoriz")
SECRET_KEYWORD = re.compile(
    r"(?i:\b(?:api[_\s-]?key|apikey|access[_\s-]?key(?:[_\s-]?id)?|secret(?:[_\s-]?(?:access[_\s-]?)?key)?"
    r"|client[_\s-]?secret|(?:auth|access|refresh|api|bearer)?[_\s-]?token|password|passwd|passphrase|pwd"
    r"|credentials?|bearer|authorization)\b)"
    r"[\"']?[ \t]*(?:[:=]|=>|:=|\bis\b)?[ \t]*(?:Bearer[ \t]+)?[\"'`]?([^\s\"'`<>,;]{8,256})")


def find_secrets(text: str, min_entropy: float = 2.5) -> Found:
    if any(marker in text for marker in SECRET_MARKERS):
        yield from (m.span() for m in SECRET_FORMATS.finditer(text))
    if "PRIVATE KEY" in text:
        yield from (m.span() for m in PRIVATE_KEY.finditer(text))
    lower = text.lower()
    if not any(k in lower for k in SECRET_KEYWORDS):
        return
    for m in SECRET_KEYWORD.finditer(text):
        start, token = m.start(1), m.group(1).rstrip(".:!?")
        if token.endswith(")") and "(" not in token:  # "(token: abc123)": the bracket is prose
            token = token[:-1]
        # a value next to key/token/password counts when it mixes letters and digits and is not repetitive
        if (len(token) >= 8 and any(c.isalpha() for c in token) and any(c.isdigit() for c in token)
                and shannon_entropy(token) >= min_entropy and not token.lower().startswith(("http", "www."))):
            yield start, start + len(token)


# --- postal addresses --------------------------------------------------------------------------------------

# Street types: USPS Publication 28 appendix C1 (primary names and standard abbreviations), UK street words
# (Royal Mail addressing guide), and the Australian road types of AS/NZS 4819 less those that are everyday
# adjectives or verbs (Top, Little, Lower, Upper, Follow, Part, Edge, Front, End). Matched case-insensitively
# but must start with a capital.
STREET_SUFFIXES = """Alley Aly Annex Anx Arcade Arc Avenue Ave Av Bayou Byu Beach Bch Bend Bnd Bluffs? Blf Bottom Btm
Boulevard Blvd Branch Br Bridge Brg Brooks? Brk Burgs? Bg Bypass Byp Camp Cp Canyon Cyn Cape Cpe Causeway Cswy
Centers? Centre Ctr Circles? Cir Cliffs? Clf Club Clb Commons? Cmn Corners? Cor Course Crse Courts? Ct Cts Coves? Cv
Creek Crk Crescent Cres Crest Crst Crossing Xing Crossroads? Xrd Curve Curv Dale Dl Dam Dm Divide Dv Drives? Dr
Estates? Est Expressway Expy Extensions? Ext Falls? Fls Ferry Fry Fields? Fld Flats? Flt Fords? Frd Forest Frst
Forges? Frg Forks? Frk Fort Ft Freeway Fwy Gardens? Gdn Gdns Gateway Gtwy Glens? Gln Greens? Grn Groves? Grv
Harbors? Hbr Haven Hvn Heights Hts Highway Hwy Hills? Hl Hollow Holw Inlet Inlt Islands? Is Isle Junctions? Jct Keys?
Ky Knolls? Knl Lakes? Lk Land Landing Lndg Lane Ln Lights? Lgt Loaf Lf Locks? Lck Lodge Ldg Loop Mall Manors? Mnr
Meadows? Mdw Mews Mills? Ml Mission Msn Motorway Mtwy Mount Mt Mountains? Mtn Neck Nck Orchard Orch Oval Overpass
Opas Parks? Parkways? Pkwy Pass Passage Psge Path Pike Pines? Pne Place Pl Plains? Pln Plaza Plz Points? Pt Ports?
Prt Prairie Pr Radial Radl Ramp Ranch Rnch Rapids? Rpd Rest Rst Ridges? Rdg River Riv Roads? Rd Route Rte Row Rue Run
Shoals? Shl Shores? Shr Skyway Skwy Springs? Spg Spurs? Squares? Sq Station Sta Stravenue Stra Stream Strm Streets?
St Summit Smt Terrace Ter Throughway Trwy Trace Trce Track Trak Trafficway Trfy Trail Trl Trailer Trlr Tunnel Tunl
Turnpike Tpke Underpass Upas Unions? Un Valleys? Vly Viaduct Via Views? Vw Villages? Vlg Ville Vl Vista Vis Walks?
Wall Ways? Wells? Wls
Close Gate Wharf Quay Yard Rise Parade Promenade Embankment Esplanade Circus Chase Grove
Access Alleyway Amble Anchorage Approach Artery Basin Brace Brae Break Broadway Brow Byway Centreway Circlet Circuit
Colonnade Concourse Copse Corso Courtyard Cross Crossway Cruiseway Cutting Dell Deviation Dip Distributor Driveway
Entrance Fairway Firetrail Footway Foreshore Formation Frontage Gap Glade Grange Gully Highroad Interchange
Intersection Laneway Lees Line Link Lookout Meander Mew Nook Outlook Parklands Pathway Piazza Plateau Pocket Quad
Quadrangle Quadrant Quays Ramble Range Reach Reserve Retreat Ride Ridgeway Ring Riverway Riviera Roadside Roadway
Ronde Rosebowl Rotary Round Siding Slope Sound Stairs Steps Strand Strip Subway Tarn Thoroughfare Tollway Tor Towers
Triangle Trunkway Turn Vale Villas Wade Walkway Wynd""".split()
_SUFFIX = "|".join(sorted(STREET_SUFFIXES, key=len, reverse=True))
_STATES = ("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND "
           "OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY AS GU MP PR VI AA AE AP "  # USPS state codes
           "NSW VIC QLD SA TAS ACT NT "  # Australia Post
           "AB BC MB NB NL NS NU ON PE QC SK YT").split()  # Canada Post
_UNIT_WORDS = "Apt|Apartment|Suite|Ste|Unit|Flat|Studio|Room|Rm|Floor|Fl|Level|Bldg|Building"
# The unit word ends at a word boundary: "Ste" is Suite in "Ste 200", not the start of "Stelvio National Park"
# ("Fl" of "Florida Caverns State Park" likewise).
_UNIT = rf"(?:(?:{_UNIT_WORDS})\b|#)\.?[ \t]*#?[ \t]*[A-Za-z0-9-]{{1,6}}"
_NUMBER = r"\d{1,6}[A-Za-z]?(?:[/-]\d{1,6}[A-Za-z]?)?"
_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d{1,3}(?:st|nd|rd|th))"
_CITY = r"[A-Z][A-Za-z'’.-]*(?:[ \t]+[A-Z][A-Za-z'’.-]*){0,3}"
_POSTCODE = (r"\d{5}(?:-\d{4})?|\d{4}"  # US ZIP(+4); AU 4 digits
             r"|[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}"  # UK postcode (Royal Mail format)
             r"|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d")  # Canadian postal code
_TAIL = (rf"(?:,?\s+{_CITY}){{1,2}},?[ \t]+(?:(?:{'|'.join(_STATES)})\b(?:,?[ \t]+(?:{_POSTCODE}))?"
         rf"|(?:{_POSTCODE}))\b")
_STREET = (rf"(?:(?:[NSEW]|N[EW]|S[EW])\.?[ \t]+)?(?:{_WORD}[ \t]+){{1,4}}(?=[A-Z])(?i:{_SUFFIX})\b\.?"
           rf"(?:[ \t]+(?:[NS][EW]|[NSEW])\b)?(?:,?[ \t]+{_UNIT})?(?:{_TAIL})?")
# "5594 Johnson Circle Apt. 547, Brittanymouth, HI 48205", "8/747 Stanley Parkway"; the first digit is matched
# before the lookbehind (speed note above), so the house number's pattern is written from its second character.
_NUMBER_REST = r"\d{0,5}[A-Za-z]?(?:[/-]\d{1,6}[A-Za-z]?)?"
STREET_ADDRESS = re.compile(rf"\d(?<![\w.,$/-]\d){_NUMBER_REST},?[ \t]+{_STREET}")
# "Flat 5, 12 High Street", "Studio 83F, Bennett Parkway"
UNIT_FIRST_ADDRESS = re.compile(rf"\b{_UNIT},?\s+(?:{_NUMBER},?[ \t]+)?{_STREET}")
# PO boxes and US military (APO/FPO/DPO) addresses, as USPS Publication 28 writes them
PO_BOX = re.compile(rf"\bP\.?[ \t]?O\.?[ \t]+Box[ \t]+\d{{1,6}}(?:{_TAIL})?")
MILITARY = re.compile(r"\b(?:(?:USNS|USNV|USS|USCGC)[ \t]+[A-Z][a-z]+"
                      r"|(?:PSC|CMR|Unit)[ \t]+\d{3,5},?[ \t]+Box[ \t]+\d{3,5}),?\s+[AFD]PO[ \t]+A[AEP][ \t]+\d{5}\b")
UNIT_HINT = re.compile(rf"{_UNIT_WORDS}|#")


def find_addresses(text: str) -> Found:
    yield from (m.span() for m in STREET_ADDRESS.finditer(text))
    if UNIT_HINT.search(text):
        yield from (m.span() for m in UNIT_FIRST_ADDRESS.finditer(text))
    if "Box" in text:
        yield from (m.span() for m in PO_BOX.finditer(text))
    if "PO A" in text:
        yield from (m.span() for m in MILITARY.finditer(text))
