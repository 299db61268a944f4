"""`seedbed quantize`: one verb for PyTorch quantization (int8, int8-dynamic, int4) and GGUF export (f16, q8_0, q4_k_m).

    seedbed quantize --model runs/demo/model --method int8 --out runs/demo-int8
    seedbed quantize --model runs/demo/model --method q4_k_m --out runs/demo-q4   # then: --engine llama.cpp

The output directory is complete: the quantized weights (a transformers directory, or `model.gguf` plus the
tokenizer files), `recipe.yaml`, and `quantize.json` with what changed — bytes of the linear weights and of the
whole model before and after, and which layers were left in float and why. It is written under a temporary
name and renamed when finished, so a crash never leaves a half-quantized model behind. An `--out` that is, holds or
sits inside the model is refused, and an existing one is replaced only if Seedbed wrote it (`seedbed.atomic`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from seedbed.atomic import atomic_dir, atomic_write_text, check_output_dir
from seedbed.errors import RecipeError
from seedbed.recipe import QUANTIZE_METHODS, QuantizeRecipe, save_recipe


@dataclass
class QuantizeResult:
    out: Path
    report: dict


def quantize(recipe: QuantizeRecipe) -> QuantizeResult:
    """Quantize `recipe.model` with `recipe.method` into `recipe.out`; returns the report written as quantize.json.

    >>> quantize(QuantizeRecipe(model="runs/demo/model", method="int8", out="runs/demo-int8")).report["linear_ratio"]  # doctest: +SKIP
    3.98
    """
    from seedbed.models import load_tokenizer, resolve

    source = resolve(recipe.model)
    if not (Path(source) / "config.json").is_file():
        raise RecipeError(f"model: {recipe.model} is not a local model; quantize needs its weights on disk")
    out = Path(recipe.out)
    check_output_dir(out, [source])  # never over, around or inside the model it reads
    started = time.perf_counter()
    with atomic_dir(out, replace=True) as tmp:
        extra: dict = {}
        if QUANTIZE_METHODS[recipe.method] == "gguf":
            from seedbed.quantize.gguf_export import write_gguf_model

            write_gguf_model(source, tmp, recipe.method)
        else:
            from seedbed.quantize import pytorch

            if recipe.method == "int4":
                extra = pytorch.quantize_int4(source, tmp, recipe.group_size)
            else:
                pytorch.quantize_torchao(source, tmp, recipe.method)
            load_tokenizer(recipe.model).save_pretrained(tmp)
        report = {
            "method": recipe.method, "source": recipe.model, "seconds": round(time.perf_counter() - started, 1),
            **size_report(Path(source), tmp), **extra,
        }
        save_recipe(recipe, tmp / "recipe.yaml", "quantize")
        atomic_write_text(tmp / "quantize.json", json.dumps(report, indent=2) + "\n")
    return QuantizeResult(out, report)


# --- measuring what quantization saved ---------------------------------------------------------------------


def tensor_bytes(model_dir: Path) -> dict[str, int]:
    """Bytes of every tensor stored in a directory's safetensors files or its GGUF file, by tensor name."""
    import gguf
    from safetensors import safe_open

    sizes: dict[str, int] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            for name in st.keys():
                piece = st.get_slice(name)
                count = 1
                for d in piece.get_shape():
                    count *= d
                sizes[name] = count * _DTYPE_BYTES[piece.get_dtype()]
    for f in sorted(model_dir.glob("*.gguf")):
        for t in gguf.GGUFReader(str(f)).tensors:
            sizes[t.name] = int(t.n_bytes)
    return sizes


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


def is_linear_weight(name: str) -> bool:
    """True for the weights of the decoder's linear layers (attention and MLP projections), in the naming of
    transformers (`model.layers.3.mlp.up_proj.weight`, torchao's `..._weight_qdata`, our int4 `.packed`) and of
    GGUF (`blk.3.ffn_up.weight`), so the same layers are counted before and after."""
    if name.endswith(".bias"):
        return False
    if name.startswith("blk."):
        return any(part in name for part in ("attn_q.", "attn_k.", "attn_v.", "attn_output.", "ffn_up.",
                                              "ffn_down.", "ffn_gate."))
    return ".layers." in name and any(p in name for p in ("_proj.", "_proj._weight"))


def size_report(source: Path, quantized: Path) -> dict:
    before, after = tensor_bytes(source), tensor_bytes(quantized)
    linear_before = sum(v for k, v in before.items() if is_linear_weight(k))
    linear_after = sum(v for k, v in after.items() if is_linear_weight(k))
    total_before, total_after = sum(before.values()), sum(after.values())
    return {
        "linear_bytes_before": linear_before, "linear_bytes_after": linear_after,
        "linear_ratio": round(linear_before / linear_after, 2) if linear_after else None,
        "weight_bytes_before": total_before, "weight_bytes_after": total_after,
        "total_ratio": round(total_before / total_after, 2) if total_after else None,
    }
