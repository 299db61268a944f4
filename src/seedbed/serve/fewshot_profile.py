"""Few-shot profiles: a served model answers with k worked examples before the question (in-context learning).

    seedbed serve --model tuned=runs/demo/model --fewshot tuned=examples.jsonl --fewshot-k 3 --fewshot-mode similar

`fixed` uses the pool's first k examples for every request; `similar` picks the k whose prompts are closest to
the request's last user message (all-MiniLM-L6-v2 cosine similarity). The examples go in as earlier user and
assistant turns, so the model's own chat template formats them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seedbed.chat import Example


@dataclass
class FewshotProfile:
    examples: list[Example]
    k: int = 3
    mode: str = "similar"
    vectors: np.ndarray | None = field(default=None, repr=False)  # (pool, 384) prompt embeddings

    @classmethod
    def load(cls, paths: list[str], k: int, mode: str) -> "FewshotProfile":
        from seedbed.data.readers import read_examples

        if mode not in ("fixed", "similar"):
            raise ValueError(f"fewshot_mode: 'fixed' or 'similar', not '{mode}'")
        examples = [e for e in read_examples(paths).examples if e.is_chat]
        if len(examples) < k:
            raise ValueError(f"fewshot: {', '.join(paths)} has {len(examples)} chat examples; fewshot_k is {k}")
        profile = cls(examples, k, mode)
        if mode == "similar":
            from seedbed.retrieval import Embedder

            profile.vectors = Embedder().embed([_question(e) for e in examples])
        return profile

    def choose(self, question: str) -> list[Example]:
        if self.mode == "fixed" or not question:
            return self.examples[: self.k]
        from seedbed.retrieval import Embedder

        scores = self.vectors @ Embedder().embed([question])[0]  # (pool,) cosine similarities
        return [self.examples[i] for i in np.argsort(-scores)[: self.k]]

    def apply(self, messages: list[dict]) -> list[dict]:
        """`messages` with the chosen examples as turns after any system messages."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        demos = [turn for e in self.choose(question) for turn in _turns(e)]
        head = [m for m in messages[:1] if m["role"] == "system"]
        return head + demos + messages[len(head):]


def _question(example: Example) -> str:
    return next((m["content"] for m in reversed(example.prompt_messages()) if m["role"] == "user"), "")


def _turns(example: Example) -> list[dict]:
    return [m for m in example.prompt_messages() if m["role"] != "system"] + [
        {"role": "assistant", "content": example.reference()}]
