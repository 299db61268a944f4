"""Quantization in PyTorch: int8 weights (torchao), int8 weights + activations (torchao), int4 weights (aten).

    seedbed quantize --model runs/demo/model --method int8 --out runs/demo-int8

- `int8`: weight-only, per output channel (torchao `Int8WeightOnlyConfig`). Activations stay float, so
  quality barely moves; the win is 4x smaller linear weights.
- `int8-dynamic`: int8 weights and int8 activations quantized on the fly per token (torchao
  `Int8DynamicActivationInt8WeightConfig`), the scheme of LLM.int8()-style CPU inference without outliers.
- `int4`: weight-only, asymmetric, one scale and zero point per `group_size` weights. torchao 0.18 no longer
  ships a CPU layout for int4, so this uses PyTorch's own CPU kernels (`aten._convert_weight_to_int4pack_for_cpu`
  and `aten._weight_int4pack_mm_for_cpu`): 8x smaller linear weights, but slower matmuls than fp32 on a CPU
  without AVX-512 (measured in BENCHMARKS.md). For fast 4-bit on a CPU, use GGUF q4_k_m with llama.cpp.

Only the decoder's linear layers are quantized; the embedding and (tied) output layer stay float, as in
torchao's and transformers' defaults, because the lookup table is not a matmul and the output layer is the most
sensitive to error. int8 models are plain transformers directories (the torchao config is in config.json) and
reload with `from_pretrained`; int4 models carry `quant_method: seedbed-int4` in config.json, which plain
transformers refuses to load rather than silently initialising missing weights, and `seedbed.models.load_model`
rebuilds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from seedbed.recipe import RecipeError

INT4_METHOD = "seedbed-int4"
INT4_WEIGHTS = "model.int4.safetensors"


def quantize_torchao(model_dir: str, out: Path, method: str) -> None:
    """int8 / int8-dynamic through transformers' torchao integration: quantized while loading, then saved."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    config = Int8WeightOnlyConfig() if method == "int8" else Int8DynamicActivationInt8WeightConfig()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 quantization_config=TorchAoConfig(config))
    model.save_pretrained(out)


# --- int4 with PyTorch's own CPU kernels -------------------------------------------------------------------


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


def int4_candidates(model: nn.Module, group_size: int) -> tuple[list[str], list[str]]:
    """Names of the decoder linear layers int4 applies to, and of those it skips (width not a multiple of the
    group size, or odd), so every skipped layer is reported rather than silently left in float."""
    layers, skipped = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.endswith("lm_head"):
            continue
        ok = module.in_features % group_size == 0 and module.in_features % 2 == 0
        (layers if ok else skipped).append(name)
    return layers, skipped


def _swap_int4(model: nn.Module, names: list[str], group_size: int, from_weights: bool) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, child)
        new = (Int4Linear.from_linear(linear, group_size) if from_weights else
               Int4Linear(linear.in_features, linear.out_features, group_size, linear.bias is not None))
        setattr(parent, child, new)


def quantize_int4(model_dir: str, out: Path, group_size: int) -> dict:
    """Quantize the decoder's linear layers to int4 and save a directory `load_model` reloads."""
    from safetensors.torch import save_model as save_safetensors
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    layers, skipped = int4_candidates(model, group_size)
    if not layers:
        raise RecipeError(f"group_size: no linear layer's input width is a multiple of group_size={group_size}; "
                         "give a smaller --group-size")
    _swap_int4(model, layers, group_size, from_weights=True)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, str(out / INT4_WEIGHTS))  # handles tied (shared) embedding and output weights
    config = model.config.to_dict()
    config["quantization_config"] = {"quant_method": INT4_METHOD, "group_size": group_size, "layers": layers}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model.generation_config.save_pretrained(out)
    return {"int4_layers": len(layers), "skipped_layers": skipped}


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
    _swap_int4(model, quant["layers"], quant["group_size"], from_weights=False)
    load_safetensors(model, str(path / INT4_WEIGHTS), strict=True)
    model.tie_weights()
    from transformers import GenerationConfig

    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model.eval()
