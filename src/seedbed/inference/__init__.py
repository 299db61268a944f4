"""Inference: one decode path behind every verb that generates (generate, chat, eval, serve, distill's teacher).

    backend = load("runs/demo/model")                        # torch (transformers)
    backend = load("runs/demo-q4", engine="llama.cpp")       # a GGUF model in llama.cpp
    generate(backend, prompts, Sampling(greedy=True))

A backend computes; it does not queue. `seedbed.serve.engine.Engine` composes one with a request queue and a
worker thread. Both backends stop rows with the same scanner (`stops.TextTracker`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from seedbed.inference.request import Request
from seedbed.inference.scores import TokenScore
from seedbed.inference.stops import Sampling

ENGINES = ("torch", "llama.cpp")


class Backend(Protocol):
    """What every verb needs from a loaded model, whatever runs it."""

    name: str
    tokenizer: object  # a Hugging Face tokenizer with a chat template: both backends tokenize the same way
    max_context: int  # longest prompt + completion, in tokens
    max_batch: int  # most requests decoded together

    def decode(self, batch: list[Request], admit=None) -> None:
        """Decode each request to its end: `request.emit(piece)` as its text becomes safe to show, then
        `request.end(reason)`; a request whose `cancelled` turns true ends at its next step. `admit(running)`, if
        given, is asked between steps for requests that join now (continuous batching)."""

    def compile_schema(self, schema: dict) -> object:
        """Compile (once; cached) a JSON schema that requests' `json_schema` will constrain decoding to; a
        `stops.SchemaError` if this backend cannot use it. `decode` compiles on first use too."""

    def heldout_loss(self, examples: list, max_length: int = 1024, batch_size: int = 8) -> dict:
        """Mean cross-entropy and perplexity over the examples' answer tokens."""

    def score(self, sequences: list[list[int]], starts: list[int], top_k: int = 0) -> list[list[TokenScore]]:
        """For each sequence, a `TokenScore` for every token from `starts[i]` on (>= 1: the first token has no
        context): its log-probability given all the tokens before it, and the `top_k` likeliest tokens there."""


def is_gguf_model(name: str) -> bool:
    """A .gguf file, or a directory with a .gguf and no config.json (what `seedbed quantize` writes for GGUF)."""
    path = Path(name)
    if path.suffix == ".gguf":
        return True
    return path.is_dir() and not (path / "config.json").is_file() and any(path.glob("*.gguf"))


def resolve_engine(name: str, engine: str) -> str:
    """`torch` or `llama.cpp`; `auto` picks llama.cpp for a GGUF model and torch for anything else."""
    if engine == "auto":
        return "llama.cpp" if is_gguf_model(name) else "torch"
    return engine


def load(name: str, engine: str = "torch", threads: int | None = None) -> Backend:
    """Load model `name` on `engine` ("torch", "llama.cpp" or "auto"); `threads` is llama.cpp's CPU thread count.

    >>> backend = load("runs/demo/model")  # doctest: +SKIP
    """
    if resolve_engine(name, engine) == "llama.cpp":
        from seedbed.inference.llamacpp import LlamaCppBackend

        return LlamaCppBackend(name, n_threads=threads)
    from seedbed.inference.hf import TorchBackend

    return TorchBackend.load(name)


__all__ = ["ENGINES", "Backend", "Request", "Sampling", "TokenScore", "is_gguf_model", "load", "resolve_engine"]
