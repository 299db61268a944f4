"""Atomic writes: a reader sees the old file (or directory) or the new one, never a half-written one.

    atomic_write_text(out / "metrics.json", text)
    with atomic_path(out / "model.gguf") as tmp: writer.write_to(tmp)
    with atomic_dir(out) as tmp: save_everything_into(tmp)

Every write of an output Seedbed produces goes through here: a temporary name in the same directory (so the
final rename stays on one file system, where it is atomic), then `os.replace` / `rename`.

And one rule for every verb that writes an output directory (quantize, data prepare, finetune, distill, eval,
compare, demo; `index`, which updates its index in place, keeps the first half):
`check_output_dir` refuses an `--out` that is, contains or is inside one of the verb's inputs, and an existing
`--out` holding files Seedbed did not write. A directory Seedbed wrote carries a marker file (`OWNER_MARKER`); only
such a directory is ever replaced, and then atomically (`atomic_dir(..., replace=True)`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seedbed.errors import RecipeError

FILE_MODE = 0o644  # mkstemp makes files private (0600); outputs are meant to be read like any other file
OWNER_MARKER = ".seedbed-output"  # in every output directory Seedbed writes: "this one may be replaced"


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

    With `replace`, the new directory carries `OWNER_MARKER` and takes the place of an existing `path`, which must
    be one Seedbed wrote (`check_output_dir`): the old one is renamed aside, the new one renamed in, then the old
    one removed, so `path` is at every moment the whole old directory or the whole new one (for an instant,
    neither). Without it, a `path` that appeared meanwhile (another process finished the same work) wins and the
    temporary copy is dropped. On failure the temporary directory is removed and nothing at `path` changes; what a
    killed run left beside `path` is removed by the next run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir()
    try:
        if replace:
            check_output_dir(path, [])  # checked again at the swap: nothing a user wrote is ever removed
            (tmp / OWNER_MARKER).write_text("written by seedbed; replaced as a whole when the verb runs again\n")
        yield tmp
        if replace and path.exists():
            check_output_dir(path, [])
            old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.time_ns()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
            return
        try:
            tmp.rename(path)
        except OSError:
            if replace:
                raise
            # another process won the race; its copy is as good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_orphans(path: Path) -> None:
    """Remove the temporary and set-aside copies of `path` left by a process that no longer runs (a kill -9)."""
    for stale in path.parent.glob(f".{path.name}.[to][ml][pd]-*"):
        pid = stale.name.rsplit("-", 2)[-2]
        if stale.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: leave its files alone
    return True


def check_output_dir(out: str | Path, inputs: list[str | Path], field: str = "out") -> None:
    """Refuse an output directory that would destroy what the user gave: one that is, contains or is inside an
    input (a model directory, a data file or folder), and an existing one that holds files Seedbed did not write
    (no `OWNER_MARKER`; an empty directory is fine).

    >>> check_output_dir("runs/demo", ["runs/demo/model"])  # doctest: +SKIP
    Traceback (most recent call last):
    seedbed.errors.RecipeError: out: runs/demo contains the input runs/demo/model; choose an --out outside it
    """
    out = Path(out)
    check_apart(out, inputs, field)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RecipeError(f"{field}: {out} exists and is not a directory; choose another --out")
    if out.is_dir() and not (out / OWNER_MARKER).is_file() and any(out.iterdir()):
        raise RecipeError(f"{field}: {out} already holds files Seedbed did not write (no {OWNER_MARKER} in it); "
                          "choose another --out, or empty it first")


def check_apart(out: str | Path, inputs: list[str | Path], field: str = "out") -> None:
    """Refuse an output directory that is, contains or is inside one of `inputs` (the first half of
    `check_output_dir`).

    >>> check_apart("docs/index", ["docs"])  # doctest: +SKIP
    Traceback (most recent call last):
    seedbed.errors.RecipeError: out: docs/index is inside the input docs; choose an --out apart from every input
    """
    target = Path(out).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source:
            how = "is"
        elif target in source.parents:
            how = "contains"
        elif source in target.parents:
            how = "is inside"
        else:
            continue
        raise RecipeError(f"{field}: {out} {how} the input {given}; choose an --out apart from every input")


def local_inputs(*groups: list[str]) -> list[str]:
    """The paths in `groups` that name something on disk: a model flag may name a preset (gemma-3-270m) and a data
    flag a shipped set (seedbed:data/...), which no output can overwrite.

    >>> local_inputs(["runs/demo/model", "gemma-3-270m"], ["heldout.jsonl"])  # doctest: +SKIP
    ['runs/demo/model', 'heldout.jsonl']
    """
    return [path for group in groups for path in group if path and Path(path).exists()]


def mark_output_dir(out: str | Path) -> Path:
    """For a verb that writes into its output directory as it goes (finetune, distill), once `check_output_dir`
    has passed: create it and mark it as Seedbed's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OWNER_MARKER).touch()
    return out


def strict_json(value, **dumps_args) -> str:
    """JSON text with every NaN or infinity written as null: `json.dumps` would write a bare `NaN`, which is not
    JSON and which strict readers (jq, JavaScript, pydantic) refuse.

    >>> strict_json({"loss": float("nan")})
    '{"loss": null}'
    """
    return json.dumps(_finite(value), allow_nan=False, **dumps_args)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


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
