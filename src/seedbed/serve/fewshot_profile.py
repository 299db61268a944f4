"""Few-shot profiles: a served model answers with k worked examples before the question (in-context learning).

    seedbed serve --model tuned=runs/demo/model --fewshot tuned=examples.jsonl --fewshot-k 3 --fewshot-mode similar

`fixed` uses the pool's first k examples for every request; `similar` picks the k whose questions are closest to
the request's (all-MiniLM-L6-v2 cosine similarity). The prompt is built by `seedbed.evaluate.fewshot`, the same
builder `seedbed eval --shots k` uses: the examples go in as earlier user and assistant turns, so the model's own
chat template formats them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seedbed.chat import Example
from seedbed.errors import RecipeError
from seedbed.evaluate.fewshot import question_text, with_demonstrations


@dataclass
class FewshotProfile:
    examples: list[Example]
    k: int = 3
    mode: str = "similar"
    vectors: np.ndarray | None = field(default=None, repr=False)  # (pool, 384) question embeddings

    @classmethod
    def load(cls, paths: list[str], k: int, mode: str) -> "FewshotProfile":
        from seedbed.data.readers import read_examples

        if mode not in ("fixed", "similar"):
            raise RecipeError(f"fewshot_mode: 'fixed' or 'similar', not '{mode}'")
        examples = [e for e in read_examples(paths).examples if e.is_chat]
        if len(examples) < k:
            raise RecipeError(f"fewshot: {', '.join(paths)} has {len(examples)} chat examples; fewshot_k is {k}")
        profile = cls(examples, k, mode)
        if mode == "similar":
            from seedbed.retrieval import Embedder

            profile.vectors = Embedder().embed([question_text(e.prompt_messages()) for e in examples])
        return profile

    def choose(self, question: str) -> list[Example]:
        if self.mode == "fixed" or not question:
            return self.examples[: self.k]
        from seedbed.retrieval import Embedder

        scores = self.vectors @ Embedder().embed([question])[0]  # (pool,) cosine similarities
        return [self.examples[i] for i in np.argsort(-scores)[: self.k]]

    def apply(self, messages: list[dict]) -> list[dict]:
        """`messages` with the chosen examples as turns after any system messages."""
        return with_demonstrations(messages, self.choose(question_text(messages)))
