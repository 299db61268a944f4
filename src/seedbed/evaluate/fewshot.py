"""Few-shot prompts: solved examples placed as earlier turns of the chat, before the question.

Demonstrations as previous user/assistant turns (rather than pasted into one prompt) work with any chat
template and show the model exactly the answer format we score, as in the few-shot chat format of
lm-eval's `--fewshot_as_multiturn`.
"""

from __future__ import annotations

import random

from seedbed.chat import Example


def fewshot_messages(example: Example, pool: list[Example], k: int, seed: int) -> list[dict[str, str]]:
    """The messages that ask `example`'s question after `k` solved examples from `pool`.

    The choice depends only on `seed` and the example's id, so every model sees the same demonstrations.
    A pool example asking the same question is never used; a system message stays first.

    >>> q = Example("q1", "t:1", [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "#### 2"}])
    >>> d = Example("d1", "p:1", [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "#### 4"}])
    >>> [m["content"] for m in fewshot_messages(q, [d, q], k=1, seed=0)]
    ['2+2?', '#### 4', '1+1?']
    """
    prompt = example.prompt_messages()
    if k == 0:
        return list(prompt)
    question = _question_text(example)
    candidates = [p for p in pool if p.is_chat and _question_text(p) != question]
    if len(candidates) < k:
        raise ValueError(
            f"{k}-shot prompts need {k} examples in the few-shot pool besides the question; "
            f"it has {len(candidates)} usable (chat examples with an answer)"
        )
    demos = random.Random(f"{seed}:{example.id}").sample(candidates, k)
    system = [m for m in prompt[:1] if m["role"] == "system"]
    turns = [m for d in demos for m in _without_system(d.prompt_messages())
             + [{"role": "assistant", "content": d.reference()}]]
    return system + turns + prompt[len(system):]


def _without_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [m for m in messages if m["role"] != "system"]


def _question_text(example: Example) -> str:
    """What an example asks: its prompt turns other than the system message."""
    return "\n".join(m["content"].strip() for m in _without_system(example.prompt_messages()))
