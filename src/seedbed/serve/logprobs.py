"""OpenAI's legacy `logprobs` object of `/v1/completions`, built from `Backend.score`'s `TokenScore`s.

    {"tokens": [" Paris", "."], "token_logprobs": [-0.3, -1.2], "top_logprobs": [{" Paris": -0.3}, {".": -1.2}],
     "text_offset": [17, 23]}

With `echo` the prompt's tokens come first, the very first with a null logprob and null alternatives (nothing
precedes it), as OpenAI's own API answers. The completion's tokens are all those sampled, the one that ended it
included (an end-of-turn token, the last of a stop string), as vLLM reports them: one per `completion_tokens`, which
lm-eval relies on (it drops the last logprob of an echoed prompt + one token). `text_offset` counts characters from
the start of the prompt's text, as OpenAI's does, so without `echo` the first offset is the prompt's length.
"""

from __future__ import annotations

from seedbed.inference.scores import TokenScore


def token_text(tokenizer, token: int) -> str:
    """One token's text as `tokens` and `top_logprobs` show it (special tokens by name)."""
    return tokenizer.decode([token], skip_special_tokens=False)


def legacy_logprobs(tokenizer, ids: list[int], shown: int, scores: list[TokenScore]) -> dict:
    """The logprobs of `ids[shown:]` (`shown` 0 with echo, else the prompt's length); `scores` are
    `Backend.score`'s for `ids` from max(shown, 1) on."""
    lead = [None] if shown == 0 else []  # the first token has nothing before it to be scored by
    top = []
    for s in scores:
        alternatives: dict[str, float] = {}
        for token, logprob in s.top:  # likeliest first: two ids with one text keep the likelier
            alternatives.setdefault(token_text(tokenizer, token), logprob)
        top.append(alternatives)
    # Each offset is the length of the text before the token; a character split across tokens (U+FFFD while
    # incomplete) counts once it is whole.
    before = tokenizer.batch_decode([ids[:i] for i in range(shown, len(ids))], skip_special_tokens=True)
    return {
        "tokens": [token_text(tokenizer, t) for t in ids[shown:]],
        "token_logprobs": lead + [s.logprob for s in scores],
        "top_logprobs": lead + top,
        "text_offset": [len(text.rstrip("\ufffd")) for text in before],
    }
