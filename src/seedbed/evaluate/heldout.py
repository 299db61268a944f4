"""Held-out loss: how well a model predicts the reference answers, token by token.

Only the tokens a fine-tuned model is trained to produce are scored (the assistant turns, end-of-turn
marker included, via `chat.tokenize_example`), so base and tuned models are compared on the same tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seedbed.chat import Example, tokenize_example

IGNORE = -100  # label for tokens that are not scored, as in transformers' loss functions


def heldout_loss(model, tokenizer, examples: list[Example], max_length: int = 1024, batch_size: int = 8) -> dict:
    """Token-weighted mean cross-entropy over the assistant tokens of `examples`, and its perplexity.

    Raw-text examples are scored on all their tokens. With no scored token, loss and perplexity are NaN.

    >>> heldout_loss(model, tokenizer, examples)  # doctest: +SKIP
    {'loss': 1.83, 'perplexity': 6.23, 'tokens': 5120}
    """
    rows = [tokenize_example(tokenizer, ex, max_length) for ex in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(r["input_ids"]) for r in batch)
            # Right padding: real tokens keep positions 0..n-1, exactly as in training.
            ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch])
            attention = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
            labels = torch.tensor([[t if m else IGNORE for t, m in zip(r["input_ids"], r["assistant_masks"])]
                                   + [IGNORE] * (width - len(r["input_ids"])) for r in batch])
            logits = model(input_ids=ids.to(model.device), attention_mask=attention.to(model.device)).logits
            # Position t predicts token t+1.  logits: (batch, seq, vocab)
            targets = labels[:, 1:].to(model.device)
            scored = targets != IGNORE  # (batch, seq-1); indexing copies only the scored rows of the logits
            total += F.cross_entropy(logits[:, :-1][scored].float(), targets[scored], reduction="sum").item()
            tokens += int(scored.sum())
    model.train(was_training)
    loss = total / tokens if tokens else math.nan
    return {"loss": loss, "perplexity": math.exp(loss) if tokens else math.nan, "tokens": tokens}
