"""Split text into overlapping chunks, cutting at a paragraph, sentence or word boundary near the size limit.

Defaults: 800 characters, about 200 English tokens, which fits all-MiniLM-L6-v2's 256-token window with room to
spare (text past the window is silently dropped by the embedder, so a larger chunk would lose its tail).
Neighbours share 160 characters (a fifth, one or two sentences), so a fact cut by one boundary is whole in the
next chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seedbed.errors import RetrievalError

CHUNK_SIZE = 800
OVERLAP = 160

# Where to cut, best first. A cut is looked for only in the last third of the window, so chunks stay near full.
BOUNDARIES = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraph break
    re.compile(r"[.!?][\"')\]]*\s+"),  # end of a sentence
    re.compile(r"\n\s*"),  # line break
    re.compile(r"\s+"),  # any space between words
)


@dataclass(frozen=True)
class Chunk:
    text: str  # equals the source text[start:end]
    start: int
    end: int


def chunk_text(text: str, size: int = CHUNK_SIZE, overlap: int = OVERLAP) -> list[Chunk]:
    """Overlapping chunks of at most `size` characters, each cut at the best boundary near its end.

    >>> [c.text for c in chunk_text("One two. Three four. Five six.", size=20, overlap=5)]
    ['One two. Three four.', 'four. Five six.']
    """
    if size < 1 or not 0 <= overlap < size:
        raise RetrievalError(f"need size >= 1 and 0 <= overlap < size (got size={size}, overlap={overlap})")
    chunks: list[Chunk] = []
    start = _skip_space(text, 0)
    while start < len(text):
        end = len(text) if len(text) - start <= size else _cut(text, start, start + size)
        stripped_end = len(text[start:end].rstrip()) + start
        chunks.append(Chunk(text[start:stripped_end], start, stripped_end))
        if end >= len(text):
            break
        # Step back by `overlap`, then forward to the next word start, so no chunk opens mid-word.
        next_start = _word_start(text, max(end - overlap, start + 1), end)
        start = _skip_space(text, next_start)
    return chunks


def _cut(text: str, start: int, limit: int) -> int:
    """The end of the chunk starting at `start`: just after the best boundary in the last third of the window."""
    floor = start + (limit - start) * 2 // 3
    for boundary in BOUNDARIES:
        ends = [m.end() for m in boundary.finditer(text, floor, limit + 1) if m.start() < limit]
        if ends:
            return min(ends[-1], limit)
    return limit  # one long word: cut it


def _word_start(text: str, at: int, end: int) -> int:
    if at == 0 or text[at - 1].isspace():
        return at
    space = re.compile(r"\s").search(text, at, end)
    return space.end() if space else at


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at
