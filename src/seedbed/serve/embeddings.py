"""`POST /v1/embeddings`: all-MiniLM-L6-v2 (384 dimensions), the same embedder the retrieval index uses.

Bounded as OpenAI bounds its own: at most `Limits.max_embedding_inputs` inputs (OpenAI's 2048), none longer than
the model reads (MiniLM: 256 word pieces; OpenAI refuses past its model's 8192 too, rather than embed a silently
cut text), and at most `Limits.max_embedding_tokens` together. Unbounded, 50,000 one-word inputs took 67 s and
1.6 GB and made a 405 MB reply.
"""

from __future__ import annotations

import asyncio
import base64

from seedbed.serve.protocol import APIError, ServerConfig

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MODEL_NAMES = {EMBEDDING_MODEL, "sentence-transformers/" + EMBEDDING_MODEL}  # its short and its Hugging Face name


async def embed_response(config: ServerConfig, body) -> dict:
    from seedbed.retrieval import Embedder

    if body.model not in MODEL_NAMES:
        raise APIError(404, f"model '{body.model}' is not an embedding model served here; use {EMBEDDING_MODEL}",
                       param="model", code="model_not_found")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if any(not isinstance(t, str) or not t for t in texts):
        raise APIError(400, "input must be a non-empty string or a list of non-empty strings", param="input")
    limits = config.limits
    if len(texts) > limits.max_embedding_inputs:
        raise APIError(400, f"{len(texts)} inputs; this server embeds at most {limits.max_embedding_inputs} per "
                       "request", param="input")
    embedder = Embedder()
    counts = await asyncio.to_thread(embedder.token_counts, texts)  # off the event loop: up to a megabyte of text
    if (longest := max(counts)) > embedder.max_tokens:
        i = counts.index(longest)
        raise APIError(400, f"input[{i}] is {longest} tokens; {EMBEDDING_MODEL} reads at most {embedder.max_tokens}: "
                       "split the text", param="input")
    if sum(counts) > limits.max_embedding_tokens:
        raise APIError(400, f"the inputs come to {sum(counts)} tokens; this server embeds at most "
                       f"{limits.max_embedding_tokens} per request", param="input")
    vectors = await asyncio.to_thread(embedder.embed, texts)  # (n, 384) float32, L2-normalised
    data = []
    for i, vector in enumerate(vectors):
        value = base64.b64encode(vector.tobytes()).decode() if body.encoding_format == "base64" else vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": EMBEDDING_MODEL,
            "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}}
