"""Export a Seedbed model to one GGUF file, so llama.cpp (and llama-cpp-python) can run it.

    seedbed quantize runs/sft --method q4_k_m        # -> runs/sft-q4_k_m/model.gguf (+ tokenizer files)
    python -c "from seedbed.quantize.gguf_export import export_gguf; export_gguf('runs/sft', 'sft-f16.gguf')"

Two families: Llama (`LlamaForCausalLM`) and Gemma 3 text (`Gemma3ForCausalLM`). f32 / f16 / q8_0 files are
written here with the `gguf` package; K-quants (q4_k_m, ...) are made from an f16 file by llama.cpp's own
quantizer, which picks a type per tensor (its mixes are not something to re-derive here).

What the writer must get right, as llama.cpp's `convert_hf_to_gguf.py` does it:
- names: Hugging Face tensor names map to GGUF ones (`blk.0.attn_q.weight`) through `gguf.TensorNameMap`;
- Llama's q/k rows are permuted: HF rotates the two halves of a head, llama.cpp rotates interleaved pairs;
- Gemma's RMSNorm multiplies by (1 + w) in HF and by w in llama.cpp, so its norm weights are stored as 1 + w;
- tied embeddings write no `output.weight` (llama.cpp reuses `token_embd.weight`);
- 1-D tensors (norms) stay f32, as llama.cpp keeps them, whatever the file type.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from seedbed.atomic import atomic_path
from seedbed.errors import ModelLoadError
from seedbed.extras import LLAMACPP_INSTALL
from seedbed.licences import licence_of
from seedbed.quantize.gguf_vocab import Vocab, vocab_of
from seedbed.quantize.modelfile import write_modelfile

_FT = gguf.LlamaFileType
# The GGUF file type of each method `write_gguf_model` accepts (which of them `seedbed quantize` offers is
# `seedbed.recipe.QUANTIZE_METHODS`). f32 / f16 / q8_0 are written here; the others are llama.cpp's
# quantizations (K-quants pick a type per tensor), made from an f16 file by llama.cpp's own quantizer.
FILE_TYPES = {
    "f32": _FT.ALL_F32, "f16": _FT.MOSTLY_F16, "q8_0": _FT.MOSTLY_Q8_0,
    "q4_k_m": _FT.MOSTLY_Q4_K_M, "q4_k_s": _FT.MOSTLY_Q4_K_S, "q5_k_m": _FT.MOSTLY_Q5_K_M, "q5_k_s": _FT.MOSTLY_Q5_K_S,
    "q6_k": _FT.MOSTLY_Q6_K, "q4_0": _FT.MOSTLY_Q4_0, "q5_0": _FT.MOSTLY_Q5_0, "q3_k_m": _FT.MOSTLY_Q3_K_M,
    "q2_k": _FT.MOSTLY_Q2_K,
}
WRITTEN_HERE = frozenset({_FT.ALL_F32, _FT.MOSTLY_F16, _FT.MOSTLY_Q8_0})  # the file types `_encode` produces
GGUF_METHODS = tuple(FILE_TYPES)
DTYPES = {m: t for m, t in FILE_TYPES.items() if t in WRITTEN_HERE}  # what `export_gguf` writes directly
LLAMA_CPP_METHODS = tuple(m for m, t in FILE_TYPES.items() if t not in WRITTEN_HERE)
# Above this many embedding weights a progress bar is worth showing (Gemma 3 270M: 262144 x 640 = 168M).
_PROGRESS_EMBEDDING = 10_000_000


class UnsupportedModelError(ModelLoadError):
    """A model GGUF export does not know how to write."""


@dataclass(frozen=True)
class Family:
    arch: gguf.MODEL_ARCH
    permute_qk: bool  # llama.cpp's NORM rope wants interleaved q/k rows (Llama); NEOX rope does not (Gemma)
    norm_offset: float  # added to every *norm.weight: 1.0 for Gemma's (1 + w) RMSNorm


FAMILIES = {
    "LlamaForCausalLM": Family(gguf.MODEL_ARCH.LLAMA, permute_qk=True, norm_offset=0.0),
    "Gemma3ForCausalLM": Family(gguf.MODEL_ARCH.GEMMA3, permute_qk=False, norm_offset=1.0),
}


def export_gguf(model_dir: str | Path, out_file: str | Path, dtype: str = "f16") -> Path:
    """Write a Hugging Face causal-LM directory (Llama or Gemma 3 text family) as one GGUF file.

    dtype: f32, f16 or q8_0 (matrices only; norms stay f32). The write is atomic.

        >>> export_gguf("runs/tiny", "tiny-f16.gguf")  # doctest: +SKIP
        PosixPath('tiny-f16.gguf')
    """
    from transformers import AutoConfig, AutoTokenizer

    from seedbed.chat import ensure_chat_template

    if dtype not in DTYPES:
        raise ValueError(f"GGUF dtype {dtype!r} is not one of {sorted(DTYPES)}; for K-quants use quantize_gguf")
    model_dir, out_file = Path(model_dir), Path(out_file)
    config = AutoConfig.from_pretrained(model_dir)
    family = _family(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer, config.model_type)
    vocab = vocab_of(tokenizer, config.model_type)

    with atomic_path(out_file) as tmp:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[family.arch])
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(model_dir.resolve().name)
        writer.add_file_type(DTYPES[dtype])
        if dtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _write_hparams(writer, config, family)
        n_vocab = _add_tensors(writer, model_dir, config, family, dtype)
        _pad_vocab(vocab, n_vocab).write(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
    return out_file


def quantize_gguf(src: str | Path, out_file: str | Path, method: str = "q4_k_m") -> Path:
    """Re-quantize an f16/f32 GGUF with llama.cpp's own quantizer (through llama-cpp-python).

        >>> quantize_gguf("tiny-f16.gguf", "tiny-q4_k_m.gguf", "q4_k_m")  # doctest: +SKIP
    """
    try:
        import llama_cpp
    except ImportError as e:
        raise ModelLoadError(
            f"quantizing a GGUF needs llama.cpp's quantizer (llama-cpp-python), which is not installed. Install it "
            f"with\n    {LLAMACPP_INSTALL}\nIt builds llama.cpp from source once (about 10 minutes on 2 cores; "
            "needs a C++ compiler and cmake). --method f16 writes a GGUF without it."
        ) from e
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{method.upper()}", None)
    if ftype is None:
        raise ValueError(f"unknown llama.cpp quantization {method!r}; known: {', '.join(LLAMA_CPP_METHODS + ('q8_0',))}")
    src, out_file = Path(src), Path(out_file)
    if not src.is_file():
        raise ModelLoadError(f"{src}: no such GGUF file")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    with atomic_path(out_file) as tmp, _native_stderr_captured() as log:
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            detail = "; ".join(log().strip().splitlines()[-3:])
            raise ModelLoadError(f"llama.cpp could not quantize {src} to {method} (status {status}): {detail}")
    return out_file


@contextlib.contextmanager
def _native_stderr_captured():
    """Capture what C code writes to file descriptor 2 (llama.cpp logs a line per tensor while quantizing, which
    buries our own output); yields a function returning the captured text, for error messages."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lambda: (capture.seek(0), capture.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def write_gguf_model(model_dir: str | Path, out_dir: str | Path, method: str) -> Path:
    """What `seedbed quantize --method f16|q8_0|q4_k_m` runs: out_dir/model.gguf plus the HF tokenizer files and
    an Ollama Modelfile (`quantize.modelfile`).

    f32 / f16 / q8_0 are written directly; K-quants go through an f16 file in a temporary directory.
    The tokenizer files next to the GGUF keep the chat template and tokenizer at hand for other tools.

        >>> write_gguf_model("runs/sft", "runs/sft-q4_k_m", "q4_k_m")  # doctest: +SKIP
        PosixPath('runs/sft-q4_k_m/model.gguf')
    """
    from transformers import AutoConfig, AutoTokenizer

    from seedbed.chat import ensure_chat_template

    if method not in GGUF_METHODS:
        raise ValueError(f"GGUF method {method!r} is not one of {', '.join(GGUF_METHODS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.gguf"
    if method in DTYPES:
        export_gguf(model_dir, target, dtype=method)
    else:
        with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
            f16 = export_gguf(model_dir, Path(scratch) / "model-f16.gguf", dtype="f16")
            quantize_gguf(f16, target, method)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    ensure_chat_template(tokenizer, config.model_type)
    tokenizer.save_pretrained(out_dir)
    write_modelfile(out_dir, tokenizer, config, licence_of(str(model_dir)), target.name)
    return target


def _family(config) -> Family:
    archs = getattr(config, "architectures", None) or []
    for name in archs:
        if name in FAMILIES:
            return FAMILIES[name]
    raise UnsupportedModelError(
        f"GGUF export does not support {archs or config.model_type!r}; supported: {', '.join(FAMILIES)}"
    )


def _rope(config, layer_type: str = "full_attention") -> dict:
    """The rope parameters of one attention kind (transformers 5 keys them by layer type for Gemma 3)."""
    params = getattr(config, "rope_parameters", None) or {}
    if layer_type in params:
        params = params[layer_type]
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    return {"theta": theta, "type": params.get("rope_type", "default"), "factor": params.get("factor")}


def _write_hparams(writer: gguf.GGUFWriter, config, family: Family) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    rope = _rope(config)
    writer.add_rope_freq_base(rope["theta"])
    if rope["type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    elif rope["type"] != "default":
        raise UnsupportedModelError(f"GGUF export: rope scaling {rope['type']!r} is not supported (default, linear)")
    if family.arch == gguf.MODEL_ARCH.LLAMA:
        writer.add_rope_dimension_count(head_dim)
    if family.arch == gguf.MODEL_ARCH.GEMMA3:
        _write_gemma3_hparams(writer, config, head_dim)


def _write_gemma3_hparams(writer: gguf.GGUFWriter, config, head_dim: int) -> None:
    # llama.cpp's Gemma 3 graph hard-codes five sliding-window layers then one global layer; refuse others.
    expected = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(config.num_hidden_layers)]
    if list(getattr(config, "layer_types", expected)) != expected:
        raise UnsupportedModelError("GGUF export: llama.cpp's gemma3 wants 5 sliding layers then 1 global; this differs")
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "attn_logit_softcapping", None):
        raise UnsupportedModelError("GGUF export: Gemma 3 with logit soft-capping is not supported")
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_sliding_window(config.sliding_window)
    writer.add_rope_freq_base_swa(_rope(config, "sliding_attention")["theta"])


def _safetensors(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{model_dir}: no *.safetensors weights (save the model with save_pretrained)")
    return files


def _tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """One tensor at a time, so only the converted copies are held in memory."""
    from safetensors import safe_open

    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def _tensor_count(files: list[Path]) -> int:
    from safetensors import safe_open

    total = 0
    for file in files:
        with safe_open(file, framework="pt") as f:
            total += len(f.keys())
    return total


def _add_tensors(writer: gguf.GGUFWriter, model_dir: Path, config, family: Family, dtype: str) -> int:
    """Convert and add every tensor; returns the vocabulary size the embedding implies."""
    from rich.progress import Progress

    names = gguf.get_tensor_name_map(family.arch, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    n_vocab = config.vocab_size
    files = _safetensors(model_dir)
    # The embedding dominates the time (Gemma 3: 262k x 640); small models finish before a bar is useful.
    big = config.vocab_size * config.hidden_size > _PROGRESS_EMBEDDING
    with Progress(transient=True, disable=not big) as progress:
        task = progress.add_task(f"Converting to GGUF {dtype}", total=_tensor_count(files))
        for hf_name, tensor in _tensors(files):
            if hf_name == "lm_head.weight" and tied:
                continue  # llama.cpp reuses token_embd.weight
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise UnsupportedModelError(f"GGUF export: no GGUF name for tensor {hf_name!r}")
            data = _convert(hf_name, tensor.float(), config, family)
            if name == "token_embd.weight":
                n_vocab = data.shape[0]
            array, qtype = _encode(data.numpy(), dtype)
            writer.add_tensor(name, array, raw_dtype=qtype)
            progress.advance(task)
    return n_vocab


def _convert(hf_name: str, w: torch.Tensor, config, family: Family) -> torch.Tensor:
    if family.norm_offset and hf_name.endswith("norm.weight"):
        w = w + family.norm_offset
    if family.permute_qk and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
        heads = config.num_attention_heads if "q_proj" in hf_name else config.num_key_value_heads
        w = _interleave_rope_rows(w, heads)
    return w


def _interleave_rope_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder each head's rows from HF's [first half | second half] to llama.cpp's (x0, x1) pairs."""
    rows, cols = w.shape  # (n_head * head_dim, hidden)
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _encode(array: np.ndarray, dtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    if array.ndim == 1 or dtype == "f32":
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    # Q8_0 packs rows in blocks of 32; a row that does not divide stays f16 rather than fail.
    if dtype == "q8_0" and array.shape[-1] % 32 == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(array.astype(np.float32), qtype), qtype
    return array.astype(np.float16), gguf.GGMLQuantizationType.F16


def _pad_vocab(vocab: Vocab, n_vocab: int) -> Vocab:
    """Give every embedding row a token: llama.cpp refuses a vocabulary shorter than the embedding."""
    missing = n_vocab - len(vocab.tokens)
    if missing < 0:
        raise ModelLoadError(f"GGUF export: tokenizer has {len(vocab.tokens)} tokens but the embedding only {n_vocab}")
    for i in range(missing):
        vocab.tokens.append(f"[PAD{i}]")
        vocab.token_types.append(gguf.TokenType.UNUSED)
        if vocab.scores is not None:
            vocab.scores.append(-1000.0)
    return vocab


__all__ = ["export_gguf", "quantize_gguf", "write_gguf_model", "UnsupportedModelError", "GGUF_METHODS"]
