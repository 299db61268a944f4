"""What scoring a token sequence gives back: each token's log-probability given the tokens before it.

Both backends' `score` return these; log-likelihood evaluation (multiple choice), `/v1/completions` logprobs
(`echo`) and lm-evaluation-harness's requests are all built on it, so every route scores a text the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_TOP = 20  # most alternatives per position anyone may ask for (OpenAI's own limit for top_logprobs)


@dataclass
class TokenScore:
    """Token `token` at its position: log p(token | the tokens before it), and the `top` likeliest alternatives
    there as (token, logprob), likeliest first (empty unless asked for)."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


def total(scores: list[TokenScore]) -> float:
    """The log-likelihood of the scored tokens together.

    >>> total([TokenScore(5, -0.5), TokenScore(9, -1.25)])
    -1.75
    """
    return sum(s.logprob for s in scores)


def is_greedy(scores: list[TokenScore]) -> bool:
    """Whether each token was the likeliest at its position (lm-eval's `is_greedy`; needs top >= 1).

    >>> is_greedy([TokenScore(5, -0.1, [(5, -0.1)]), TokenScore(9, -2.0, [(3, -0.2)])])
    False
    """
    return all(s.top and s.top[0][0] == s.token for s in scores)
