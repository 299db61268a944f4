"""Read instruction data in the shapes people have and turn every record into a canonical `Example`.

Files: `.jsonl`, `.json` (an array of records, or `{"data": [...]}`), `.csv` (header row), `.parquet`, and
gzipped `.jsonl.gz` / `.json.gz` / `.csv.gz`. Directories are read recursively, in sorted order. Data sets on
the Hugging Face Hub (`hf:OWNER/NAME[/CONFIG][:SPLIT]`, `hub.py`) are read as JSON Lines files.

Record shapes (chat, ShareGPT, self-instruct, dolly, alpaca, GSM8K, plain text) are in `shapes.py`; records of
any other shape are read through a recipe's `mapping` of their fields (`mapping.py`).

Nothing is dropped silently: every malformed record is a `Problem` naming file, line and field, and all
problems across all files are raised together as one `DataError`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Iterator

from seedbed.chat import Example
from seedbed.data.hub import hub_dataset, hub_dataset_file
from seedbed.data.mapping import apply_mapping
from seedbed.data.shapes import SHAPES, BadField, examples_from_record
from seedbed.errors import DataError
from seedbed.recipe import FieldMapping

PACKAGED_PREFIX = "seedbed:"
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".json.gz", ".csv.gz")
MAX_PROBLEMS_SHOWN = 20
MAX_DEPTH = 64  # nesting levels of a record; real records use a handful, and Python's recursion ends near 1,000


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 0 when the problem is with the file as a whole
    field: str  # "-" when no single field is to blame
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.message}"


def data_error(problems: list[Problem]) -> DataError:
    """Bad input data as one `DataError`: `.problems` holds every problem found, and the message lists them one
    per line."""
    lines = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    error = DataError("\n".join(lines))
    error.problems = problems
    return error


@dataclass
class FileSummary:
    path: str
    sha256: str  # of the file's bytes as stored (compressed, for .gz)
    records: int
    examples: int  # can exceed records: a self-instruct task with several instances gives several
    shapes: dict[str, int] = field(default_factory=dict)  # shape name -> record count


@dataclass
class InstructionData:
    examples: list[Example]
    files: list[FileSummary]


def resolve_data_path(path: str | Path) -> Path:
    """Where a data path points: `seedbed:` names a file shipped inside the package.

    >>> resolve_data_path("seedbed:data/gsm8k_demo_train.jsonl").name
    'gsm8k_demo_train.jsonl'
    >>> resolve_data_path("~/train.jsonl") == Path.home() / "train.jsonl"
    True
    """
    if isinstance(path, str) and path.startswith(PACKAGED_PREFIX):
        return Path(str(files("seedbed") / "assets" / path[len(PACKAGED_PREFIX) :]))
    return Path(path).expanduser()


def read_examples(paths: list[str | Path], mapping: FieldMapping | None = None) -> InstructionData:
    """Read data files and directories into canonical examples, or raise one `DataError` listing every problem.

    With a `mapping`, every record is read through it (its shape counted as "mapping") instead of by its shape.

    >>> data = read_examples(["seedbed:data/gsm8k_demo_train.jsonl"])
    >>> data.files[0].shapes, data.examples[0].messages[0]["role"]
    ({'gsm8k': 400}, 'user')
    >>> snips = FieldMapping(prompt="Turn this request into JSON: {text}", response_json=["intent", "slots"])
    >>> data = read_examples(["seedbed:data/snips_heldout.jsonl"], mapping=snips)
    >>> data.files[0].shapes, data.examples[1].reference()
    ({'mapping': 140}, '{"intent": "GetWeather", "slots": [{"name": "country", "value": "Andorra"}]}')
    """
    if isinstance(paths, (str, Path)):  # a lone path would otherwise be read character by character
        paths = [paths]
    problems: list[Problem] = []
    examples: list[Example] = []
    summaries: list[FileSummary] = []
    listed = []  # (files, problems listing them) of each path given, reported in the order given
    for given in paths:
        listing: list[Problem] = []
        listed.append((_data_files(given, listing), listing))
    prefixes = id_prefixes([file for found, _ in listed for file in found])
    for found, listing in listed:
        problems.extend(listing)
        for file in found:
            summary, file_examples = _read_file(file, problems, mapping, prefixes[str(file)])
            summaries.append(summary)
            examples.extend(file_examples)
    if problems:
        raise data_error(problems)
    return InstructionData(examples, summaries)


def id_prefixes(files: list[str | Path]) -> dict[str, str]:
    """The prefix of the default ids of each file's records (`PREFIX:LINE`, for records without an `id`): the
    file's name, or as many of its last path parts as it takes to tell it from the other files read with it, so
    that `a/train.jsonl` and `b/train.jsonl` do not give two records the same id.

    >>> id_prefixes(["data/a/train.jsonl", "data/b/train.jsonl", "data/b/extra.jsonl"])
    {'data/a/train.jsonl': 'a/train.jsonl', 'data/b/train.jsonl': 'b/train.jsonl', 'data/b/extra.jsonl': 'extra.jsonl'}
    """
    parts = {str(f): Path(f).absolute().parts for f in files}
    prefixes: dict[str, str] = {}
    depth = 1
    while len(prefixes) < len(parts):
        pending = {name: p for name, p in parts.items() if name not in prefixes}
        tails = Counter(p[-depth:] for p in parts.values())
        for name, p in pending.items():
            if tails[p[-depth:]] == 1 or depth >= len(p):  # unique, or the same file given twice: its whole path
                prefixes[name] = "/".join(p[-depth:]).removeprefix("//")
        depth += 1
    return {name: prefixes[name] for name in parts}


def _data_files(given: str | Path, problems: list[Problem]) -> list[Path]:
    try:
        hub = hub_dataset(given)
        if hub is not None:  # a Hub data set, written once as JSON Lines and read as a file from here on
            return [hub_dataset_file(hub)]
    except DataError as e:
        problems.append(Problem(str(given), 0, "-", str(e)))
        return []
    path = resolve_data_path(given)
    if path.is_dir():
        # Hidden folders such as .ipynb_checkpoints hold stale copies that would duplicate the data.
        found = sorted(
            p for p in path.rglob("*")
            if p.is_file() and _suffix(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not found:
            problems.append(Problem(str(given), 0, "-", f"directory holds no data files ({', '.join(SUFFIXES)})"))
        return found
    if not path.is_file():
        problems.append(Problem(str(given), 0, "-", f"no such file or directory ({path})"))
        return []
    if not _suffix(path):
        problems.append(Problem(str(given), 0, "-", f"unsupported file type; use one of {', '.join(SUFFIXES)}"))
        return []
    return [path]


def _suffix(path: Path) -> str | None:
    return next((s for s in SUFFIXES if path.name.lower().endswith(s)), None)


def _read_file(path: Path, problems: list[Problem], mapping: FieldMapping | None,
               prefix: str) -> tuple[FileSummary, list[Example]]:
    name = str(path)

    def report(line: int, field_name: str, message: str) -> None:
        problems.append(Problem(name, line, field_name, message))

    raw = path.read_bytes()
    examples: list[Example] = []
    shapes: Counter[str] = Counter()
    records = 0
    for line, record in _records(path, raw, report):
        records += 1
        try:
            if mapping is not None:
                record = apply_mapping(record, mapping, f"{prefix}:{line}")
            shape, made = examples_from_record(record, f"{prefix}:{line}", f"{name}:{line}")
        except BadField as bad:
            report(line, bad.field, bad.message)
            continue
        shapes["mapping" if mapping is not None else shape] += 1
        examples.extend(made)
    summary = FileSummary(name, hashlib.sha256(raw).hexdigest(), records, len(examples), dict(shapes))
    return summary, examples


def data_files(paths: list[str | Path]) -> list[Path]:
    """The data files the given files and directories hold, in the order they are read (problems left to the
    reader)."""
    return [file for given in paths for file in _data_files(given, [])]


def stream_records(paths: list[str | Path], problems: list[Problem]) -> Iterator[tuple[str, int, Any]]:
    """(file, line, record) for every record of the given files and directories, without holding files whole.

    JSON Lines and CSV (plain or gzipped) are streamed line by line, so memory stays flat on inputs of any size;
    a `.json` array or a Parquet file is read whole. What cannot be read is appended to `problems`.
    """
    for given in paths:
        for path in _data_files(given, problems):
            name = str(path)

            def report(line: int, field_name: str, message: str, name: str = name) -> None:
                problems.append(Problem(name, line, field_name, message))

            suffix = _suffix(path)
            if suffix.removesuffix(".gz") in (".jsonl", ".csv"):
                records = _streamed_records(path, suffix, report)
            else:
                records = _records(path, path.read_bytes(), report)
            for line, record in records:
                yield name, line, record


def _streamed_records(path: Path, suffix: str, report: Report) -> Iterator[tuple[int, Any]]:
    opener = gzip.open if suffix.endswith(".gz") else open
    # utf-8-sig drops a leading byte-order mark; newline="" keeps U+2028 and CRs inside JSON strings intact.
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            if suffix.removesuffix(".gz") == ".csv":
                yield from _csv_records(handle, report)
                return
            yield from _jsonl_records(_lines(handle), report)
    except (OSError, EOFError) as e:
        report(0, "-", f"cannot read: {e}")
    except UnicodeDecodeError as e:
        report(0, "-", f"not UTF-8 text: {e.reason}")


def _lines(handle) -> Iterator[str]:
    """Lines split on "\n" only, as `_jsonl_records` splits them, read in bounded pieces."""
    pending = ""
    while piece := handle.read(1 << 20):
        pending += piece
        *complete, pending = pending.split("\n")
        yield from complete
    yield pending


# ---- file formats: each yields (line, record) and reports what it cannot read -------------------------------

Report = Callable[[int, str, str], None]


def _records(path: Path, raw: bytes, report: Report) -> Iterator[tuple[int, Any]]:
    suffix = _suffix(path)
    if suffix == ".parquet":
        yield from _parquet_records(raw, report)
        return
    try:
        if suffix.endswith(".gz"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")  # -sig: spreadsheets often start their exports with a byte-order mark
    except (OSError, EOFError) as e:
        report(0, "-", f"cannot decompress: {e}")
        return
    except UnicodeDecodeError as e:
        report(raw[: e.start].count(b"\n") + 1, "-", f"not UTF-8 text: {e.reason} at byte {e.start}")
        return
    readers = {".jsonl": _jsonl_records, ".json": _json_records, ".csv": _csv_records}
    yield from readers[suffix.removesuffix(".gz")](text, report)


def _jsonl_records(text, report: Report) -> Iterator[tuple[int, Any]]:
    """Records of JSON Lines given as text or as an iterator of lines."""
    # Split on "\n" only: str.splitlines would also split at U+2028, which JSON allows unescaped in strings.
    lines = text.split("\n") if isinstance(text, str) else text
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            report(number, "-", f"invalid JSON: {e.msg} (column {e.colno})")
            continue
        except RecursionError:
            report(number, "-", f"nested deeper than {MAX_DEPTH} levels")
            continue
        if too_deep(record):
            report(number, "-", f"nested deeper than {MAX_DEPTH} levels")
            continue
        yield number, record


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests lists and objects deeper than `limit`, found without recursion: later
    steps (copying, pickling to worker processes) recurse, and a record nested a few hundred levels deep would
    stop them with a RecursionError instead of a file:line problem."""
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _json_records(text: str, report: Report) -> Iterator[tuple[int, Any]]:
    """Records of a JSON array, or of an object's one list, each with the line where it starts.

    We walk the text with `raw_decode` rather than `json.loads` the whole so that each record's offset, and
    so its line, is known for error messages.
    """
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(offset: int) -> int:
        return bisect_left(newlines, offset) + 1

    try:
        start = _skip(text, 0)
        top, end = _DECODER.raw_decode(text, start)
        if (extra := _skip(text, end)) < len(text):
            hint = "extra data after the first JSON value (JSON Lines? name it .jsonl)"
            raise json.JSONDecodeError(hint, text, extra)
        if isinstance(top, list):
            items = _array_items(text, start)
        elif isinstance(top, dict) and any(all(k in top for k in keys) for keys in SHAPES.values()):
            items = [(start, top)]  # a file holding one record
        elif isinstance(top, dict) and len(lists := [k for k, v in top.items() if isinstance(v, list)]) == 1:
            items = _array_items(text, _object_value_offsets(text, start)[lists[0]])
        else:
            found = f"an object with keys {sorted(top)}" if isinstance(top, dict) else type(top).__name__
            expected = 'expected an array of records, or an object with one list of them such as {"data": [...]}'
            report(line_of(start), "-", f"{expected}; found {found}")
            return
    except json.JSONDecodeError as e:
        report(e.lineno, "-", f"invalid JSON: {e.msg} (column {e.colno})")
        return
    except RecursionError:
        report(line_of(start), "-", f"nested deeper than {MAX_DEPTH} levels")
        return
    for offset, record in items:
        if too_deep(record):
            report(line_of(offset), "-", f"nested deeper than {MAX_DEPTH} levels")
            continue
        yield line_of(offset), record


def _skip(text: str, pos: int) -> int:
    return _WHITESPACE.match(text, pos).end()


def _array_items(text: str, pos: int) -> list[tuple[int, Any]]:
    """(offset, value) of each element of the JSON array that starts at text[pos]; the text is known valid."""
    items = []
    pos = _skip(text, pos + 1)
    while text[pos] != "]":
        value, end = _DECODER.raw_decode(text, pos)
        items.append((pos, value))
        pos = _skip(text, end)
        pos = _skip(text, pos + 1) if text[pos] == "," else pos
    return items


def _object_value_offsets(text: str, pos: int) -> dict[str, int]:
    """Where each value of the JSON object that starts at text[pos] begins; the text is known valid."""
    offsets = {}
    pos = _skip(text, pos + 1)
    while text[pos] != "}":
        key, end = _DECODER.raw_decode(text, pos)
        pos = _skip(text, _skip(text, end) + 1)  # past the colon
        offsets[key] = pos
        _, end = _DECODER.raw_decode(text, pos)
        pos = _skip(text, end)
        pos = _skip(text, pos + 1) if text[pos] == "," else pos
    return offsets


def _csv_records(text, report: Report) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of CSV given as text or as an open text file."""
    # csv.reader rather than DictReader: DictReader skips blank lines unseen, which would put our line count off.
    reader = csv.reader(io.StringIO(text, newline="") if isinstance(text, str) else text)
    try:
        header = next(reader, None)
        while header is not None:
            start = reader.line_num + 1  # a quoted cell may span lines; the row starts on the line after the last
            row = next(reader, None)
            if row is None:
                return
            if not row:
                continue  # a blank line is not a record
            if len(row) != len(header):
                report(start, "-", f"row has {len(row)} cells but the header has {len(header)}")
                continue
            yield start, dict(zip(header, row))
    except csv.Error as e:
        report(reader.line_num, "-", f"invalid CSV: {e}")


def _parquet_records(raw: bytes, report: Report) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(pa.BufferReader(raw)).to_pylist()
    except (pa.ArrowException, OSError) as e:
        report(0, "-", f"cannot read Parquet: {e}")
        return
    yield from enumerate(rows, start=1)  # "line" is the 1-based row number
