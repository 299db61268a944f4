"""int4 models in PyTorch's own CPU kernels: the layer, and loading a directory `seedbed quantize --method int4` wrote.

    from seedbed.int4 import is_int4_dir, load_int4
    model = load_int4("runs/demo-int4") if is_int4_dir("runs/demo-int4") else ...

Weights are asymmetric int4, packed two per byte (`aten._convert_weight_to_int4pack_for_cpu`), with a float scale
and zero point per `group_size` weights, multiplied by `aten._weight_int4pack_mm_for_cpu`. Such a directory carries
`quant_method: seedbed-int4` in config.json, which plain transformers refuses to load rather than silently
initialising missing weights; `seedbed.models.load_model` rebuilds it here. Making one is
`seedbed.quantize.pytorch.quantize_int4`. This module is on the ground floor (models.py loads through it), so it
imports nothing of Seedbed's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

INT4_METHOD = "seedbed-int4"
INT4_WEIGHTS = "model.int4.safetensors"


class Int4Linear(nn.Module):
    """A linear layer with int4 weights packed two per byte, and a float scale and zero point per group.

    Weight reconstruction (aten's convention): w = (q - 8) * scale + zero, q in 0..15.
    """

    def __init__(self, in_features: int, out_features: int, group_size: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("packed", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales_and_zeros", torch.zeros(in_features // group_size, out_features, 2))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int) -> "Int4Linear":
        w = linear.weight.detach().float()
        n, k = w.shape
        groups = w.reshape(n, k // group_size, group_size)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-8)  # 16 levels span each group's range
        q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = low + 8 * scale  # so that (q - 8) * scale + zero = low + q * scale
        layer = cls(k, n, group_size, linear.bias is not None)
        layer.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        layer.scales_and_zeros = torch.stack([scale.squeeze(-1).t(), zero.squeeze(-1).t()], dim=-1).contiguous()
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().float().clone())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.reshape(-1, self.in_features).float(), self.packed, self.group_size, self.scales_and_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def swap_int4(model: nn.Module, names: list[str], group_size: int, from_weights: bool) -> None:
    """Replace the linear layers `names` of `model` by Int4Linear ones: quantized from their weights, or empty
    (to be filled by loading a saved int4 model)."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, child)
        new = (Int4Linear.from_linear(linear, group_size) if from_weights else
               Int4Linear(linear.in_features, linear.out_features, group_size, linear.bias is not None))
        setattr(parent, child, new)


def is_int4_dir(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    quant = json.loads(config.read_text()).get("quantization_config") or {}
    return quant.get("quant_method") == INT4_METHOD


def load_int4(path: str | Path) -> nn.Module:
    """Rebuild an int4 model saved by `quantize_int4`: the architecture from config.json, int4 layers swapped in,
    then every tensor loaded strictly (a missing or unexpected tensor is an error, never a random weight)."""
    from safetensors.torch import load_model as load_safetensors
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    quant = raw.pop("quantization_config")
    config = AutoConfig.for_model(**raw)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    swap_int4(model, quant["layers"], quant["group_size"], from_weights=False)
    load_safetensors(model, str(path / INT4_WEIGHTS), strict=True)
    model.tie_weights()
    from transformers import GenerationConfig

    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model.eval()
