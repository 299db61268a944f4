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
rebuilds (the int4 layer and its loader are `seedbed.int4`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from seedbed.errors import RecipeError
from seedbed.int4 import INT4_METHOD, INT4_WEIGHTS, swap_int4


def quantize_torchao(model_dir: str, out: Path, method: str) -> None:
    """int8 / int8-dynamic through transformers' torchao integration: quantized while loading, then saved."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    config = Int8WeightOnlyConfig() if method == "int8" else Int8DynamicActivationInt8WeightConfig()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 quantization_config=TorchAoConfig(config))
    model.save_pretrained(out)


# --- int4 with PyTorch's own CPU kernels -------------------------------------------------------------------


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


def quantize_int4(model_dir: str, out: Path, group_size: int) -> dict:
    """Quantize the decoder's linear layers to int4 and save a directory `load_model` reloads."""
    from safetensors.torch import save_model as save_safetensors
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    layers, skipped = int4_candidates(model, group_size)
    if not layers:
        raise RecipeError(f"group_size: no linear layer's input width is a multiple of group_size={group_size}; "
                         "give a smaller --group-size")
    swap_int4(model, layers, group_size, from_weights=True)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, str(out / INT4_WEIGHTS))  # handles tied (shared) embedding and output weights
    config = model.config.to_dict()
    config["quantization_config"] = {"quant_method": INT4_METHOD, "group_size": group_size, "layers": layers}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model.generation_config.save_pretrained(out)
    return {"int4_layers": len(layers), "skipped_layers": skipped}
