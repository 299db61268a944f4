"""Your text as pretraining data: documents streamed from files, a tokenizer learnt from them, and packed blocks.

Files are read line by line and never held whole: a .txt/.md file is documents separated by blank lines, a .jsonl
file one document per record (its `text_fields`, one per line). Each document becomes `<s> tokens </s>` and the
documents are concatenated and cut into blocks of exactly `max_length` tokens (packing, as GPT-2 and nanoGPT train:
no padding, every position predicts a token). The blocks are written to an Arrow dataset on disk by
`datasets` (memory-mapped), so the corpus may be larger than memory and a resumed run reads the same blocks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from seedbed.data.readers import resolve_data_path
from seedbed.errors import DataError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
ENCODE_BATCH = 256  # documents tokenized together (the fast tokenizer parallelises a batch)


@dataclass
class TextFile:
    """One input file's lineage: the shape `train.trainer.run_metrics` and the model card read (records, examples)."""

    path: str
    sha256: str
    records: int = 0  # documents read
    examples: int = 0  # documents with text
    characters: int = 0
    tokens: int = 0


@dataclass
class TextData:
    files: list[TextFile]
    examples: list = field(default_factory=list)  # run_metrics counts these: the documents, by index


def text_files(paths) -> list[Path]:
    """The files named, directories expanded (sorted), each a kind we read; anything else is an error naming it."""
    found = []
    for p in paths:
        path = resolve_data_path(p)  # `seedbed:data/...` names a file shipped with Seedbed
        if path.is_dir():
            found += sorted(f for f in path.rglob("*") if f.suffix in TEXT_SUFFIXES + JSONL_SUFFIXES)
        elif not path.is_file():
            raise DataError(f"{p}: no such file or directory")
        elif path.suffix not in TEXT_SUFFIXES + JSONL_SUFFIXES:
            raise DataError(f"{p}: pretraining reads .txt, .md and .jsonl files, not {path.suffix or 'this file'}")
        else:
            found.append(path)
    if not found:
        raise DataError(f"data: no .txt, .md or .jsonl files in {', '.join(paths)}")
    return found


def documents(path: Path, text_fields) -> Iterator[str]:
    """The documents of one file, streamed."""
    with path.open(encoding="utf-8") as f:
        if path.suffix in JSONL_SUFFIXES:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{number}: not valid JSON: {e.msg}") from None
                parts = [str(record[k]) for k in text_fields if isinstance(record, dict) and record.get(k) not in (None, "")]
                if not parts:
                    raise DataError(f"{path}:{number}: none of the text fields {list(text_fields)} (set --text-fields)")
                yield "\n".join(parts)
        else:
            paragraph: list[str] = []
            for line in f:
                if line.strip():
                    paragraph.append(line.rstrip("\n"))
                elif paragraph:
                    yield "\n".join(paragraph)
                    paragraph = []
            if paragraph:
                yield "\n".join(paragraph)


def all_documents(paths: list[Path], text_fields) -> Iterator[str]:
    for path in paths:
        yield from documents(path, text_fields)


def packed_blocks(paths: tuple[str, ...], tokenizer_dir: str, max_length: int, text_fields: tuple[str, ...],
                  counts: dict) -> Iterator[dict]:
    """Blocks of exactly `max_length` tokens from the documents of `paths`, in order; `counts` receives the
    per-file lineage (documents, characters, tokens) and the tokens left over at the end (fewer than a block)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    buffer: list[int] = []
    for path in text_files(paths):
        info = TextFile(str(path), sha256_file(path))
        counts.setdefault("files", []).append(info)
        batch: list[str] = []
        stream = documents(path, text_fields)
        while True:
            batch = [d for _, d in zip(range(ENCODE_BATCH), stream)]
            if not batch:
                break
            info.records += len(batch)
            info.examples += len(batch)
            info.characters += sum(len(d) for d in batch)
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                doc = [bos, *ids, eos]
                info.tokens += len(doc)
                buffer.extend(doc)
            while len(buffer) >= max_length:
                yield {"input_ids": buffer[:max_length]}
                del buffer[:max_length]
    counts["left_over_tokens"] = len(buffer)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
