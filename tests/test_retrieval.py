"""Retrieval: chunking, the MiniLM embedder, the index (replace, delete, reopen), and grounded answers with citations."""

from __future__ import annotations

import httpx
import openai
import pytest

from seedbed.retrieval import Embedder, build_index, open_index, remove_from_index
from seedbed.retrieval.chunking import chunk_text
from seedbed.retrieval.documents import DocumentError, read_documents

FACT = "The Zorblax reactor in Tallinn was commissioned in 1987 and still powers the old harbour."


@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "reactor.md").write_text("# Energy\n\n" + FACT + "\n")
    (d / "bread.txt").write_text("Sourdough bread rises slowly because wild yeast ferments the dough overnight.")
    (d / "page.html").write_text("<html><script>var x=1;</script><body><p>Cats sleep sixteen hours a day.</p></body></html>")
    (d / "notes.jsonl").write_text('{"id": "n1", "text": "Mount Everest is 8,849 metres high."}\n')
    return d


def test_chunks_overlap_and_prefer_boundaries():
    text = " ".join(f"Sentence number {i} is here." for i in range(100))
    chunks = chunk_text(text, size=200, overlap=40)
    assert all(len(c.text) <= 200 for c in chunks) and len(chunks) > 10
    assert all(c.text.endswith(".") for c in chunks[:-1])  # cut after a sentence, not mid-word
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:]))  # consecutive chunks overlap
    assert chunk_text("short", 200, 40)[0].text == "short" and chunk_text(text, 200, 40) == chunks


def test_documents(docs):
    by_source = {d.source.split("/")[-1]: d.text for d in read_documents([str(docs)])}
    assert "var x" not in by_source["page.html"] and "Cats sleep" in by_source["page.html"]
    assert by_source["notes.jsonl#n1"].startswith("Mount Everest")
    (docs / "bad.jsonl").write_text('{"title": "no text"}\n')
    with pytest.raises(DocumentError, match="bad.jsonl:1"):
        read_documents([str(docs / "bad.jsonl")])


def test_embeddings_are_normalised_and_semantic():
    v = Embedder().embed(["A cat is sleeping.", "A kitten naps.", "The stock market fell."])
    assert v.shape == (3, 384) and abs(float((v[0] ** 2).sum()) - 1) < 1e-4
    assert v[0] @ v[1] > v[0] @ v[2]


def test_index_search_replace_delete_reopen(docs, tmp_path):
    out = str(tmp_path / "index")
    report = build_index([str(docs)], out, progress=False)
    assert report.added == 4 and report.chunks == 4
    hits = open_index(out).search("When was the Zorblax reactor commissioned?", k=2)
    assert hits[0].source.endswith("reactor.md") and hits[0].bm25_rank == 0
    semantic = open_index(out).search("How long do felines doze?", k=1)  # no shared words
    assert semantic[0].source.endswith("page.html") and semantic[0].bm25_rank is None

    (docs / "reactor.md").write_text("The Zorblax reactor was shut down in 2024.")
    again = build_index([str(docs)], out, progress=False)
    assert (again.replaced, again.unchanged, again.chunks) == (1, 3, 4)
    store = open_index(out)
    assert "1987" not in store.search("Zorblax reactor", k=1)[0].text

    remove_from_index(out, [str(docs / "reactor.md")])
    store = open_index(out)
    assert all("Zorblax" not in h.text for h in store.search("Zorblax reactor", k=4))
    assert len(store.vectors) == store.chunk_count() == 3


def test_served_answer_cites_the_indexed_document(docs, tmp_path, tiny_model):
    import socket
    import threading
    import time

    import uvicorn

    from seedbed.serve.app import ServerConfig, create_app
    from seedbed.serve.engine import Engine

    out = str(tmp_path / "index")
    build_index([str(docs)], out, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServerConfig({"tiny": Engine("tiny", str(tiny_model))}, rag={"tiny": (open_index(out), 2)})
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
