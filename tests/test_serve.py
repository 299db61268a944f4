"""The real server on a localhost port, driven by the official `openai` SDK (and raw HTTP for malformed bodies)."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from conftest import free_port, running_server
from seedbed.inference import load
from seedbed.inference.request import Request
from seedbed.serve.app import Limits, ServerConfig, create_app
from seedbed.serve.engine import Engine

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine("tiny", load(str(tiny_model)), max_batch=8, batch_window_ms=20)


@pytest.fixture(scope="module")
def server(engine):
    config = ServerConfig({"tiny": engine}, api_keys=[KEY], limits=Limits(max_prompt_tokens=200, max_tokens=64))
    with running_server(create_app(config)) as url:
        yield url, config


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)


CHAT = [{"role": "user", "content": "What is two plus three?"}]


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"


def test_chat_streamed_chunks_join_into_the_greedy_answer(client):
    whole = client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=12)
    answer = whole.choices[0].message.content
    assert whole.usage.completion_tokens > 0 and whole.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=12,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_engine_greedy_equals_transformers_generate(engine, tiny_model):
    """Our batched decode loop gives transformers' greedy output, for prompts of different lengths at once."""
    import torch

    from seedbed.chat import render_prompt

    model, tokenizer, eos = engine.backend.model, engine.tokenizer, engine.backend.eos_ids
    prompts = [render_prompt(engine.tokenizer, [{"role": "user", "content": q}])
               for q in ["Hi", "What is two plus three? Say it in words.", "Name a colour of the sky."]]
    reference = []
    for prompt in prompts:  # transformers' own greedy decode, one prompt at a time
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=sorted(eos),
                                 pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        end = next((i for i, t in enumerate(out) if t in eos), len(out))
        reference.append(tokenizer.decode(out[:end], skip_special_tokens=True))

    async def ours():
        requests = [Request(engine.tokenizer(p, add_special_tokens=False)["input_ids"], max_tokens=10, temperature=0)
                    for p in prompts]
        return await asyncio.gather(*(engine.complete(r) for r in requests))

    assert asyncio.run(ours()) == reference


def test_text_completions(client):
    done = client.completions.create(model="tiny", prompt="The sky is", max_tokens=5, temperature=0)
    assert done.choices[0].text and done.usage.prompt_tokens > 0
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="The sky is", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == done.choices[0].text


def test_no_key_is_401(server):
    anonymous = openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    assert httpx.get(server[0] + "/v1/models").status_code == 401


@pytest.mark.parametrize("body, param", [
    ({"model": "tiny"}, "messages"),
    ({"model": "tiny", "messages": []}, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"model": "tiny", "messages": CHAT, "temperature": 5}, "temperature"),
    ({"model": "tiny", "messages": CHAT, "max_tokens": 10_000}, "max_tokens"),
    ({"model": "tiny", "messages": CHAT, "n": 17}, "n"),
    ({"model": "tiny", "messages": CHAT, "logprobs": True}, "logprobs"),  # not supported on chat: said, not ignored
    ({"model": "tiny", "messages": CHAT, "logit_bias": {"99999": 5}}, "logit_bias"),
    ({"model": "tiny", "messages": CHAT, "tool_choice": "required"}, "tool_choice"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 500}]}, "messages"),
])
def test_malformed_bodies_get_openai_error_json(server, body, param):
    r = httpx.post(server[0] + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_not_json_and_unknown_model(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(server[0] + "/v1/chat/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(server[0] + "/v1/chat/completions", json={"model": "gpt-9", "messages": CHAT}, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_concurrent_requests_are_batched(client, engine):
    from concurrent.futures import ThreadPoolExecutor

    seen = []
    original = engine.admit
    engine.admit = lambda running: (joined := original(running), seen.append(running + len(joined)))[0]
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"Count to {i}"}], temperature=0,
                max_tokens=8).choices[0].message.content, range(6)))
    finally:
        del engine.admit  # the class's method again
    assert len(answers) == 6 and max(seen) > 1  # several requests shared a batch


def test_metrics_are_prometheus_text(client, server):
    client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=3)
    text = httpx.get(server[0] + "/metrics").text
    assert 'seedbed_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert "seedbed_completion_tokens_total" in text and "seedbed_queue_depth" in text


def test_openapi_schema_is_served(server):
    schema = httpx.get(server[0] + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"} <= set(schema["paths"])


def test_inputs_the_fuzzer_found(server):
    """Found by benchmarks/fuzz_api.py (schemathesis): each once gave a 500."""
    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(server[0] + "/v1/completions", json={"model": "tiny", "prompt": "", "max_tokens": 2}, headers=headers)
    assert r.status_code == 200
    r = httpx.post(server[0] + "/v1/completions", headers=headers,
                   json={"model": "tiny", "prompt": "hi", "max_tokens": 2, "temperature": 0.5, "seed": 2**70})
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"


def test_body_size_and_time_limits(engine):
    from fastapi.testclient import TestClient

    config = ServerConfig({"tiny": engine}, limits=Limits(max_body_bytes=500, request_timeout_s=0.01, max_tokens=64))
    client = TestClient(create_app(config))
    big = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x" * 600}]})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    slow = client.post("/v1/chat/completions", json={"model": "tiny", "messages": CHAT, "max_tokens": 64,
                                                     "stop": ["never"], "temperature": 0})
    assert slow.status_code == 408 and slow.json()["error"]["type"] == "timeout_error"


def test_a_disconnected_stream_is_cancelled(engine, server):
    """Closing a streaming response mid-way stops its generation instead of decoding to max_tokens."""
    seen = []
    backend = engine.backend
    original = backend.advance

    def spy(r, *args):
        done = original(r, *args)
        if done and r.max_tokens == 64:
            seen.append(r.finish_reason)
        return done

    backend.advance = spy
    try:
        body = {"model": "tiny", "messages": CHAT, "max_tokens": 64, "stream": True, "temperature": 0.9,
                "stop": ["never"]}
        with httpx.stream("POST", server[0] + "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY}"}) as response:
            for line in response.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break  # the client goes away after the first piece of text
        for _ in range(100):
            if seen:
                break
            time.sleep(0.05)
    finally:
        del backend.advance  # the class's method again
    assert seen == ["cancelled"]


def test_api_keys_file(tmp_path, tiny_model):
    from seedbed.recipe import ServeRecipe
    from seedbed.serve.server import build_config

    keys = tmp_path / "keys"
    keys.write_text("# team keys\nsk-one\n   # sk-retired (an indented comment is a comment)\n\tsk-two\n")
    config = build_config(ServeRecipe(model=[f"tiny={tiny_model}"], api_keys_file=str(keys), api_key=["sk-cli"]))
    assert config.api_keys == ["sk-cli", "sk-one", "sk-two"] and "calculator" in config.tools


def test_seedbed_serve_command_end_to_end(tiny_model):
    """The acceptance run: `seedbed serve --model tiny=DIR --api-key K` as its own process, the openai SDK as client."""
    import subprocess
    import sys

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "seedbed.cli", "serve", "--model", f"tiny={tiny_model}",
                                "--api-key", "K", "--port", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
            assert process.poll() is None, process.stderr.read()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="K", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        whole = client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=10)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny", messages=CHAT, temperature=0, max_tokens=10, stream=True) if c.choices)
        assert streamed == whole.choices[0].message.content
        assert len(client.embeddings.create(model="all-MiniLM-L6-v2", input="hi").data[0].embedding) == 384
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "tiny"},
                         headers={"Authorization": "Bearer K"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    finally:
        process.terminate()
        process.wait(timeout=30)
