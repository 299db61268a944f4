"""Few-shot prompts: solved examples placed as earlier turns of the chat, before the question.

Demonstrations as previous user/assistant turns (rather than pasted into one prompt) work with any chat
template and show the model exactly the answer format we score, as in the few-shot chat format of
lm-eval's `--fewshot_as_multiturn`. `seedbed eval` and `seedbed serve --fewshot` build their prompts with
the same `with_demonstrations`, so eval's few-shot numbers describe what the served profile does; they differ
only in how the examples are chosen (eval: a seeded random draw; serve: the first k, or the k most similar).
"""

from __future__ import annotations

import random

from seedbed.chat import Example
from seedbed.errors import EvalError


def question_text(messages: list[dict[str, str]]) -> str:
    """What a conversation asks: its last user turn.

    >>> question_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": " 1+1? "}])
    '1+1?'
    """
    return next((m["content"].strip() for m in reversed(messages) if m["role"] == "user"), "")


def demonstration_turns(demos: list[Example]) -> list[dict[str, str]]:
    """Each solved example as user turn(s) and its answer as the assistant turn (system messages left out)."""
    return [m for d in demos for m in [*(p for p in d.prompt_messages() if p["role"] != "system"),
                                       {"role": "assistant", "content": d.reference()}]]


def with_demonstrations(messages: list[dict[str, str]], demos: list[Example]) -> list[dict[str, str]]:
    """`messages` with `demos` as earlier turns; a system message stays first."""
    head = [m for m in messages[:1] if m["role"] == "system"]
    return head + demonstration_turns(demos) + list(messages[len(head):])


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
    question = question_text(prompt)
    candidates = [p for p in pool if p.is_chat and question_text(p.prompt_messages()) != question]
    if len(candidates) < k:
        raise EvalError(
            f"{k}-shot prompts need {k} examples in the few-shot pool besides the question; "
            f"it has {len(candidates)} usable (chat examples with an answer)"
        )
    return with_demonstrations(prompt, random.Random(f"{seed}:{example.id}").sample(candidates, k))
