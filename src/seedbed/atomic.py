"""Atomic writes: a reader sees the old file (or directory) or the new one, never a half-written one.

    atomic_write_text(out / "metrics.json", text)
    with atomic_path(out / "model.gguf") as tmp: writer.write_to(tmp)
    with atomic_dir(out) as tmp: save_everything_into(tmp)

Every write of an output Seedbed produces goes through here: a temporary name in the same directory (so the
final rename stays on one file system, where it is atomic), then `os.replace` / `rename`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o644  # mkstemp makes files private (0600); outputs are meant to be read like any other file


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path`, on failure it is removed.

    >>> with atomic_path("out/notes.txt") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("done")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically.

    >>> atomic_write_text("runs/x/metrics.json", "{}")  # doctest: +SKIP
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextmanager
def atomic_dir(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; on success it is renamed to `path`.

    With `replace`, an existing `path` is removed first (its new content is complete by then). Without it, a
    `path` that appeared meanwhile (another process finished the same work) wins and the temporary copy is
    dropped. On failure the temporary directory is removed and nothing at `path` changes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{time.time_ns()}")
    tmp.mkdir()
    try:
        yield tmp
        if replace and path.exists():
            shutil.rmtree(path)
        try:
            tmp.rename(path)
        except OSError:
            if replace:
                raise
            # another process won the race; its copy is as good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log (a JSONL store) so that a reader, or a run killed meanwhile, sees it whole or not
    at all: one `write` on a file opened for appending, then fsync. What a crash mid-write can leave, a last line
    without its newline, is cut off first (readers ignore it: `complete_lines`).

    >>> append_line("runs/eval/judgments.jsonl", '{"verdict": "A"}')  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.ftruncate(fd, Path(path).read_bytes().rfind(b"\n") + 1)
        os.write(fd, (line.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_lines(path: str | Path) -> list[str]:
    """The complete (newline-ended, non-blank) lines of an append-only log; [] if it does not exist yet."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the piece after the last newline is unfinished (or empty)
    return [line for line in lines if line.strip()]
