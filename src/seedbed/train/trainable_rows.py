"""A few trainable rows of a frozen embedding (and its output head): the template tokens LoRA must learn to produce.

PEFT's `trainable_token_indices` does the same job, but each forward pass builds the whole matrix anew with
`index_copy` and its backward computes a dense gradient for it; with Gemma's 262,144 x 640 vocabulary that is two
0.7 GB copies and a full-vocabulary matmul per micro-batch, which measured 15 s against 2.5 s for the plain
output head on this 2-core CPU (benchmark in BENCHMARKS.md, "Template tokens"). Here a row's learned correction
`delta` (k x hidden) is added only where it matters: to the embeddings of those token ids, and to the k output
logits (`h @ delta.T`); the frozen matrix is never copied. At the end `merge` writes `row + delta` into the weights
and removes the wrappers, so the saved model is a plain transformers model.

    rows = attach(model, [105, 106])     # after PEFT has wrapped the model: its delta trains with the LoRA weights
    ...train...
    rows.merge()
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

STATE_FILE = "template_rows.pt"  # in each checkpoint directory, so a resumed run continues with the same rows


class EmbeddingRows(nn.Module):
    """An input embedding whose rows `ids` are `weight[ids] + delta` (the embedding's own scale applied, as
    Gemma's scaled embedding does)."""

    def __init__(self, base: nn.Module, ids: torch.Tensor, delta: nn.Parameter):
        super().__init__()
        self.base, self.delta = base, delta
        slot = torch.zeros(base.weight.shape[0], dtype=torch.long)  # token id -> 1 + its row in delta, else 0
        slot[ids] = torch.arange(1, len(ids) + 1)
        self.register_buffer("slot", slot.to(base.weight.device), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)
        table = torch.cat([self.delta.new_zeros(1, self.delta.shape[1]), self.delta])  # row 0: no correction
        extra = F.embedding(self.slot[input_ids], table)
        scale = getattr(self.base, "embed_scale", None)
        return out + (extra * scale.to(extra.dtype) if scale is not None else extra).to(out.dtype)


class OutputRows(nn.Module):
    """An output head whose logits for `ids` use `weight[ids] + delta`: the k extra dot products only."""

    def __init__(self, base: nn.Module, ids: torch.Tensor, delta: nn.Parameter):
        super().__init__()
        self.base, self.delta = base, delta
        self.register_buffer("ids", ids.to(base.weight.device), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.base(hidden)  # (..., vocab)
        # In place: the logits are the largest tensor of a step, and a copy of them cost 12% of a LoRA step on
        # Gemma 3 270M. Safe for autograd: a linear layer's backward does not need its output.
        return out.index_add_(-1, self.ids, (hidden @ self.delta.T.to(hidden.dtype)).to(out.dtype))


class TrainableRows:
    """The corrections attached to one model; `parameters()` are what trains, `merge()` makes them permanent."""

    def __init__(self, model, ids: list[int]):
        self.model, self.ids = model, torch.tensor(ids, dtype=torch.long)
        self.embed, self.head = model.get_input_embeddings(), model.get_output_embeddings()
        self.tied = self.head is not None and self.head.weight is self.embed.weight
        weight = self.embed.weight
        self.delta = nn.Parameter(torch.zeros(len(ids), weight.shape[1], dtype=torch.float32, device=weight.device))
        # Untied: the output head's rows train too, since a row the head cannot raise is the very failure.
        self.head_delta = self.delta if self.tied or self.head is None else nn.Parameter(torch.zeros_like(self.delta))
        model.set_input_embeddings(EmbeddingRows(self.embed, self.ids, self.delta))
        if self.head is not None:
            model.set_output_embeddings(OutputRows(self.head, self.ids, self.head_delta))

    def parameters(self) -> list[nn.Parameter]:
        return [self.delta] if self.head_delta is self.delta else [self.delta, self.head_delta]

    def save(self, directory: str | Path) -> None:
        torch.save({"ids": self.ids, "delta": [p.detach().cpu() for p in self.parameters()]},
                   Path(directory) / STATE_FILE)

    def load(self, directory: str | Path) -> bool:
        """Restore the corrections saved in a checkpoint directory; False if it holds none."""
        path = Path(directory) / STATE_FILE
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=True)
        if not torch.equal(state["ids"], self.ids):
            return False
        with torch.no_grad():
            for param, saved in zip(self.parameters(), state["delta"]):
                param.copy_(saved)
        return True

    def merge(self) -> None:
        """Write `row + delta` into the embedding (and the untied head) and put the plain modules back."""
        with torch.no_grad():
            index = self.ids.to(self.embed.weight.device)
            self.embed.weight[index] += self.delta.to(self.embed.weight.dtype)
            if self.head is not None and not self.tied:
                self.head.weight[index] += self.head_delta.to(self.head.weight.dtype)
        self.model.set_input_embeddings(self.embed)
        if self.head is not None:
            self.model.set_output_embeddings(self.head)


def attach(model, ids: list[int]) -> TrainableRows | None:
    """Make rows `ids` of `model`'s embedding (and output head) trainable through small corrections; None when
    there are none. Call it on the model as it will be trained (after PEFT wrapped it): PEFT freezes every
    parameter that is not its own when it wraps a model."""
    return TrainableRows(model, ids) if ids else None
