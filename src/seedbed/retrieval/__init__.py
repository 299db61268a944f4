"""Retrieval for grounded answers: `seedbed index PATH... --out INDEX`, then `seedbed serve --rag NAME=INDEX`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from seedbed.retrieval.documents import read_documents
from seedbed.retrieval.embedder import Embedder
from seedbed.retrieval.store import Hit, Store

__all__ = ["Embedder", "Hit", "IndexReport", "build_index", "open_index", "remove_from_index"]


@dataclass
class IndexReport:
    added: int
    replaced: int
    unchanged: int
    chunks: int
    seconds: float


def build_index(paths: list[str], out: str, chunk_size: int = 800, overlap: int = 160,
                progress: bool = True) -> IndexReport:
    """Index documents into `out`, replacing the chunks of documents that changed."""
    from rich.console import Console
    from rich.progress import track

    started = time.perf_counter()
    documents = read_documents(paths)
    store = Store(out, chunk_size, overlap)
    counts = {"added": 0, "replaced": 0, "unchanged": 0}
    for doc in track(documents, description="indexing", console=Console(stderr=True), disable=not progress):
        counts[store.add_document(doc.source, doc.text)] += 1
    store.save()
    return IndexReport(**counts, chunks=store.chunk_count(), seconds=round(time.perf_counter() - started, 2))


def open_index(path: str) -> Store:
    from pathlib import Path

    if not (Path(path) / "index.json").is_file():
        raise ValueError(f"{path}: not a Seedbed index (build one with: seedbed index FILES --out {path})")
    return Store(path)


def remove_from_index(out: str, sources: list[str]) -> None:
    store = open_index(out)
    for source in sources:
        store.delete_source(source)
    store.save()
