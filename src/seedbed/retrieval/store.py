"""The persistent index, a directory of three files and a lock:

    index.json        what built it: embedder, dimension, chunk size and overlap, format, creation time
    chunks.sqlite     files(source, path, sha256, mtime, n_chunks), chunks(id, source, chunk_no, start, end, text)
                      and chunks_fts, an FTS5 table over the chunk text for BM25
    vectors.usearch   a usearch index (cosine, 384 dimensions) whose keys are the chunk ids
    .writer.lock      the file lock the one process changing the index holds (`index.writer_lock`)

SQLite is the record: each document is replaced in one transaction, and chunk ids are never reused
(AUTOINCREMENT), so a vector key can only ever mean one chunk. The vectors are saved atomically (temp file, then
os.replace) after each batch; if a run dies between the two, opening the index notices that the keys and the
chunk ids differ and re-embeds or drops the difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from seedbed.atomic import atomic_path, atomic_write_text
from seedbed.errors import RetrievalError
from seedbed.retrieval.chunking import Chunk, chunk_text
from seedbed.retrieval.documents import Document
from seedbed.retrieval.embedder import DIMENSION, MODEL_NAME, Embedder
from seedbed.retrieval.ranking import fts_query, reciprocal_rank_fusion

FORMAT = 1  # bump when the files' layout changes; an index of another format is refused, not misread
CANDIDATES = 50  # per retriever, before fusion
EXACT_SEARCH_UP_TO = 50_000  # vectors; below this brute force is milliseconds and has perfect recall, above: HNSW
EMBED_BATCH = 256  # chunks embedded per call while indexing
WRITER_LOCK = ".writer.lock"  # held by the one process changing the index (`index.writer_lock`)

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (source TEXT PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, mtime REAL,
                                  n_chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
                                   chunk_no INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
                                   text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks(source);
-- External-content FTS5 kept in step by triggers, as in the SQLite FTS5 manual (section 4.4.3); the porter
-- stemmer lets 'commissioned' match 'commission'.
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='id',
                                                        tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""


@dataclass
class Hit:
    source: str
    chunk_id: int
    chunk_no: int
    text: str
    score: float  # reciprocal-rank-fusion score: higher is better, at most 2 / 61
    bm25_rank: int | None  # 1 = best BM25 match; None = not among BM25's candidates
    vector_rank: int | None  # 1 = nearest vector; None = not among the vector candidates


class Store:
    """An index directory, opened for search and updates. With `chunk_size` and `overlap`, a missing index is
    created; without, it must exist. Thread-safe: one lock around each operation.

    >>> store = Store("runs/docs-index", chunk_size=800, overlap=160)  # doctest: +SKIP
    >>> store.add_document(Document("notes.md", "The Zorblax reactor was commissioned in 1987."))  # doctest: +SKIP
    'added'
    >>> store.search("When was the reactor commissioned?", k=1)[0].source  # doctest: +SKIP
    'notes.md'
    """

    def __init__(self, directory: str | Path, chunk_size: int | None = None, overlap: int | None = None):
        from usearch.index import Index

        self.dir = Path(directory)
        self.settings = _open_settings(self.dir, chunk_size, overlap)
        self.chunk_size, self.overlap = self.settings["chunk_size"], self.settings["overlap"]
        self.embedder = Embedder()
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.dir / "chunks.sqlite", check_same_thread=False)
        self.db.executescript(SCHEMA)
        self.vectors_path = self.dir / "vectors.usearch"
        if self.vectors_path.is_file():
            saved = _usearch_metadata(self.vectors_path)
            if not saved or saved["dimensions"] != DIMENSION:
                raise RetrievalError(f"{self.vectors_path}: not a usearch index of {DIMENSION}-dimensional vectors "
                                 f"({saved['dimensions'] if saved else 'unreadable'}); rebuild the index")
            self.vectors = Index.restore(str(self.vectors_path))
        else:
            # f16 halves memory against f32; cosine similarities agree with f32 to about three decimal places.
            self.vectors = Index(ndim=DIMENSION, metric="cos", dtype="f16")
        self._unsaved = False
        self._reconcile()

    # --- changes --------------------------------------------------------------------------------------------

    def add_document(self, doc: Document) -> str:
        """Index one document, replacing its earlier chunks: 'added', 'replaced' or 'unchanged' (same sha256)."""
        return self.add_documents([doc])[0]

    def add_documents(self, docs: list[Document]) -> list[str]:
        """Index many documents, embedding their chunks in batches; one outcome per document, in order."""
        with self._lock:
            outcomes, changed = [], []
            for doc in docs:
                digest = hashlib.sha256(doc.text.encode("utf-8", errors="replace")).hexdigest()
                row = self.db.execute("SELECT sha256 FROM files WHERE source = ?", (doc.source,)).fetchone()
                if row and row[0] == digest:
                    outcomes.append("unchanged")
                    continue
                outcomes.append("replaced" if row else "added")
                changed.append((doc, digest, chunk_text(doc.text, self.chunk_size, self.overlap)))
            for batch in _batches(changed, EMBED_BATCH):
                vectors = self.embedder.embed([c.text for _, _, chunks in batch for c in chunks])  # (n, 384)
                at = 0
                for doc, digest, chunks in batch:
                    self._replace(doc, digest, chunks, vectors[at : at + len(chunks)])
                    at += len(chunks)
            return outcomes

    def delete_source(self, source: str) -> int:
        """Remove a source's chunks from SQLite and the vectors; the number of chunks removed."""
        with self._lock, self.db:
            ids = self._delete(source)
        self._remove_vectors(ids)
        return len(ids)

    def save(self) -> None:
        """Write the vectors if they changed: to a temp file, then os.replace, so a reader never sees half."""
        with self._lock:
            if not self._unsaved:
                return
            with atomic_path(self.vectors_path) as tmp:
                self.vectors.save(str(tmp))
            self._unsaved = False

    def close(self) -> None:
        self.save()
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- queries --------------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The `k` best chunks for `query`: vector and BM25 candidates fused by reciprocal rank."""
        query_vector = self.embedder.embed([query])[0]  # (384,); outside the lock, so searches overlap here
        with self._lock:
            n = max(k, CANDIDATES)
            by_vector: list[int] = []
            if len(self.vectors):
                found = self.vectors.search(query_vector, min(n, len(self.vectors)),
                                            exact=len(self.vectors) <= EXACT_SEARCH_UP_TO)
                by_vector = [int(key) for key in found.keys]
            by_bm25: list[int] = []
            if match := fts_query(query):
                by_bm25 = [rowid for (rowid,) in self.db.execute(
                    "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?",
                    (match, n))]
            scores = reciprocal_rank_fusion(by_vector, by_bm25)
            ranked = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))
            rows = self._chunks(ranked)
            vector_rank = {chunk_id: rank for rank, chunk_id in enumerate(by_vector, 1)}
            bm25_rank = {chunk_id: rank for rank, chunk_id in enumerate(by_bm25, 1)}
            hits = [Hit(rows[i][0], i, rows[i][1], rows[i][2], scores[i], bm25_rank.get(i), vector_rank.get(i))
                    for i in ranked if i in rows]  # a vector whose chunk is gone (mid-update) is skipped
            return hits[:k]

    def sources(self) -> list[str]:
        with self._lock:
            return [source for (source,) in self.db.execute("SELECT source FROM files ORDER BY source")]

    def source_paths(self) -> dict[str, str]:
        """Source -> the file it was read from."""
        with self._lock:
            return dict(self.db.execute("SELECT source, path FROM files"))

    def chunk_count(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def stats(self) -> dict:
        """What the index holds and how it was built.

        >>> Store("runs/docs-index").stats()  # doctest: +SKIP
        {'sources': 4, 'chunks': 4, 'vectors': 4, 'embedder': 'all-MiniLM-L6-v2', 'dimension': 384, ...}
        """
        with self._lock:
            sources, chunks = self.db.execute("SELECT COUNT(*), COALESCE(SUM(n_chunks), 0) FROM files").fetchone()
            size = sum(p.stat().st_size for p in self.dir.iterdir() if p.is_file())
            return {"sources": sources, "chunks": chunks, "vectors": len(self.vectors), **self.settings,
                    "bytes": size}

    # --- internals ------------------------------------------------------------------------------------------

    def _replace(self, doc: Document, digest: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
        with self.db:  # one transaction per document: its old chunks go and its new ones come together
            old_ids = self._delete(doc.source)
            new_ids = [self.db.execute('INSERT INTO chunks (source, chunk_no, start, "end", text) VALUES (?,?,?,?,?)',
                                       (doc.source, no, c.start, c.end, c.text)).lastrowid
                       for no, c in enumerate(chunks)]
            self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                            (doc.source, doc.path, digest, _mtime(doc.path), len(chunks)))
        self._remove_vectors(old_ids)
        if new_ids:
            self.vectors.add(np.array(new_ids, dtype=np.uint64), vectors)
            self._unsaved = True

    def _delete(self, source: str) -> list[int]:
        ids = [i for (i,) in self.db.execute("SELECT id FROM chunks WHERE source = ?", (source,))]
        self.db.execute("DELETE FROM chunks WHERE source = ?", (source,))  # the trigger updates chunks_fts
        self.db.execute("DELETE FROM files WHERE source = ?", (source,))
        return ids

    def _remove_vectors(self, ids: list[int]) -> None:
        if ids:
            self.vectors.remove(np.array(ids, dtype=np.uint64))
            self._unsaved = True

    def _chunks(self, ids: list[int]) -> dict[int, tuple[str, int, str]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT id, source, chunk_no, text FROM chunks WHERE id IN ({marks})", ids)
        return {row[0]: row[1:] for row in rows}

    def _reconcile(self) -> None:
        """Make the vector keys equal the chunk ids again after a run that died between SQLite and the save."""
        count, total = self.db.execute("SELECT COUNT(*), COALESCE(SUM(id), 0) FROM chunks").fetchone()
        keys = np.asarray(self.vectors.keys, dtype=np.uint64)
        # Ids only grow, so ids added since the save outweigh any removed: equal count and sum mean equal sets.
        if count == len(keys) and total == int(keys.sum()):
            return
        ids = {i for (i,) in self.db.execute("SELECT id FROM chunks")}
        self._remove_vectors([int(key) for key in keys if int(key) not in ids])
        missing = sorted(ids - {int(key) for key in keys})
        for start in range(0, len(missing), EMBED_BATCH):
            batch = missing[start : start + EMBED_BATCH]
            texts = self._chunks(batch)
            self.vectors.add(np.array(batch, dtype=np.uint64), self.embedder.embed([texts[i][2] for i in batch]))
            self._unsaved = True
        self.save()


def _open_settings(directory: Path, chunk_size: int | None, overlap: int | None) -> dict:
    """Read index.json and check this Seedbed can use the index; with chunk settings, create it if missing."""
    meta_path = directory / "index.json"
    if meta_path.is_file():
        settings = json.loads(meta_path.read_text())
        built = (settings.get("embedder"), settings.get("dimension"))
        if built != (MODEL_NAME, DIMENSION):
            raise RetrievalError(f"{directory}: index built with embedder {built[0]} ({built[1]} dimensions), but this "
                             f"Seedbed embeds with {MODEL_NAME} ({DIMENSION}); rebuild it into a new directory")
        if settings.get("format") != FORMAT:
            raise RetrievalError(f"{directory}: index format {settings.get('format', 0)}, this Seedbed reads format "
                             f"{FORMAT}; rebuild it into a new directory")
        asked = (chunk_size, overlap)
        if chunk_size is not None and asked != (settings["chunk_size"], settings["overlap"]):
            raise RetrievalError(f"{directory}: index built with chunk size {settings['chunk_size']} and overlap "
                             f"{settings['overlap']}, asked for {chunk_size} and {overlap}; pass the same "
                             "(--chunk-size/--overlap) or build a new index")
        return settings
    if chunk_size is None or overlap is None:
        raise RetrievalError(f"{directory}: not a Seedbed index (build one with: seedbed index FILES --out {directory})")
    chunk_text("", chunk_size, overlap)  # reject impossible settings before creating anything
    if foreign_directory(directory):
        raise RetrievalError(f"{directory}: exists and is not a Seedbed index; choose a new or empty directory")
    settings = {"format": FORMAT, "embedder": MODEL_NAME, "dimension": DIMENSION, "chunk_size": chunk_size,
                "overlap": overlap, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta_path, json.dumps(settings, indent=2) + "\n")
    return settings


def foreign_directory(directory: Path) -> bool:
    """Whether `directory` holds files but is no Seedbed index: an index is never built into it, nor its lock."""
    return (directory.is_dir() and not (directory / "index.json").is_file()
            and any(p.name != WRITER_LOCK for p in directory.iterdir()))


def _batches(changed: list[tuple], max_chunks: int):
    """Consecutive groups of documents with about `max_chunks` chunks each (a long document stays whole)."""
    batch, size = [], 0
    for item in changed:
        batch.append(item)
        size += len(item[2])
        if size >= max_chunks:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _usearch_metadata(path: Path) -> dict | None:
    from usearch.index import Index

    try:
        return Index.metadata(str(path))
    except ValueError:  # "Not a dense USearch index!"
        return None


def _mtime(path: str) -> float | None:
    try:
        return os.path.getmtime(path)
    except OSError:
        return None
