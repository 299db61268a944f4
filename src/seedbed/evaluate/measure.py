"""Measure one model in a process of its own: size, load time, peak RAM, prompt and decode speed, quality.

`seedbed compare` runs this module once per model (`python -m seedbed.evaluate.measure SPEC_JSON`), so a model's
peak RAM and load time are not mixed with the previous model's, and prints one JSON line on stdout.

Speed is measured the same way for both engines: a prompt of `prompt_tokens` tokens is prefilled in one call
(prompt tokens/s), then `decode_tokens` tokens are decoded greedily one at a time from the KV cache
(decode tokens/s), with no stop at end-of-text, so every repeat decodes the same number of tokens. The median of
`repeats` runs is reported, after one warm-up run.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

from seedbed.inference import resolve_engine


def weight_files(name: str) -> list[Path]:
    """The files holding a model's weights (what it costs on disk and to download)."""
    path = Path(name)
    if path.is_file():
        return [path]
    if not path.is_dir():
        from seedbed.models import resolve

        path = Path(resolve(name))
    return [f for f in sorted(path.iterdir()) if f.suffix in (".safetensors", ".gguf", ".bin", ".pt")]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_torch(name: str, threads: int, prompt_tokens: int, decode_tokens: int, repeats: int) -> dict:
    import torch

    from seedbed.inference.hf import TorchBackend
    from seedbed.int4 import Int4Linear

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = TorchBackend.load(name).model
    model.eval()
    load_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    params += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, Int4Linear))
    vocab = model.config.vocab_size
    prompt = torch.arange(prompt_tokens, device=model.device)[None] % (vocab - 1) + 1  # any ids: speed only

    def prefill():
        return model(input_ids=prompt, use_cache=True, logits_to_keep=1)

    def decode():
        out = prefill()
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(decode_tokens):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - start

    with torch.no_grad():
        decode()  # warm-up: first calls allocate and pick kernels
        prefill_s = statistics.median(_timed(prefill) for _ in range(repeats))
        decode_s = statistics.median(decode() for _ in range(repeats))
    return {"engine": "torch", "params": params, "load_s": load_s, "prompt_tok_s": prompt_tokens / prefill_s,
            "decode_tok_s": decode_tokens / decode_s, "peak_rss_mib": peak_rss_mib()}


def measure_llamacpp(name: str, threads: int, prompt_tokens: int, decode_tokens: int, repeats: int) -> dict:
    import gguf
    import numpy as np

    from seedbed.inference.llamacpp import find_gguf, require_llama_cpp

    path = find_gguf(name)
    params = sum(int(t.n_elements) for t in gguf.GGUFReader(str(path)).tensors)
    start = time.perf_counter()
    # llama-cpp-python's own one-sequence `Llama`, with a context just big enough for the measurement, so peak RAM
    # is the weights', not a serving-size KV cache.
    llm = require_llama_cpp().Llama(model_path=str(path), n_ctx=prompt_tokens + decode_tokens + 16,
                                    n_threads=threads, n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - start
    vocab = llm.n_vocab()
    prompt = [int(i) % (vocab - 1) + 1 for i in range(prompt_tokens)]

    def prefill():
        llm.reset()
        llm.eval(prompt)

    def decode():
        prefill()
        start = time.perf_counter()
        for _ in range(decode_tokens):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        return time.perf_counter() - start

    decode()
    prefill_s = statistics.median(_timed(prefill) for _ in range(repeats))
    decode_s = statistics.median(decode() for _ in range(repeats))
    return {"engine": "llama.cpp", "params": params, "load_s": load_s, "prompt_tok_s": prompt_tokens / prefill_s,
            "decode_tok_s": decode_tokens / decode_s, "peak_rss_mib": peak_rss_mib()}


def quality(name: str, model: str, engine: str, spec: dict) -> dict:
    """Held-out loss and zero-shot task accuracy through `seedbed eval` (the same code, the same questions)."""
    import torch

    from seedbed.evaluate import evaluate
    from seedbed.recipe import EvalRecipe

    torch.set_num_threads(spec["threads"])

    if not spec["data"]:
        return {"loss": None, "accuracy": None, "format_rate": None, "n": 0}
    recipe = EvalRecipe(models=[f"{name}={model}"], data=spec["data"], shots=[0], limit=spec["limit"],
                        max_new_tokens=spec["max_new_tokens"], engine=engine, threads=spec["threads"], quiet=True,
                        model_card=False)  # compare measures; only `seedbed eval` writes into model cards
    row = evaluate(recipe).conditions[0]
    return {"loss": row.loss, "accuracy": row.accuracy, "format_rate": row.format_rate, "n": row.n}


def measure(spec: dict) -> dict:
    """Everything `seedbed compare` reports for one model; `spec` holds the model and the CompareRecipe fields."""
    name, model = spec["name"], spec["model"]
    engine = resolve_engine(model, spec.get("engine", "auto"))
    run = measure_llamacpp if engine == "llama.cpp" else measure_torch
    row = {"name": name, "model": model,
           "file_mib": sum(f.stat().st_size for f in weight_files(model)) / 2**20,
           **run(model, spec["threads"], spec["prompt_tokens"], spec["decode_tokens"], spec["repeats"])}
    row.update(quality(name, model, engine, spec))
    return row


if __name__ == "__main__":
    from seedbed.quiet import quiet_libraries

    quiet_libraries()
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
