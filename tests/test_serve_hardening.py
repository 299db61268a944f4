"""What a careless user or a stranger may send the server (issue 13): each once stalled, crashed or grew it.

The real server on a free localhost port, a tiny model, raw HTTP for the bodies an SDK would not send.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from conftest import running_server
from seedbed.inference import load
from seedbed.inference.request import Request
from seedbed.inference.stops import pending_stop_prefix
from seedbed.serve.app import Limits, ServerConfig, create_app
from seedbed.serve.engine import Engine

KEY = "sk-hardening"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = [{"role": "user", "content": "What is two plus three?"}]


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine("tiny", load(str(tiny_model)), max_batch=8, batch_window_ms=50)


@pytest.fixture(scope="module")
def server(engine):
    config = ServerConfig({"tiny": engine}, api_keys=[KEY], limits=Limits(max_prompt_tokens=1000, max_tokens=64))
    with running_server(create_app(config)) as url:
        yield url, config


def post(url: str, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=AUTH, timeout=60, **kwargs)


# --- 1. stop strings: bounded, and scanned in linear time ----------------------------------------------------


def test_a_huge_stop_string_is_scanned_in_linear_time():
    """Comparing every prefix of a 10,000,000-character stop with the text's end took minutes per token."""
    found = []
    worker = threading.Thread(target=lambda: found.append(pending_stop_prefix("xyab", ["ab" + "c" * 10_000_000])),
                              daemon=True)
    worker.start()
    worker.join(timeout=30)  # linear: well under a second; quadratic: minutes
    assert found == [2]


def test_linear_scan_holds_back_what_comparing_every_prefix_did():
    import random

    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        stops = ["".join(rng.choice("ab") for _ in range(rng.randint(0, 10))) for _ in range(rng.randint(0, 3))]
        by_definition = max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        assert pending_stop_prefix(text, stops) == by_definition, (text, stops)


@pytest.mark.parametrize("stop, message", [
    ([chr(ord("a") + i) for i in range(17)], "17 stop strings"),
    ("a" * 300_000, "300000 characters"),
])
def test_too_many_or_too_long_stops_are_refused(server, stop, message):
    for path, body in [("/v1/chat/completions", {"messages": CHAT}), ("/v1/completions", {"prompt": "Hi"})]:
        r = post(server[0], path, {"model": "tiny", "max_tokens": 4, "stop": stop, **body})
        assert r.status_code == 400 and r.json()["error"]["param"] == "stop", r.text
        assert message in r.json()["error"]["message"]


def test_stops_within_the_limits_still_stop(server):
    whole = post(server[0], "/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 12, "temperature": 0})
    text = whole.json()["choices"][0]["text"]
    assert len(text) > 2
    cut = post(server[0], "/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 12, "temperature": 0,
                                              "stop": ["q" * 1000, text[1:3]]}).json()["choices"][0]
    assert text.startswith(cut["text"]) and len(cut["text"]) < len(text) and cut["finish_reason"] == "stop"


# --- 2. one bad row fails alone; tiny temperatures are greedy -------------------------------------------------


@pytest.mark.parametrize("temperature", [1e-40, 5e-324, 1e-6])
def test_tiny_temperatures_decode_greedily(server, temperature):
    body = {"model": "tiny", "prompt": "The sky is", "max_tokens": 6}
    greedy = post(server[0], "/v1/completions", {**body, "temperature": 0}).json()["choices"][0]["text"]
    r = post(server[0], "/v1/completions", {**body, "temperature": temperature})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == greedy


def test_a_row_that_fails_fails_alone(engine):
    """A request whose own decoding raises is answered with its error; the request batched with it is not."""

    def broken(text: str) -> bool:
        raise ZeroDivisionError("this row's stop_when")

    async def both():
        tokenizer = engine.tokenizer
        ids = tokenizer("Hello there", add_special_tokens=False)["input_ids"]
        good, bad = Request(ids, max_tokens=5, temperature=0), Request(ids, max_tokens=5, stop_when=broken)
        results = await asyncio.gather(engine.complete(bad), engine.complete(good), return_exceptions=True)
        return results, good

    seen = []  # per decode call: the rows it started with, then those that joined the running batch
    original = engine.backend.decode

    def counted(batch, admit=None):
        seen.append(len(batch))

        def joining(*args):
            joined = admit(*args)
            seen[-1] += len(joined)
            return joined
        return original(batch, joining if admit is not None else None)

    engine.backend.decode = counted
    try:
        (failed, answered), good = asyncio.run(both())
    finally:
        del engine.backend.decode  # the class's method again
    assert seen == [2]  # they shared one running batch (together from the start, or the second joined)
    assert isinstance(failed, ZeroDivisionError)
    assert isinstance(answered, str) and good.finish_reason in ("stop", "length") and good.completion_tokens > 0


def test_generate_still_raises_a_rows_error(engine):
    """Outside the server (generate, eval) nobody takes a row's error: it ends the decode, as before."""
    ids = engine.tokenizer("Hello", add_special_tokens=False)["input_ids"]
    with pytest.raises(ZeroDivisionError):
        engine.backend.decode([Request(ids, max_tokens=3, stop_when=lambda text: 1 / 0)])


# --- 3. the body limit counts bytes, not headers ---------------------------------------------------------------


def chunked(body: bytes, size: int = 65_536):
    """A body sent with Transfer-Encoding: chunked (httpx sends a generator so), so with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_chunked_body_over_the_limit_is_refused(server):
    import json

    url, config = server
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "word " * 400_000}]}).encode()
    assert len(big) > 2 * config.limits.max_body_bytes
    r = httpx.post(url + "/v1/chat/completions", content=chunked(big), timeout=60,
                   headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", r.text[:300]
    small = json.dumps({"model": "tiny", "messages": CHAT, "max_tokens": 3}).encode()
    r = httpx.post(url + "/v1/chat/completions", content=chunked(small, 7), timeout=60,
                   headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None


# --- 4. embeddings: bounded inputs and tokens, a known model -----------------------------------------------------


def test_embeddings_check_the_model_and_bound_the_inputs(server):
    url = server[0]
    ok = post(url, "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ["one two three", "four"]})
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2
    from seedbed.retrieval import Embedder

    assert ok.json()["usage"]["prompt_tokens"] == sum(Embedder().token_counts(["one two three", "four"]))
    for body, status, param, says in [
        ({"model": "gpt-9", "input": "hi"}, 404, "model", "not an embedding model"),
        ({"model": "all-MiniLM-L6-v2", "input": ["a"] * 2049}, 400, "input", "2049 inputs"),
        ({"model": "all-MiniLM-L6-v2", "input": ["short", "word " * 300]}, 400, "input", "input[1] is 302 tokens"),
    ]:
        r = post(url, "/v1/embeddings", body)
        assert r.status_code == status and r.json()["error"]["param"] == param, r.text[:300]
        assert says in r.json()["error"]["message"]


def test_embedding_tokens_together_are_bounded(engine):
    from fastapi.testclient import TestClient

    client = TestClient(create_app(ServerConfig({"tiny": engine}, limits=Limits(max_embedding_tokens=50))))
    r = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["word " * 20] * 3})
    assert r.status_code == 400 and "66 tokens" in r.json()["error"]["message"], r.text


# --- 5. metrics are labelled by route, not by URL --------------------------------------------------------------


def test_invented_urls_do_not_grow_the_metrics(server):
    url = server[0]
    before = httpx.get(url + "/metrics").text.count("\n")
    for i in range(40):
        assert httpx.get(f"{url}/nope-{i}").status_code == 404
        assert httpx.get(f"{url}/v1/nope-{i}", headers=AUTH).status_code == 404
        assert httpx.get(f"{url}/v1/nope-{i}").status_code == 401
    text = httpx.get(url + "/metrics").text
    assert "nope" not in text
    assert 'seedbed_requests_total{endpoint="unmatched",status="404"} 80.0' in text
    assert 'seedbed_requests_total{endpoint="unmatched",status="401"} 40.0' in text
    assert text.count("\n") - before < 60  # a fixed set of new series (latency buckets), not one per URL
    post(url, "/v1/chat/completions", {"model": "tiny", "messages": CHAT, "max_tokens": 2})
    assert 'endpoint="/v1/chat/completions",status="200"' in httpx.get(url + "/metrics").text


# --- 6. a malformed tool-call history is the caller's 400 --------------------------------------------------------

WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def history(function) -> list[dict]:
    return [{"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                   "function": function}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]


@pytest.mark.parametrize("function", ["get_weather", 7, {"arguments": "{}"}, [1]])
def test_a_malformed_tool_call_in_the_history_is_a_400(server, function):
    r = post(server[0], "/v1/chat/completions", {"model": "tiny", "messages": history(function), "tools": WEATHER,
                                                 "max_tokens": 3})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith("messages.1.tool_calls.0.function")


@pytest.mark.parametrize("arguments", ['{"city": "Oslo"}', {"city": "Oslo"}])
def test_a_well_formed_tool_call_history_is_answered(server, arguments):
    r = post(server[0], "/v1/chat/completions", {"model": "tiny", "tools": WEATHER, "max_tokens": 3,
                                                 "messages": history({"name": "get_weather", "arguments": arguments})})
    assert r.status_code == 200, r.text


# --- 7. the rest: context length, API-key comments, tools bounded -------------------------------------------------


def test_a_prompt_past_the_models_context_is_a_400(engine):
    from fastapi.testclient import TestClient

    client = TestClient(create_app(ServerConfig({"tiny": engine}, limits=Limits(max_prompt_tokens=100_000))))
    ids = [5] * engine.max_context
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": ids, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert f"reads at most {engine.max_context}" in r.json()["error"]["message"]
    assert client.post("/v1/completions", json={"model": "tiny", "prompt": ids[:-1], "max_tokens": 2}).status_code == 200
