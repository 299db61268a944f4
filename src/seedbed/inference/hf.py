"""The torch backend: a transformers model decoded by our own batched loop, and held-out loss.

Rows are prefilled together (left-padded), then each step decodes one token for every live row; a row that
finishes or is cancelled leaves the batch at once (its KV-cache row is dropped), so a long answer does not hold
short ones back. We write the loop ourselves because `model.generate` cannot stream a batch or end one row early;
the forward pass, KV cache and sampling maths are transformers' and torch's. `generate`, `eval` and `serve` all
decode here, so one seed gives one answer everywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seedbed.chat import Example, tokenize_example
from seedbed.inference.request import Request
from seedbed.inference.stops import TextTracker

IGNORE = -100  # label for tokens that are not scored, as in transformers' loss functions


class TorchBackend:
    """A loaded causal LM and its tokenizer.

    >>> backend = TorchBackend(*load_model("runs/demo/model"))  # doctest: +SKIP
    >>> backend.decode([Request(prompt_ids, max_tokens=20, temperature=0)])  # doctest: +SKIP
    """

    max_batch = 2**31  # no limit of its own: callers choose (eval's --batch-size, serve's --max-batch)

    def __init__(self, model, tokenizer, name: str = ""):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.model.eval()
        eos = model.generation_config.eos_token_id
        self.eos_ids = set([] if eos is None else [eos] if isinstance(eos, int) else eos)
        self.max_context = getattr(model.config, "max_position_embeddings", 2048)

    @classmethod
    def load(cls, name: str) -> "TorchBackend":
        from seedbed.models import load_model

        return cls(*load_model(name), name=name)

    # --- decoding -----------------------------------------------------------------------------------------

    def decode(self, batch: list[Request]) -> None:
        """Decode every request in `batch` to its end: emit its text as it becomes safe, then end it."""
        with torch.no_grad():
            self._decode(batch)

    def _decode(self, batch: list[Request]) -> None:
        device = self.model.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        longest = max(len(r.prompt_ids) for r in batch)
        ids = torch.tensor([[pad] * (longest - len(r.prompt_ids)) + r.prompt_ids for r in batch], device=device)
        mask = (torch.arange(longest, device=device)[None] >= torch.tensor(
            [longest - len(r.prompt_ids) for r in batch], device=device)[:, None]).long()  # (batch, seq); 0 = padding
        generators = [torch.Generator(device=device).manual_seed(r.seed) if r.seed is not None else None for r in batch]
        trackers = [TextTracker(self.tokenizer, self.eos_ids, r.stop, r.stop_when) for r in batch]
        live = list(range(len(batch)))  # indices into `batch` of rows still in the cache, in cache order
        cache = None
        step_ids, step_mask = ids, mask
        while live:
            positions = (step_mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]  # left padding shifts positions
            out = self.model(input_ids=step_ids, attention_mask=step_mask, position_ids=positions,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()  # (live, vocab)
            next_ids, keep = [], []
            for row, i in enumerate(live):
                token = sample(logits[row], batch[i].temperature, batch[i].top_p, generators[i])
                if not self.advance(batch[i], trackers[i], token):
                    keep.append(row)
                    next_ids.append(token)
            if len(keep) < len(live):
                if not keep:
                    return
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                step_mask = step_mask[index]
                live = [live[row] for row in keep]
            step_ids = torch.tensor(next_ids, device=device)[:, None]
            step_mask = torch.cat([step_mask, torch.ones_like(step_ids)], dim=1)

    def advance(self, r: Request, tracker: TextTracker, token: int) -> bool:
        """Give one row its new token; return True (after ending the request) if the row is done."""
        if r.cancelled:
            r.end("cancelled")
            return True
        r.completion_tokens += 1
        at_limit = r.completion_tokens >= r.max_tokens or len(r.prompt_ids) + r.completion_tokens >= self.max_context
        piece, finish = tracker.push(token, at_limit)
        if piece:
            r.emit(piece)
        if finish:
            r.end(finish)
            return True
        return False

    # --- scoring ------------------------------------------------------------------------------------------

    def heldout_loss(self, examples: list[Example], max_length: int = 1024, batch_size: int = 8) -> dict:
        return heldout_loss(self.model, self.tokenizer, examples, max_length, batch_size)


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator) -> int:
    """Greedy at temperature 0; otherwise temperature scaling and nucleus (top-p) sampling."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # tokens after the nucleus is full
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def heldout_loss(model, tokenizer, examples: list[Example], max_length: int = 1024, batch_size: int = 8) -> dict:
    """Token-weighted mean cross-entropy over the assistant tokens of `examples`, and its perplexity.

    Only the tokens a fine-tuned model is trained to produce are scored (the assistant turns, end-of-turn marker
    included, via `chat.tokenize_example`), so base and tuned models are compared on the same tokens. Raw-text
    examples are scored on all their tokens. With no scored token, loss and perplexity are NaN.

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
