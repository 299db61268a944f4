"""Documents to index: .txt and .md as they are, .html as its visible text, .jsonl as one document per record
(its `text` or `content` field), and .pdf when `pypdf` is installed. Directories are read recursively.

A document's `source` is its file path as given (normalised), plus `#id` for a JSONL record: the record's `id`,
or `L<line>` when it has none. The source is what answers cite and what re-indexing replaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from seedbed.errors import RetrievalError

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".jsonl", ".pdf")
MAX_FILE_BYTES = 100_000_000  # one file read whole into memory
TEXT_FIELDS = ("text", "content")  # looked up in this order in a JSONL record


class DocumentError(RetrievalError):
    """A document that cannot be read or indexed; the message names the file (and line)."""


@dataclass(frozen=True)
class Document:
    source: str  # file path, plus '#id' for a JSONL record
    text: str
    path: str = field(default="", compare=False)  # the file it came from ('' means: the source itself)

    def __post_init__(self):
        if not self.path:
            object.__setattr__(self, "path", self.source)


@dataclass
class FileScan:
    """What `scan_files` found: the files to index, and what it left out of the folders it walked (each counted
    and named in the index report, never dropped without a word)."""

    files: list[Path]
    links_out: list[Path] = field(default_factory=list)  # links in a folder that point outside it: not followed
    too_large: list[Path] = field(default_factory=list)  # files in a folder over MAX_FILE_BYTES: not read


def scan_files(paths: list[str]) -> FileScan:
    """The indexable files under `paths`, each once, in a stable order, and what was left out of the folders.
    Hidden files and folders are skipped. A file named itself is read even if it is a link; one over the size
    cap is an error.

    >>> scan_files(["README.md"]).files  # doctest: +SKIP
    [PosixPath('README.md')]
    """
    scan = FileScan([])
    files: dict[Path, None] = {}  # ordered set
    for given in paths:
        path = Path(given)
        if path.is_dir():
            root = path.resolve()
            found = (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            for p in sorted(found):
                if _hidden(p.relative_to(path)):
                    continue
                if not p.resolve().is_relative_to(root):
                    # A link may point anywhere (~/.aws/credentials); what a folder's files are is what lies inside it.
                    scan.links_out.append(p)
                elif p.stat().st_size > MAX_FILE_BYTES:
                    scan.too_large.append(p)
                else:
                    files[p] = None
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise DocumentError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                                    f"can index {', '.join(SUFFIXES)}")
            _check_size(path)
            files[path] = None
        else:
            raise DocumentError(f"{path}: no such file or directory")
    scan.files = list(files)
    return scan


def find_files(paths: list[str]) -> list[Path]:
    """The indexable files under `paths` (`scan_files`, without what it left out)."""
    return scan_files(paths).files


def read_file(path: Path) -> list[Document]:
    """The documents in one file: one, or one per record for JSONL.

    >>> read_file(Path("notes.md"))  # doctest: +SKIP
    [Document(source='notes.md', text='# Notes ...', path='notes.md')]
    """
    suffix = path.suffix.lower()
    _check_size(path)
    if suffix == ".pdf":
        return [Document(str(path), _pdf_text(path))]
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DocumentError(f"{path}: cannot read ({e.strerror})") from None
    if suffix in (".html", ".htm"):
        return [Document(str(path), html_text(text))]
    if suffix == ".jsonl":
        return _jsonl_records(path, text)
    if suffix in SUFFIXES:
        return [Document(str(path), text)]
    raise DocumentError(f"{path}: unsupported file type {suffix or '(none)'!r}; can index {', '.join(SUFFIXES)}")


def read_documents(paths: list[str]) -> list[Document]:
    """Every document under `paths` (files or directories)."""
    return [doc for path in find_files(paths) for doc in read_file(path)]


def html_text(html: str) -> str:
    """The visible text of an HTML page: no tags, scripts or styles; block elements start new lines.

    >>> html_text("<p>Hello <b>world</b></p><script>x()</script><p>Bye</p>")
    'Hello world\\nBye'
    """
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line)


class _VisibleText(HTMLParser):
    INVISIBLE = {"script", "style", "noscript", "template", "svg"}
    # Elements that break the line, so words of adjacent paragraphs or cells do not run together.
    BLOCKS = {"p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "section", "article", "header",
              "footer", "nav", "aside", "main", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "title",
              "dt", "dd", "figcaption", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0  # depth inside invisible elements

    def handle_starttag(self, tag, attrs):
        if tag in self.INVISIBLE:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.INVISIBLE:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def _jsonl_records(path: Path, text: str) -> list[Document]:
    documents, seen = [], {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise DocumentError(f"{path}:{line_no}: not valid JSON ({e})") from None
        body = next((record[f] for f in TEXT_FIELDS if isinstance(record, dict) and f in record), None)
        if not isinstance(body, str):
            raise DocumentError(f"{path}:{line_no}: a record needs a 'text' or 'content' string field")
        key = str(record["id"]) if record.get("id") is not None else f"L{line_no}"
        if key in seen:  # the same source twice would silently replace the first record
            raise DocumentError(f"{path}:{line_no}: id {key!r} already used on line {seen[key]}")
        seen[key] = line_no
        documents.append(Document(f"{path}#{key}", body, str(path)))
    return documents


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise DocumentError(f"{path}: reading PDF needs pypdf, which comes with the [rag] extra: "
                            "pip install 'seedbed[rag]'") from None
    try:
        return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    except Exception as e:  # pypdf raises many types for damaged files
        raise DocumentError(f"{path}: cannot read PDF ({e})") from None


def _check_size(path: Path) -> None:
    if (size := path.stat().st_size) > MAX_FILE_BYTES:  # read whole: a 40 GB log would exhaust memory first
        raise DocumentError(f"{path}: {size} bytes; files over {MAX_FILE_BYTES} bytes are not indexed "
                            "(split it, or leave it out)")


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
