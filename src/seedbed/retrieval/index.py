"""Build, open and prune a retrieval index: `seedbed index PATH... --out INDEX`.

    seedbed index docs/ notes.jsonl --out runs/docs-index     # build, or update in place
    seedbed index docs/old.md --out runs/docs-index --remove  # drop a source
    seedbed serve --model m=DIR --rag m=runs/docs-index       # answers grounded in it, with citations

Re-running on the same paths re-embeds only documents whose text changed (sha256), replaces their chunks, and
drops sources whose files are gone from those paths.

Why usearch + SQLite FTS5: usearch is a small wheel with a persistent index that removes vectors by key (so a
changed file's old chunks really go) and searches exactly or by HNSW; SQLite keeps the chunk text and metadata
transactionally and, through FTS5, gives BM25, which catches the rare names and numbers that embeddings blur.
sqlite-vec would keep vectors in the same file, but this CPython's sqlite3 cannot load extensions; faiss-cpu
does the vector half too but is a far heavier dependency for the same job.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from seedbed.atomic import check_apart
from seedbed.errors import RetrievalError
from seedbed.retrieval.chunking import CHUNK_SIZE, OVERLAP
from seedbed.retrieval import documents
from seedbed.retrieval.documents import Document, read_file, scan_files
from seedbed.retrieval.store import EMBED_BATCH, WRITER_LOCK, Store, foreign_directory

SAVE_EVERY_S = 60  # a long build checkpoints its vectors this often, so an interrupted one resumes cheaply


@dataclass
class IndexReport:
    """What a build did. Counts are of sources: a file, or one record of a JSONL file."""

    added_files: int
    replaced_files: int  # text changed: old chunks replaced
    unchanged_files: int  # same sha256 as last time: skipped
    removed_files: int  # gone from the given paths since the last build
    chunks: int  # in the whole index afterwards
    seconds: float
    links_out: list[str] = field(default_factory=list)  # links in a given folder pointing out of it: not followed
    too_large: list[str] = field(default_factory=list)  # files in a given folder over the size cap: not read

    def __str__(self) -> str:
        line = (f"added={self.added_files} replaced={self.replaced_files} unchanged={self.unchanged_files} "
                f"removed={self.removed_files} chunks={self.chunks} in {self.seconds:.1f}s")
        return line + "".join(f"\nskipped {len(files)} {what}: {_names(files)}" for what, files in (
            ("link(s) pointing out of the indexed folder (index the target itself to include it)", self.links_out),
            (f"file(s) over {documents.MAX_FILE_BYTES:,} bytes (split them to include them)", self.too_large)) if files)

    __rich__ = __str__  # `console.print(report)` shows the summary line, and what was left out


def build_index(paths: list[str], out: str, chunk_size: int = CHUNK_SIZE, overlap: int = OVERLAP,
                progress: bool = True) -> IndexReport:
    """Index the documents under `paths` into the directory `out` (created, or updated in place).

    >>> build_index(["docs/"], "runs/docs-index", progress=False)  # doctest: +SKIP
    IndexReport(added_files=12, replaced_files=0, unchanged_files=0, removed_files=0, chunks=57, seconds=3.1)
    """
    started = time.perf_counter()
    # The index is updated in place (its index.json says it is one), so only the first half of the output rule.
    check_apart(out, paths)
    scan = scan_files(paths)  # a missing path or unsupported file fails before anything is written
    files = scan.files
    outcomes: Counter[str] = Counter()
    seen: set[str] = set()
    with writer_lock(out, create=True), Store(out, chunk_size=chunk_size, overlap=overlap) as store, \
            _progress_bar(progress) as bar:
        task = bar.add_task("indexing", total=len(files))
        pending: list[Document] = []
        pending_chars, last_save = 0, time.monotonic()
        for path in files:
            bar.update(task, description=_short(path))
            for doc in read_file(path):
                seen.add(doc.source)
                pending.append(doc)
                pending_chars += len(doc.text)
            # Embed across files in batches: one model call per few hundred chunks, not one per small file.
            if pending_chars >= EMBED_BATCH * chunk_size:
                outcomes.update(store.add_documents(pending))
                pending, pending_chars = [], 0
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    store.save()
                    last_save = time.monotonic()
            bar.advance(task)
        outcomes.update(store.add_documents(pending))
        roots = [Path(p).resolve() for p in paths]
        gone = [s for s, path in store.source_paths().items() if s not in seen and _within(path, roots)]
        for source in gone:
            store.delete_source(source)
        chunks = store.chunk_count()
    return IndexReport(outcomes["added"], outcomes["replaced"], outcomes["unchanged"], len(gone), chunks,
                       round(time.perf_counter() - started, 2), [str(p) for p in scan.links_out],
                       [str(p) for p in scan.too_large])


def open_index(path: str) -> Store:
    """An existing index, for search.

    >>> open_index("runs/docs-index").search("When was the Zorblax reactor commissioned?", k=3)  # doctest: +SKIP
    [Hit(source='docs/reactor.md', chunk_id=1, chunk_no=0, text='...', score=0.0328, bm25_rank=1, vector_rank=1)]
    """
    return Store(path)


def remove_from_index(out: str, sources: list[str]) -> list[str]:
    """Remove sources from the index: each item a source as listed, or a file or directory they came from.
    Returns the sources removed; an item that matches none is an error (and nothing is removed).

    >>> remove_from_index("runs/docs-index", ["docs/old.md"])  # doctest: +SKIP
    ['docs/old.md']
    """
    with writer_lock(out, create=False), Store(out) as store:
        indexed = store.source_paths()
        matched = {item: [s for s, path in indexed.items() if s == item or _within(path, [Path(item).resolve()])]
                   for item in sources}
        if unknown := [item for item, found in matched.items() if not found]:
            raise RetrievalError(f"{out}: no indexed source matches {', '.join(unknown)}")
        removed = sorted({s for found in matched.values() for s in found})
        for source in removed:
            store.delete_source(source)
    return removed


@contextmanager
def writer_lock(out: str, create: bool) -> Iterator[None]:
    """Hold the index's writer lock (a file lock inside it) while changing it. Two writers at once would each save
    their own vectors over the other's and leave keys without chunks; the second one fails at once, naming the
    index, and changes nothing. Readers (`serve --rag`) do not take it. The lock is released by the OS when its
    process dies, so a killed run leaves none behind.

    >>> with writer_lock("runs/docs-index", create=True): ...  # doctest: +SKIP
    """
    from filelock import FileLock, Timeout

    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise RetrievalError(f"{out}: exists and is not a directory; choose another --out for the index")
    if foreign_directory(directory) or not (create or directory.is_dir()):
        yield  # no lock file left in someone else's folder: opening the Store says it is not an index
        return
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(directory / WRITER_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RetrievalError(f"{out}: another `seedbed index` is writing this index right now; wait for it to "
                             "finish, then run this one again") from None
    try:
        yield
    finally:
        lock.release()


def _names(paths: list[str], shown: int = 5) -> str:
    return ", ".join(paths[:shown]) + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def _within(path: str, roots: list[Path]) -> bool:
    """Whether the file `path` is one of the (resolved) `roots` or inside one of them."""
    file = Path(path).resolve()
    return any(file.is_relative_to(root) for root in roots)  # a path is relative to itself


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled)


def _short(path: Path, width: int = 32) -> str:
    name = str(path)
    return name if len(name) <= width else "…" + name[-(width - 1):]
