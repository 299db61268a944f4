"""Retrieval: documents, chunking, the MiniLM embedder, the index (search, replace, delete, reopen, repair), and
grounded answers with citations."""

from __future__ import annotations

import json
import sqlite3
import sys

import httpx
import numpy as np
import openai
import pytest

from seedbed.retrieval import Embedder, build_index, open_index, remove_from_index
from seedbed.retrieval.chunking import chunk_text
from seedbed.errors import RetrievalError
from seedbed.retrieval.documents import Document, DocumentError, read_documents
from seedbed.retrieval.ranking import fts_query
from seedbed.retrieval.store import Store

FACT = "The Zorblax reactor in Tallinn was commissioned in 1987 and still powers the old harbour."
# A paraphrase of FACT's question that shares no word (nor stem) with any document: only vectors can find it.
NO_SHARED_WORDS = "What year did Estonia's atomic plant begin running?"
SMALL = {"chunk_size": 200, "overlap": 40}  # so the long document below has several chunks


@pytest.fixture(scope="module")
def embedder():
    """Loaded once for the module: the model is cached per process, so later Embedders are free."""
    e = Embedder()
    e.embed(["warm up"])
    return e


@pytest.fixture
def docs(tmp_path, embedder):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "reactor.md").write_text("# Energy\n\n" + FACT + "\n")
    (d / "sub" / "bread.txt").write_text(
        " ".join(f"Sourdough loaf {i} rises slowly because wild yeast ferments the dough overnight." for i in range(8)))
    (d / "page.html").write_text("<html><head><style>p {color: red}</style><script>var x = 1;</script></head>"
                                 "<body><p>Cats <b>sleep</b> sixteen hours a day.</p></body></html>")
    (d / "notes.jsonl").write_text('{"id": "n1", "text": "Mount Everest is 8,849 metres high."}\n')
    return d


def _saved_keys_match_chunk_ids(out) -> bool:
    """Read the saved files directly (opening a Store would repair a mismatch and hide it)."""
    from usearch.index import Index

    keys = {int(k) for k in np.asarray(Index.restore(f"{out}/vectors.usearch").keys)}
    return keys == {i for (i,) in sqlite3.connect(f"{out}/chunks.sqlite").execute("SELECT id FROM chunks")}


def _build(docs, tmp_path, **kwargs):
    out = str(tmp_path / "index")
    return out, build_index([str(docs)], out, progress=False, **(SMALL | kwargs))


# --- chunking -----------------------------------------------------------------------------------------------


def test_chunks_are_bounded_overlap_and_cover_the_text():
    text = " ".join(f"Sentence number {i} is here." for i in range(100))
    chunks = chunk_text(text, size=200, overlap=40)
    assert len(chunks) > 10 and all(len(c.text) <= 200 for c in chunks)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:]))  # consecutive chunks share text
    covered = set().union(*(range(c.start, c.end) for c in chunks))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_chunks_prefer_paragraph_then_sentence_then_word_boundaries():
    sentences = " ".join(f"Sentence number {i} is here." for i in range(100))
    assert all(c.text.endswith(".") for c in chunk_text(sentences, 200, 40)[:-1])  # not mid-sentence
    paragraphs = "\n\n".join("Short one. Another sentence here." for _ in range(20))
    assert all(c.text.endswith("here.") for c in chunk_text(paragraphs, 120, 20)[:-1])
    words = " ".join(["word"] * 200)
    chunks = chunk_text(words, 50, 10)
    assert all(c.text.split() == ["word"] * len(c.text.split()) for c in chunks)  # never a cut word


def test_short_text_is_one_chunk_and_chunking_is_deterministic():
    assert chunk_text("  short  ") == [chunk_text("  short  ")[0]] and chunk_text("  short  ")[0].text == "short"
    assert chunk_text("") == [] and chunk_text(" \n ") == []
    text = "Alpha beta gamma. " * 300
    assert chunk_text(text) == chunk_text(text)
    with pytest.raises(ValueError, match="overlap"):
        chunk_text(text, size=100, overlap=100)


# --- documents ----------------------------------------------------------------------------------------------


def test_documents_of_each_format(docs):
    (docs / "more.jsonl").write_text('{"content": "from content"}\n\n{"text": "no id", "id": null}\n')
    (docs / "image.png").write_bytes(b"\x89PNG")  # in a directory, unsupported files are skipped
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "secret.txt").write_text("skip me")
    by_source = {d.source.removeprefix(str(docs) + "/"): d for d in read_documents([str(docs)])}
    assert sorted(by_source) == ["more.jsonl#L1", "more.jsonl#L3", "notes.jsonl#n1", "page.html", "reactor.md",
                                 "sub/bread.txt"]
    page = by_source["page.html"].text
    assert page == "Cats sleep sixteen hours a day."  # no script, no style, inline tags keep the words together
    assert by_source["notes.jsonl#n1"].text.startswith("Mount Everest")
    assert by_source["notes.jsonl#n1"].path == str(docs / "notes.jsonl")
    assert by_source["more.jsonl#L1"].text == "from content" and by_source["reactor.md"].text.startswith("# Energy")


def test_jsonl_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    with pytest.raises(DocumentError, match=r"bad.jsonl:2: .*'text' or 'content'"):
        read_documents([str(bad)])
    bad.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    with pytest.raises(DocumentError, match=r"bad.jsonl:2: id '1' already used on line 1"):
        read_documents([str(bad)])


def test_unsupported_missing_and_pdf_without_pypdf_are_clear_errors(tmp_path, monkeypatch):
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(DocumentError, match=r"table.csv: unsupported file type '.csv'; can index .txt"):
        read_documents([str(tmp_path / "table.csv")])
    with pytest.raises(DocumentError, match="nowhere: no such file or directory"):
        read_documents([str(tmp_path / "nowhere")])
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4")
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if installed without [rag]
    with pytest.raises(DocumentError, match=r"paper.pdf: .*pip install 'seedbed\[rag\]'"):
        read_documents([str(tmp_path / "paper.pdf")])


# --- embedder and ranking -----------------------------------------------------------------------------------


def test_embeddings_are_384_unit_vectors_and_semantic(embedder):
    v = embedder.embed(["A cat is sleeping.", "A kitten naps.", "The stock market fell."])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3  # the paraphrase is much closer than the unrelated sentence
    assert embedder.embed([]).shape == (0, 384)


def test_fts_query_quotes_every_term():
    assert fts_query('Zorblax" AND (1987* NEAR:') == '"zorblax" OR "and" OR "1987" OR "near"'
    assert fts_query("?! ()") is None


# --- the index ----------------------------------------------------------------------------------------------


def test_search_puts_the_fact_first(docs, tmp_path):
    out, report = _build(docs, tmp_path)
    assert (report.added_files, report.replaced_files, report.unchanged_files, report.removed_files) == (4, 0, 0, 0)
    store = open_index(out)
    n_bread = len(chunk_text((docs / "sub" / "bread.txt").read_text(), **{"size": 200, "overlap": 40}))
    assert n_bread > 1 and report.chunks == store.chunk_count() == 3 + n_bread == len(store.vectors)
    hits = store.search("When was the Zorblax reactor commissioned?", k=3)
    assert hits[0].source.endswith("reactor.md") and "1987" in hits[0].text
    assert (hits[0].bm25_rank, hits[0].vector_rank) == (1, 1) and hits[0].score == pytest.approx(2 / 61)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and len(hits) == 3


def test_search_by_meaning_alone_via_the_vectors(docs, tmp_path):
    out, _ = _build(docs, tmp_path)
    store = open_index(out)
    assert fts_query(NO_SHARED_WORDS) and not store.db.execute(
        "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?", (fts_query(NO_SHARED_WORDS),)).fetchall()
    hit = store.search(NO_SHARED_WORDS, k=1)[0]
    assert hit.source.endswith("reactor.md") and hit.bm25_rank is None and hit.vector_rank == 1
    cats = store.search("How long do felines doze?", k=1)[0]
    assert cats.source.endswith("page.html") and cats.bm25_rank is None


def test_query_syntax_cannot_break_search(docs, tmp_path):
    out, _ = _build(docs, tmp_path)
    for query in ['Zorblax" OR (AND* NEAR(', "reactor:1987 -^", '""', "*", "   "]:
        open_index(out).search(query, k=2)  # no sqlite3.OperationalError
    assert open_index(out).search('"Zorblax" AND (reactor*', k=1)[0].source.endswith("reactor.md")


def test_reindexing_replaces_changed_documents_and_skips_unchanged(docs, tmp_path):
    out, first = _build(docs, tmp_path)
    store = open_index(out)
    old_ids = [i for (i,) in store.db.execute("SELECT id FROM chunks WHERE source LIKE '%bread.txt'")]
    store.close()
    (docs / "reactor.md").write_text("The Zorblax reactor was shut down in 2024.")
    (docs / "sub" / "bread.txt").write_text("Rye bread is dense.")  # several chunks become one
    again = build_index([str(docs)], out, progress=False, **SMALL)
    assert (again.added_files, again.replaced_files, again.unchanged_files, again.removed_files) == (0, 2, 2, 0)
    assert again.chunks == first.chunks - len(old_ids) + 1 and _saved_keys_match_chunk_ids(out)
    store = open_index(out)
    assert store.chunk_count() == len(store.vectors) == again.chunks
    assert not any("1987" in h.text or "wild yeast" in h.text for h in store.search("Zorblax reactor bread", k=10))
    bm25 = "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?"
    assert not store.db.execute(bm25, (fts_query("1987 yeast"),)).fetchall()
    assert not any(store.vectors.contains(i) for i in old_ids)
    assert "2024" in store.search("When was the Zorblax reactor shut down?", k=1)[0].text


def test_rebuild_drops_files_gone_from_the_given_paths(docs, tmp_path):
    out, _ = _build(docs, tmp_path)
    (docs / "sub" / "bread.txt").unlink()
    (docs / "notes.jsonl").write_text('{"id": "n2", "text": "K2 is 8,611 metres high."}\n')  # n1 gone, n2 new
    report = build_index([str(docs)], out, progress=False, **SMALL)
    assert (report.added_files, report.unchanged_files, report.removed_files) == (1, 2, 2)
    assert [s.removeprefix(str(docs) + "/") for s in open_index(out).sources()] == [
        "notes.jsonl#n2", "page.html", "reactor.md"]
    build_index([str(docs / "reactor.md")], out, progress=False, **SMALL)  # a narrower build keeps the others
    assert len(open_index(out).sources()) == 3


def test_deleting_a_source_removes_it_from_sqlite_and_usearch(docs, tmp_path):
    out, _ = _build(docs, tmp_path)
    reactor = str(docs / "reactor.md")
    store = open_index(out)
    ids = [i for (i,) in store.db.execute("SELECT id FROM chunks WHERE source = ?", (reactor,))]
    assert ids and store.delete_source(reactor) == len(ids)
    store.close()
    assert _saved_keys_match_chunk_ids(out)
    for store in (Store(out), open_index(out)):  # from disk: the deletion was saved
        assert reactor not in store.sources() and not store.search("Zorblax", k=1)[0].source == reactor
        assert not store.db.execute("SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH 'zorblax'").fetchall()
        assert not any(store.vectors.contains(i) for i in ids) and len(store.vectors) == store.chunk_count()


def test_remove_from_index_by_source_file_or_directory(docs, tmp_path):
    out, _ = _build(docs, tmp_path)
    assert remove_from_index(out, [str(docs / "notes.jsonl")]) == [str(docs / "notes.jsonl") + "#n1"]
    assert remove_from_index(out, [str(docs / "sub")]) == [str(docs / "sub" / "bread.txt")]
    assert remove_from_index(out, [str(docs / "reactor.md")]) == [str(docs / "reactor.md")]
    with pytest.raises(ValueError, match="no indexed source matches .*nothing.md"):
        remove_from_index(out, [str(docs / "page.html"), str(docs / "nothing.md")])
    store = open_index(out)
    assert store.sources() == [str(docs / "page.html")] and _saved_keys_match_chunk_ids(out)


def test_reopening_from_disk_gives_the_same_results(docs, tmp_path):
    out = str(tmp_path / "index")
    queries = ["When was the Zorblax reactor commissioned?", NO_SHARED_WORDS, "bread", "How high is Everest?"]
    with Store(out, **SMALL) as store:
        store.add_documents(read_documents([str(docs)]))
        before = [[(h.source, h.chunk_id, h.score) for h in store.search(q, k=4)] for q in queries]
    reopened = open_index(out)
    assert [[(h.source, h.chunk_id, h.score) for h in reopened.search(q, k=4)] for q in queries] == before
    stats = reopened.stats()
    assert (stats["sources"], stats["embedder"], stats["dimension"], stats["chunk_size"]) == (
        4, "all-MiniLM-L6-v2", 384, 200)


def test_an_index_of_another_embedder_or_shape_is_refused(docs, tmp_path):
    out, _ = _build(docs, tmp_path)
    meta_path = tmp_path / "index" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"dimension": 768}))
    with pytest.raises(ValueError, match="768 dimensions.*all-MiniLM-L6-v2 \\(384\\)"):
        open_index(out)
    meta_path.write_text(json.dumps(meta | {"embedder": "bge-small"}))
    with pytest.raises(ValueError, match="bge-small"):
        open_index(out)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="chunk size 200 and overlap 40, asked for 800 and 160"):
        build_index([str(docs)], out, progress=False)
    with pytest.raises(ValueError, match="not a Seedbed index"):
        open_index(str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="is the input"):
        build_index([str(docs)], str(docs), progress=False)  # --out pointed at the documents by mistake
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="exists and is not a Seedbed index"):
        build_index([str(docs)], str(tmp_path / "other"), progress=False)
    with pytest.raises(ValueError, match="exists and is not a directory"):
        build_index([str(docs)], str(tmp_path / "other" / "thesis.tex"), progress=False)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["thesis.tex"]


def test_an_interrupted_update_is_repaired_on_open(docs, tmp_path):
    out, _ = _build(docs, tmp_path)
    store = Store(out)
    store.add_document(Document(str(docs / "reactor.md"), "The Zorblax reactor moved to Tartu in 2031."))
    store.db.close()  # dies before saving the vectors: SQLite has the new chunk, the vectors file the old one
    repaired = open_index(out)
    ids = {i for (i,) in repaired.db.execute("SELECT id FROM chunks")}
    assert {int(k) for k in np.asarray(repaired.vectors.keys)} == ids
    assert "Tartu" in repaired.search(NO_SHARED_WORDS, k=1)[0].text
    (tmp_path / "index" / "vectors.usearch").unlink()  # vectors lost entirely: re-embedded from the chunk text
    assert len(open_index(out).vectors) == len(ids)


def test_sqlite_schema_is_as_documented(docs, tmp_path):
    out, _ = _build(docs, tmp_path)
    db = sqlite3.connect(tmp_path / "index" / "chunks.sqlite")
    columns = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in ("files", "chunks")}
    assert columns == {"files": ["source", "path", "sha256", "mtime", "n_chunks"],
                       "chunks": ["id", "source", "chunk_no", "start", "end", "text"]}
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [".writer.lock", "chunks.sqlite", "index.json",
                                                                        "vectors.usearch"]


# --- serving ------------------------------------------------------------------------------------------------


def test_served_answer_cites_the_indexed_document(docs, tmp_path, tiny_model):
    import socket
    import threading
    import time

    import uvicorn

    from seedbed.serve.app import ServerConfig, create_app
    from seedbed.inference import load
    from seedbed.serve.engine import Engine

    out, _ = _build(docs, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServerConfig({"tiny": Engine("tiny", load(str(tiny_model)))}, rag={"tiny": (open_index(out), 2)})
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="tiny", messages=[{"role": "user", "content": "When was the Zorblax reactor commissioned?"}],
            max_tokens=8, temperature=0)
        citations = raw.http_response.json()["seedbed_citations"]
        assert citations[0]["source"].endswith("reactor.md") and citations[0]["id"] == 1
        vectors = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello", "world"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"model": "m", "input": []})
        assert bad.status_code == 400 and "error" in bad.json()
    finally:
        server.should_exit = True


def test_links_out_of_the_tree_and_huge_files_are_left_out_counted_and_named(tmp_path, monkeypatch, embedder):
    from seedbed.retrieval import documents

    secret = tmp_path / "home" / "credentials.txt"
    secret.parent.mkdir()
    secret.write_text("aws_secret_access_key = hunter2")
    tree = tmp_path / "docs"
    (tree / "sub").mkdir(parents=True)
    (tree / "guide.md").write_text("How to water seedlings.")
    (tree / "sub" / "creds.txt").symlink_to(secret)  # a link leaving the tree
    (tree / "alias.md").symlink_to(tree / "guide.md")  # a link inside it stays
    (tree / "log.txt").write_text("x" * 40)  # over the cap set below
    monkeypatch.setattr(documents, "MAX_FILE_BYTES", 30)
    assert sorted(d.text for d in read_documents([str(tree)])) == ["How to water seedlings."] * 2
    report = build_index([str(tree)], str(tmp_path / "index"), progress=False, **SMALL)
    assert report.added_files == 2  # guide.md and alias.md
    assert report.links_out == [str(tree / "sub" / "creds.txt")] and report.too_large == [str(tree / "log.txt")]
    shown = str(report)
    assert "skipped 1 link(s) pointing out of the indexed folder" in shown and "creds.txt" in shown
    assert "skipped 1 file(s) over 30 bytes" in shown and "log.txt" in shown
    assert "hunter2" not in json.dumps([h.text for h in open_index(str(tmp_path / "index")).search("aws secret")])
    with pytest.raises(DocumentError, match=r"log\.txt: 40 bytes; files over 30 bytes"):  # named itself: an error
        read_documents([str(tree / "log.txt")])


def test_a_second_writer_fails_at_once_and_changes_nothing(docs, tmp_path):
    """Two `seedbed index` runs on one index: while one holds the writer lock (here a child process, as another
    run would), the second fails with a message naming the index, and the index is as before; once the first is
    done, the second runs."""
    import subprocess

    out, first = _build(docs, tmp_path)
    (docs / "new.md").write_text("Tulips bloom in April in the Keukenhof gardens.")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from filelock import FileLock; "
                               f"lock = FileLock({out + '/.writer.lock'!r}); lock.acquire(); print('held', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RetrievalError, match="another `seedbed index` is writing this index"):
            build_index([str(docs)], out, progress=False, **SMALL)
        with pytest.raises(RetrievalError, match="another `seedbed index` is writing this index"):
            remove_from_index(out, [str(docs / "reactor.md")])
        assert open_index(out).chunk_count() == first.chunks and _saved_keys_match_chunk_ids(out)
    finally:
        holder.communicate("")  # the first run ends: its lock goes with it
    assert build_index([str(docs)], out, progress=False, **SMALL).added_files == 1
