"""Documents to index: .txt, .md, .html (text only), .jsonl (a `text` or `content` field per record), .pdf
(with pypdf, if installed). Directories are read recursively."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = (".txt", ".md", ".html", ".htm", ".jsonl", ".pdf")


class DocumentError(ValueError):
    pass


@dataclass
class Document:
    source: str  # the file path; '#id' added for a JSONL record
    text: str


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data):
        if not self.skip and data.strip():
            self.parts.append(data.strip())


def read_documents(paths: list[str]) -> list[Document]:
    """Every document under `paths`, in sorted order."""
    files = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise DocumentError(f"{path}: unsupported file type; index {', '.join(SUFFIXES)}")
            files.append(path)
        else:
            raise DocumentError(f"{path}: no such file or directory")
    documents = []
    for path in files:
        documents += _read(path)
    return documents


def _read(path: Path) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        try:
            from pypdf import PdfReader
        except ImportError:
            raise DocumentError(f"{path}: PDF needs pypdf (pip install pypdf)") from None
        return [Document(str(path), "\n".join(page.extract_text() or "" for page in PdfReader(path).pages))]
    text = path.read_text(errors="replace")
    if suffix in (".html", ".htm"):
        parser = _Text()
        parser.feed(text)
        return [Document(str(path), "\n".join(parser.parts))]
    if suffix == ".jsonl":
        documents = []
        for line_no, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise DocumentError(f"{path}:{line_no}: not JSON ({e})") from None
            body = record.get("text", record.get("content")) if isinstance(record, dict) else None
            if not isinstance(body, str):
                raise DocumentError(f"{path}:{line_no}: field 'text': a record needs a 'text' or 'content' string")
            documents.append(Document(f"{path}#{record.get('id', line_no)}", body))
        return documents
    return [Document(str(path), text)]
