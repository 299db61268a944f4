"""Split text into overlapping chunks, cutting at paragraph, sentence or word boundaries where one is near.

Defaults: 800 characters (about 200 tokens, inside all-MiniLM-L6-v2's 256-token window) with 160 shared between
neighbours, so a fact cut by one boundary is whole in the next chunk.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Chunk:
    text: str
    start: int
    end: int


def chunk_text(text: str, size: int = 800, overlap: int = 160) -> list[Chunk]:
    """>>> [c.text for c in chunk_text("One. Two. Three.", size=10, overlap=0)]
    ['One. Two.', 'Three.']
    """
    if overlap >= size:
        raise ValueError("overlap must be smaller than the chunk size")
    chunks, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):  # prefer a natural boundary in the last third of the window
            window = text[start + size * 2 // 3 : end]
            for mark in ("\n\n", ". ", "\n", " "):
                at = window.rfind(mark)
                if at >= 0:
                    end = start + size * 2 // 3 + at + len(mark)
                    break
        piece = text[start:end].strip()
        if piece:
            chunks.append(Chunk(piece, start, end))
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return chunks
