"""`POST /v1/embeddings`: all-MiniLM-L6-v2 (384 dimensions), the same embedder the retrieval index uses."""

from __future__ import annotations

import asyncio
import base64

from seedbed.serve.protocol import APIError

EMBEDDING_MODEL = "all-MiniLM-L6-v2"


async def embed_response(body) -> dict:
    from seedbed.retrieval import Embedder

    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if any(not isinstance(t, str) or not t for t in texts):
        raise APIError(400, "input must be a non-empty string or a list of non-empty strings", param="input")
    vectors = await asyncio.to_thread(Embedder().embed, texts)  # (n, 384) float32, L2-normalised
    data = []
    for i, vector in enumerate(vectors):
        value = base64.b64encode(vector.tobytes()).decode() if body.encoding_format == "base64" else vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(len(t.split()) for t in texts)  # MiniLM's own count is not exposed cheaply; words as a proxy
    return {"object": "list", "data": data, "model": body.model or EMBEDDING_MODEL,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
