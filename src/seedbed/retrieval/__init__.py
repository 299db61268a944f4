"""Retrieval for grounded answers: `seedbed index PATH... --out INDEX`, then `seedbed serve --rag NAME=INDEX`.

    documents.py  files to Documents (.txt .md .html .jsonl, .pdf with pypdf: [rag])
    chunking.py   overlapping chunks cut at paragraph, sentence or word boundaries
    embedder.py   all-MiniLM-L6-v2 sentence vectors (384, unit length), loaded once per process
    ranking.py    a safe FTS5 query and reciprocal rank fusion
    store.py      the index directory: SQLite (chunks, FTS5/BM25) + usearch (vectors)
    index.py      build_index, open_index, remove_from_index

>>> from seedbed.retrieval import build_index, open_index
>>> build_index(["docs/"], "runs/docs-index")  # doctest: +SKIP
>>> open_index("runs/docs-index").search("When was the Zorblax reactor commissioned?", k=3)  # doctest: +SKIP
"""

from __future__ import annotations

from seedbed.retrieval.embedder import Embedder
from seedbed.retrieval.index import IndexReport, build_index, open_index, remove_from_index
from seedbed.retrieval.store import Hit, Store

__all__ = ["Embedder", "Hit", "IndexReport", "Store", "build_index", "open_index", "remove_from_index"]
