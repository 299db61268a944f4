"""The llama.cpp backend: GGUF models through llama-cpp-python, decoding and held-out loss.

    seedbed generate --engine llama.cpp --model runs/q4 --greedy "What is 12 plus 30?"
    seedbed serve --engine llama.cpp --model q4=runs/q4/model.gguf

llama.cpp runs quantized weights as they are (no dequantizing), so a Q4_K_M model decodes several times faster
on a CPU than the same weights in PyTorch. Prompts are rendered and tokenized by the model's Hugging Face
tokenizer, exactly as in the torch path, and the token ids are handed to llama.cpp directly (a GGUF carries the
same vocabulary), so both engines see the same tokens. Stopping is the torch backend's: the same
`seedbed.inference.stops.TextTracker` decides where a row ends and what of it is safe to show.

llama-cpp-python is an optional extra that compiles llama.cpp on install; `LlamaCppMissing` says how to get it.
"""

from __future__ import annotations

import hashlib
import math
import os
import weakref
from pathlib import Path

from seedbed.atomic import atomic_dir
from seedbed.chat import Example, end_of_turn_token_ids, ensure_chat_template, tokenize_example
from seedbed.errors import ModelLoadError
from seedbed.inference.request import Request
from seedbed.inference.stops import TextTracker
from seedbed.models import embedded_gguf, seedbed_home

INSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install \'seedbed[llamacpp]\''
DEFAULT_CONTEXT = 8192  # tokens of KV cache: serve's default prompt limit (4096) plus its longest answer, with room
LOSS_CHUNK = 128  # tokens per decode when scoring: bounds the logits buffer (chunk x vocab floats; 128 MB for Gemma)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class LlamaCppMissing(ModelLoadError):
    """`--engine llama.cpp` without llama-cpp-python installed."""


def require_llama_cpp():
    """The `llama_cpp` module, or an error that says how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise LlamaCppMissing(
            "--engine llama.cpp needs llama-cpp-python, which is not installed. Install it with\n"
            f"    {INSTALL}\n"
            "It builds llama.cpp from source (about 10 minutes on 2 cores; needs a C++ compiler and cmake). "
            "Or use --engine torch, which runs the same GGUF dequantized."
        ) from None
    return llama_cpp


def find_gguf(name: str) -> Path:
    """The GGUF file a model name means: a `.gguf` file, a directory holding exactly one, or the embedded default.

    >>> find_gguf("runs/q4")  # doctest: +SKIP
    PosixPath('runs/q4/model.gguf')
    """
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{name}: no such GGUF file")
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise ModelLoadError(
                f"{name}: no .gguf file in this directory; --engine llama.cpp runs GGUF models. Make one with "
                f"`seedbed quantize --model {name} --method q4_k_m --out DIR`, or use --engine torch")
        raise ModelLoadError(f"{name}: {len(found)} .gguf files in this directory "
                             f"({', '.join(f.name for f in found)}); name the one to run")
    embedded = embedded_gguf(name)
    if embedded is not None:
        return embedded
    raise ModelLoadError(f"{name}: not a .gguf file or a directory holding one; --engine llama.cpp runs GGUF "
                         "models (hub ids and Hugging Face directories need --engine torch)")


def gguf_tokenizer(gguf: Path, model_type: str):
    """The Hugging Face tokenizer of a GGUF model, with a chat template.

    Tokenizer files next to the GGUF (what `seedbed quantize` writes) win; otherwise the tokenizer is rebuilt
    from the GGUF's own vocabulary, which takes a minute for a large vocabulary, so it is cached under
    `$SEEDBED_HOME/tokenizers` the first time.
    """
    from transformers import AutoTokenizer

    if any((gguf.parent / f).is_file() for f in TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent))
    else:
        stat = gguf.resolve().stat()
        key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
        cached = seedbed_home() / "tokenizers" / f"{gguf.stem}-{key}"
        if not (cached / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            with atomic_dir(cached) as tmp:
                tokenizer.save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(str(cached))
    ensure_chat_template(tokenizer, model_type)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class LlamaCppBackend:
    """A GGUF model in llama.cpp with its Hugging Face tokenizer.

    One sequence is decoded at a time (llama-cpp-python's high-level API keeps one KV cache). Every prompt is
    evaluated from an empty cache: llama.cpp's arithmetic depends on how tokens are batched, so reusing a cached
    prefix would make the same seeded request sample differently depending on what ran before it.

    >>> backend = LlamaCppBackend("gemma-3-270m", n_threads=2)  # doctest: +SKIP
    >>> generate(backend, ["<bos>The capital of France is"], Sampling(greedy=True, max_new_tokens=5))  # doctest: +SKIP
    [' the capital of the country']
    """

    max_batch = 1  # llama-cpp-python's high-level API decodes one sequence per context

    def __init__(self, name: str, n_threads: int | None = None, n_ctx: int = DEFAULT_CONTEXT):
        self.name = name
        self.path = find_gguf(name)  # before the import: a wrong path is worth knowing without installing anything
        llama_cpp = require_llama_cpp()
        threads = n_threads or os.cpu_count() or 1
        try:
            self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=threads,
                                       n_threads_batch=threads, verbose=False)
        except ValueError as e:  # llama-cpp-python's way of saying the file did not load
            raise ModelLoadError(f"{name}: llama.cpp could not load {self.path}: {e}") from None
        # Free llama.cpp's memory while the interpreter is still whole: left to `Llama.__del__` at exit, it runs
        # after llama_cpp's module globals are gone and prints an ignored TypeError.
        weakref.finalize(self, self.llm.close)
        self.model_type = self.llm.metadata.get("general.architecture", "")
        self.tokenizer = gguf_tokenizer(self.path, self.model_type)
        self.eos_ids = set(end_of_turn_token_ids(self.tokenizer))
        self.max_context = min(self.llm.n_ctx(), self.llm._model.n_ctx_train())
        self.default_seed = llama_cpp.LLAMA_DEFAULT_SEED  # llama.cpp draws a random seed for this one

    # --- decoding -----------------------------------------------------------------------------------------

    def decode(self, batch: list[Request]) -> None:
        """Decode the requests one after another (one KV cache), emitting each one's text as it becomes safe."""
        for request in batch:
            self.decode_one(request)

    def decode_one(self, r: Request) -> None:
        """Greedy at temperature 0; otherwise temperature and top-p (nucleus) sampling with no top-k, as the torch
        backend samples. Ends at an end-of-turn token, a stop string, `r.stop_when`, `r.max_tokens`, the context
        size, or when `r.cancelled` turns true.
        """
        limit = min(r.max_tokens, self.max_context - len(r.prompt_ids))
        if limit <= 0:
            r.end("length")
            return
        # llama.cpp seeds are 32-bit and 0xFFFFFFFF means "draw one"; the API accepts any 64-bit integer.
        self.llm.set_seed(r.seed % 0xFFFFFFFF if r.seed is not None else self.default_seed)
        self.clear_cache()
        tracker = TextTracker(self.tokenizer, self.eos_ids, r.stop, r.stop_when)
        # top_k 0, min_p 0, typical_p 1 and repeat_penalty 1 switch off llama.cpp's other samplers.
        for token in self.llm.generate(r.prompt_ids, temp=max(r.temperature, 0.0), top_p=r.top_p, top_k=0,
                                       min_p=0.0, typical_p=1.0, repeat_penalty=1.0, reset=True):
            if r.cancelled:
                r.end("cancelled")
                return
            r.completion_tokens += 1
            piece, finish = tracker.push(token, at_limit=r.completion_tokens >= limit)
            if piece:
                r.emit(piece)
            if finish:
                r.end(finish)
                return
        r.end("stop")  # llama.cpp ended the sequence itself

    # --- scoring ------------------------------------------------------------------------------------------

    def heldout_loss(self, examples: list[Example], max_length: int = 1024, batch_size: int = 1) -> dict:
        """Token-weighted mean cross-entropy over the assistant tokens, as `seedbed.inference.hf.heldout_loss`.

        >>> model.heldout_loss(examples)  # doctest: +SKIP
        {'loss': 1.85, 'perplexity': 6.36, 'tokens': 5120}
        """
        import numpy as np

        total, scored_tokens = 0.0, 0
        for example in examples:
            row = tokenize_example(self.tokenizer, example, max_length)
            ids, mask = row["input_ids"], row["assistant_masks"]
            # Position t predicts token t+1: keep the logits of positions whose next token is scored.
            wanted = [t for t in range(len(ids) - 1) if mask[t + 1]]
            if not wanted:
                continue
            for position, logits in self.logits_at(ids[: wanted[-1] + 1], set(wanted)):
                logits = logits.astype(np.float64)  # (vocab,)
                top = logits.max()
                total += top + math.log(np.exp(logits - top).sum()) - logits[ids[position + 1]]
                scored_tokens += 1
        loss = total / scored_tokens if scored_tokens else math.nan
        return {"loss": loss, "perplexity": math.exp(loss) if scored_tokens else math.nan, "tokens": scored_tokens}

    def logits_at(self, ids: list[int], positions: set[int]):
        """Run `ids` through the model from an empty cache; yield (position, logits) for each wanted position."""
        import numpy as np

        llm = self.llm
        self.clear_cache()
        n_vocab = llm.n_vocab()
        try:
            for start in range(0, len(ids), LOSS_CHUNK):
                chunk = ids[start : start + LOSS_CHUNK]
                llm._batch.set_batch(chunk, n_past=start, logits_all=False)
                outputs = [i for i in range(len(chunk)) if start + i in positions]
                for i in range(len(chunk)):
                    llm._batch.batch.logits[i] = (start + i) in positions
                if not outputs:  # llama.cpp wants at least one output per batch
                    llm._batch.batch.logits[len(chunk) - 1] = True
                llm._ctx.decode(llm._batch)
                for i in outputs:
                    yield start + i, np.ctypeslib.as_array(llm._ctx.get_logits_ith(i), shape=(n_vocab,)).copy()
        finally:
            self.clear_cache()

    def clear_cache(self) -> None:
        self.llm._ctx.kv_cache_clear()
        self.llm.reset()  # n_tokens = 0: llama-cpp-python finds no cached prefix to reuse
