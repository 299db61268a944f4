"""Continuous batching on the torch backend: requests join a running batch at the next step, finished rows leave
at once, and every row's greedy answer is the one it gets decoded alone (Llama, and Gemma 3's sliding window)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from seedbed.inference import load
from seedbed.inference.hf import TorchBackend
from seedbed.inference.request import Request
from seedbed.serve.engine import Engine


def alone(backend, prompt: list[int], max_tokens: int, **extra) -> list[int]:
    r = Request(list(prompt), max_tokens=max_tokens, temperature=0, **extra)
    backend.decode([r])
    return r.tokens


def no_end(backend) -> dict[int, float]:
    """A logit bias that keeps a row from ending before its max_tokens."""
    return {t: -100.0 for t in backend.eos_ids | {backend.tokenizer.convert_tokens_to_ids("<|end|>")}}


def staggered(backend, prompts: list[list[int]], joins_at: list[int], max_tokens: list[int]) -> list[Request]:
    """Decode prompts[0] from the start and prompts[i] joining when the running batch has taken joins_at[i] steps."""
    requests = [Request(list(p), max_tokens=n, temperature=0, logit_bias=no_end(backend))
                for p, n in zip(prompts, max_tokens)]
    first, later = requests[0], list(zip(joins_at[1:], requests[1:]))
    start = backend.steps if hasattr(backend, "steps") else 0

    def admit(running: int) -> list[Request]:
        due = [r for at, r in later if backend.steps - start >= at]
        for r in due:
            later.remove(next(item for item in later if item[1] is r))
        return due

    backend.decode([first], admit=admit)
    assert not later, "every request joined"
    return requests


def test_rows_that_join_and_leave_get_the_answer_they_get_alone(tiny_model):
    backend = load(str(tiny_model))
    ids = backend.tokenizer("Two plus three is five. Count the apples", add_special_tokens=True)["input_ids"]
    prompts = [ids[:4], ids, ids[:7], ids[:2]]  # a long prompt joins a short running one, and the reverse
    requests = staggered(backend, prompts, [0, 3, 5, 9], [20, 12, 6, 15])
    for r, p in zip(requests, prompts):
        assert r.finish_reason == "length"
        assert r.tokens == alone(backend, p, r.max_tokens, logit_bias=no_end(backend))


def tiny_gemma3(tokenizer_dir, out):
    """A 2-layer Gemma 3 (one sliding-window layer, window 4) with the tiny tokenizer: the cache layout of the
    default model, in seconds."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=256,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    model = Gemma3ForCausalLM(config).eval()
    return TorchBackend(model, tokenizer, name="tiny-gemma3")


def test_sliding_window_rows_join_and_leave_exactly(tiny_model, tmp_path):
    backend = tiny_gemma3(tiny_model, tmp_path)
    layers = backend.model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True).past_key_values.layers
    assert any(layer.is_sliding for layer in layers) and not all(layer.is_sliding for layer in layers)
    ids = backend.tokenizer("Two plus three is five. Count the apples", add_special_tokens=True)["input_ids"]
    prompts = [ids[:3], ids, ids[:6], ids[:2]]
    requests = staggered(backend, prompts, [0, 2, 6, 7], [14, 9, 5, 12])
    for r, p in zip(requests, prompts):
        assert r.tokens == alone(backend, p, r.max_tokens, logit_bias=no_end(backend))


def test_a_request_arriving_mid_decode_gets_its_first_token_within_two_steps(tiny_model):
    """The second request is queued while the first decodes (from inside its 5th step); its first token is
    sampled at most two forward passes later, long before the first request ends."""
    backend = load(str(tiny_model))
    engine = Engine("tiny", backend, max_batch=4, batch_window_ms=0)
    ids = backend.tokenizer("Count the apples", add_special_tokens=True)["input_ids"]
    seen: dict[str, int] = {}
    late = Request(list(ids), max_tokens=4, temperature=0,
                   stop_when=lambda text: seen.setdefault("first_token", backend.steps) and False)

    def arrive(text: str) -> bool:  # runs in the worker, after each of the long request's tokens
        if long.completion_tokens == 5:
            seen["arrived"] = backend.steps
            asyncio.run_coroutine_threadsafe(collect(late), loop)
        return False

    async def collect(r):
        seen["late_text"] = await engine.complete(r)

    long = Request(list(ids), max_tokens=40, temperature=0, logit_bias=no_end(backend), stop_when=arrive)

    async def main():
        await engine.complete(long)
        while "late_text" not in seen:
            await asyncio.sleep(0.01)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert long.finish_reason == "length" and long.completion_tokens == 40
    assert seen["first_token"] - seen["arrived"] <= 2
    assert late.finish_reason is not None


def test_a_full_queue_is_answered_429_with_retry_after(tiny_model):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from conftest import running_server
    from seedbed.serve.app import Limits, ServerConfig, create_app

    engine = Engine("tiny", load(str(tiny_model)), max_batch=1, batch_window_ms=0, max_queue=1)
    chat = dict(model="tiny", messages=[{"role": "user", "content": "Count"}], max_tokens=3, temperature=0)
    config = ServerConfig({"tiny": engine}, limits=Limits(request_timeout_s=20))
    with running_server(create_app(config)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        with ThreadPoolExecutor(2) as pool, engine.model_lock:  # the worker holds one request, one waits
            running = pool.submit(client.chat.completions.create, **chat)
            while engine.running == 0:
                time.sleep(0.01)
            waiting = pool.submit(client.chat.completions.create, **chat)
            while engine.queue_depth == 0:
                time.sleep(0.01)
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(**chat, stream=True)
            assert int(refused.value.response.headers["retry-after"]) >= 1
            assert refused.value.body["code"] == "queue_full"
        assert running.result().choices[0].message.content is not None and waiting.result().choices
