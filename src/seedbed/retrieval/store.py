"""The persistent index: chunk text and BM25 in SQLite (FTS5), vectors in usearch, fused by reciprocal rank.

Why these: usearch is a small wheel with a persistent index that supports removal by key (re-indexing a changed
file replaces its chunks); SQLite keeps chunk text and metadata transactionally and gives BM25 through FTS5.
sqlite-vec would keep both in one file, but this CPython's sqlite3 cannot load extensions; faiss-cpu is far
heavier for the same job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seedbed.retrieval.chunking import chunk_text
from seedbed.retrieval.embedder import DIMENSION, MODEL_NAME, Embedder

RRF_K = 60  # reciprocal rank fusion constant, as in Cormack, Clarke & Buettcher (SIGIR 2009)
CANDIDATES = 50  # per retriever, before fusion

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (source TEXT PRIMARY KEY, sha256 TEXT, n_chunks INTEGER);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, source TEXT, chunk_no INTEGER, start INTEGER,
                                   end_ INTEGER, text TEXT);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_text USING fts5(text, content='chunks', content_rowid='id');
"""


@dataclass
class Hit:
    source: str
    chunk_id: int
    chunk_no: int
    text: str
    score: float  # reciprocal-rank-fusion score
    bm25_rank: int | None
    vector_rank: int | None


class Store:
    def __init__(self, directory: str | Path, chunk_size: int = 800, overlap: int = 160):
        from usearch.index import Index

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "index.json"
        meta = {"embedder": MODEL_NAME, "dimension": DIMENSION, "chunk_size": chunk_size, "overlap": overlap}
        if meta_path.is_file():
            saved = json.loads(meta_path.read_text())
            if (saved["embedder"], saved["dimension"]) != (MODEL_NAME, DIMENSION):
                raise ValueError(f"{self.dir}: built with {saved['embedder']} ({saved['dimension']} dims); this "
                                 f"Seedbed embeds with {MODEL_NAME} ({DIMENSION}); rebuild the index")
            meta = saved
        else:
            meta_path.write_text(json.dumps({**meta, "created": time.time()}))
        self.chunk_size, self.overlap = meta["chunk_size"], meta["overlap"]
        self.db = sqlite3.connect(self.dir / "chunks.sqlite", check_same_thread=False)
        self.db.executescript(SCHEMA)
        self.vectors_path = self.dir / "vectors.usearch"
        self.vectors = Index.restore(str(self.vectors_path)) if self.vectors_path.is_file() else \
            Index(ndim=DIMENSION, metric="cos")

    def add_document(self, source: str, text: str) -> str:
        """Index one document, replacing its earlier chunks; 'unchanged' if its text is the same as last time."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        row = self.db.execute("SELECT sha256 FROM files WHERE source = ?", (source,)).fetchone()
        if row and row[0] == digest:
            return "unchanged"
        chunks = chunk_text(text, self.chunk_size, self.overlap)
        vectors = Embedder().embed([c.text for c in chunks]) if chunks else np.zeros((0, DIMENSION), np.float32)
        with self.db:  # one transaction per document
            self._delete(source)
            ids = []
            for no, chunk in enumerate(chunks):
                cur = self.db.execute("INSERT INTO chunks (source, chunk_no, start, end_, text) VALUES (?,?,?,?,?)",
                                      (source, no, chunk.start, chunk.end, chunk.text))
                ids.append(cur.lastrowid)
                self.db.execute("INSERT INTO chunk_text (rowid, text) VALUES (?, ?)", (cur.lastrowid, chunk.text))
            self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", (source, digest, len(chunks)))
        if ids:
            self.vectors.add(np.array(ids, dtype=np.uint64), vectors)
        return "replaced" if row else "added"

    def delete_source(self, source: str) -> None:
        with self.db:
            self._delete(source)

    def _delete(self, source: str) -> None:
        for (chunk_id, text) in self.db.execute("SELECT id, text FROM chunks WHERE source = ?", (source,)).fetchall():
            self.db.execute("INSERT INTO chunk_text (chunk_text, rowid, text) VALUES ('delete', ?, ?)", (chunk_id, text))
            self.vectors.remove(chunk_id)
        self.db.execute("DELETE FROM chunks WHERE source = ?", (source,))
        self.db.execute("DELETE FROM files WHERE source = ?", (source,))

    def save(self) -> None:
        tmp = self.vectors_path.with_suffix(".tmp")
        self.vectors.save(str(tmp))
        os.replace(tmp, self.vectors_path)  # atomic: a reader never sees a half-written index

    def sources(self) -> list[str]:
        return [s for (s,) in self.db.execute("SELECT source FROM files ORDER BY source")]

    def chunk_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """Vector and BM25 candidates, fused by reciprocal rank."""
        vector_ranks, bm25_ranks = {}, {}
        if len(self.vectors):
            found = self.vectors.search(Embedder().embed([query])[0], min(CANDIDATES, len(self.vectors)))
            vector_ranks = {int(key): rank for rank, key in enumerate(found.keys)}
        terms = re.findall(r"\w+", query)
        if terms:  # each term quoted, so FTS5 syntax in a user's question cannot break the query
            match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms)
            rows = self.db.execute("SELECT rowid FROM chunk_text WHERE chunk_text MATCH ? ORDER BY bm25(chunk_text) "
                                   "LIMIT ?", (match, CANDIDATES)).fetchall()
            bm25_ranks = {rowid: rank for rank, (rowid,) in enumerate(rows)}
        scores = {}
        for ranks in (vector_ranks, bm25_ranks):
            for chunk_id, rank in ranks.items():
                scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        hits = []
        for chunk_id, score in sorted(scores.items(), key=lambda kv: -kv[1])[:k]:
            row = self.db.execute("SELECT source, chunk_no, text FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
            if row:
                hits.append(Hit(row[0], chunk_id, row[1], row[2], score, bm25_ranks.get(chunk_id),
                                vector_ranks.get(chunk_id)))
        return hits
