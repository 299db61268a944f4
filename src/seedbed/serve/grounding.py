"""Retrieval grounding: look the question up in the model's index and put the chunks, numbered, before it.

The response carries the citations in an extension field, `seedbed_citations`: a list of
`{"id": n, "source": path, "chunk_id": id, "score": rrf_score}`, where `n` is the `[n]` the model was shown.
"""

from __future__ import annotations

GROUNDING = (
    "Answer using the sources below when they are relevant, and cite them as [n].\n\n{sources}"
)


def ground(rag: tuple, messages: list[dict]) -> tuple[list[dict], list[dict]]:
    store, k = rag
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    hits = store.search(question, k=k) if question else []
    citations = [{"id": i + 1, "source": h.source, "chunk_id": h.chunk_id, "score": round(h.score, 6)}
                 for i, h in enumerate(hits)]
    if not hits:
        return messages, citations
    sources = "\n\n".join(f"[{i + 1}] ({h.source})\n{h.text}" for i, h in enumerate(hits))
    system = GROUNDING.format(sources=sources)
    if messages and messages[0]["role"] == "system":
        grounded = [{"role": "system", "content": messages[0]["content"] + "\n\n" + system}, *messages[1:]]
    else:
        grounded = [{"role": "system", "content": system}, *messages]
    return grounded, citations
