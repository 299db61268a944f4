"""Normalisation: the first stage, so that later stages (hashing, n-grams, filters) see text in one form.

Mojibake repaired first (text that went through the wrong encoding, "MÃºsica" for "Música", "â€™" for "’"), with
ftfy's encoding fixes only: curly quotes, ligatures and full-width characters are left as the writer typed them.
Then Unicode NFC (composed accents, so "é" typed two ways hashes the same), whitespace (runs of spaces and tabs to
one space, at most one blank line, no trailing spaces; newlines are kept because code and lists need them),
optionally markup stripped (HTML tags and entities) and bracketed citation markers like `[42]` or `[citation
needed]` removed (Wikipedia-derived text is full of them).

>>> normalise("Cafe\\u0301  au   lait [12]. <b>Hot</b>&amp;sweet", NormaliseConfig(strip_markup=True))
'Café au lait. Hot&sweet'
>>> normalise("Play ClÃ¡sicos del Hip Hop EspaÃ±ol ‘now’", NormaliseConfig())
'Play Clásicos del Hip Hop Español ‘now’'
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

from seedbed.curate.config import NormaliseConfig

_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_LINE_END = re.compile(r" +\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_TAG = re.compile(r"<(?:/?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?|!--.*?--)>", re.S)
# [12], [3, 4], [5-7], [a], [citation needed], [note 2]: what Wikipedia dumps leave in the text.
_CITATION = re.compile(r"\s?\[(?:\d+(?:\s*[,\u2013-]\s*\d+)*|[a-z]|citation needed|clarification needed|note \d+)\]")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")


@lru_cache(maxsize=1)
def _mojibake_fixer():
    import ftfy

    # Encoding repairs only (fix_encoding, restore_byte_a0, replace_lossy_sequences, decode_inconsistent_utf8,
    # fix_c1_controls, fix_surrogates stay on); everything that would rewrite correct text is off.
    config = ftfy.TextFixerConfig(unescape_html=False, remove_terminal_escapes=False, fix_latin_ligatures=False,
                                  fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
                                  remove_control_chars=False, normalization=None, explain=False)
    return lambda text: ftfy.fix_text(text, config)


def repair_mojibake(text: str) -> str:
    """`text` with encoding mix-ups undone; pure ASCII text cannot hold mojibake and is returned at once.

    >>> repair_mojibake("Ã\\x89xitos EspaÃ±a"), repair_mojibake("“quoted” ﬁne")
    ('Éxitos España', '“quoted” ﬁne')
    """
    return text if text.isascii() else _mojibake_fixer()(text)


def normalise(text: str, config: NormaliseConfig) -> str:
    if config.fix_mojibake:
        text = repair_mojibake(text)
    if config.nfc:
        text = unicodedata.normalize("NFC", text)
    if config.strip_markup:
        text = html.unescape(_TAG.sub("", text))
    if config.strip_citations:
        text = _CITATION.sub("", text)
    if config.whitespace:
        text = _ZERO_WIDTH.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
        text = _BLANK_LINES.sub("\n\n", _LINE_END.sub("\n", _SPACES.sub(" ", text))).strip()
    return text
