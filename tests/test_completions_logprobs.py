"""`/v1/completions` logprobs, echo, token-id and batched prompts, through the official `openai` SDK where it can
say the request: every logprob is the model's own log-softmax, in both engines."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
import torch

from conftest import running_server
from seedbed.inference import load
from seedbed.inference.request import Request
from seedbed.serve.app import Limits, ServerConfig, create_app
from seedbed.serve.engine import Engine

PROMPT = "Natalia sold clips to 48 of her friends"


@pytest.fixture(scope="module")
def backend(tiny_model):
    return load(str(tiny_model))


@pytest.fixture(scope="module")
def server(backend):
    engine = Engine("tiny", backend, max_batch=8, batch_window_ms=20)
    limits = Limits(max_prompt_tokens=200, max_tokens=64, max_prompts=4, max_batch_tokens=300)
    with running_server(create_app(ServerConfig({"tiny": engine}, limits=limits))) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0)


def log_softmax(backend, ids: list[int]) -> torch.Tensor:
    """(seq, vocab): row t is the distribution of token t + 1."""
    with torch.no_grad():
        return torch.log_softmax(backend.model(torch.tensor([ids])).logits[0].float(), -1)


def test_echo_logprobs_of_the_prompt_and_the_completion_are_the_log_softmax(client, backend):
    done = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, echo=True, logprobs=3)
    choice = done.choices[0]
    ids = backend.tokenizer(PROMPT)["input_ids"]
    lp = choice.logprobs
    n = len(lp.tokens)
    assert n == len(ids) + done.usage.completion_tokens  # no stop string, no end token: every sampled token shown
    # The tokens are the prompt's and then the greedy completion's; their text is the choice's text.
    assert lp.tokens[: len(ids)] == [backend.tokenizer.decode([t]) for t in ids]
    assert choice.text.startswith(PROMPT)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    reference = log_softmax(backend, ids)
    for t in range(1, len(ids)):
        assert lp.token_logprobs[t] == pytest.approx(float(reference[t - 1, ids[t]]), abs=1e-4)
        best = reference[t - 1].topk(3)
        # likeliest first; two ids with one text (a half character) share a key, the likelier kept
        assert list(lp.top_logprobs[t].values())[0] == pytest.approx(float(best.values[0]), abs=1e-4)
        assert set(lp.top_logprobs[t]) == {backend.tokenizer.decode([k]) for k in best.indices.tolist()}
    # Greedy: each completion token is the likeliest, so its logprob is the best of its alternatives.
    for t in range(len(ids), n):
        assert lp.token_logprobs[t] == pytest.approx(max(lp.top_logprobs[t].values()), abs=1e-6)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert lp.text_offset[len(ids)] == len(PROMPT)


def test_a_stopped_completion_reports_every_sampled_token(client, backend):
    """As vLLM: the token that ended the completion (here the stop string's) is in the logprobs, one per
    completion token, which lm-eval counts on; the text stops before the stop string."""
    free = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=1)
    first, second = free.choices[0].logprobs.tokens[:2]
    # the tiny model is deterministic: its greedy second token is one a stop string can name
    assert second.strip() and second not in first, (first, second)
    stopped = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=1,
                                        stop=[second])
    choice = stopped.choices[0]
    assert choice.text == first and choice.finish_reason == "stop"
    assert choice.logprobs.tokens == [first, second] and stopped.usage.completion_tokens == 2
    assert choice.logprobs.token_logprobs == pytest.approx(free.choices[0].logprobs.token_logprobs[:2], abs=1e-5)


def test_completion_logprobs_without_echo_score_the_sampled_tokens(backend, server):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 6, "temperature": 1.0, "seed": 7, "logprobs": 1}
    choice = httpx.post(server + "/v1/completions", json=body).json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) > 0
    assert lp["text_offset"][0] == len(PROMPT)  # offsets count from the start of the prompt, as OpenAI's do
    # The same seed samples the same ids outside the server
    ids = backend.tokenizer(PROMPT)["input_ids"]
    again = Request(ids, max_tokens=6, temperature=1.0, seed=7)
    backend.decode([again])
    sampled = again.tokens
    assert [backend.tokenizer.decode([t]) for t in sampled] == lp["tokens"]
    reference = log_softmax(backend, ids + sampled)
    assert lp["token_logprobs"] == pytest.approx(
        [float(reference[len(ids) + j - 1, t]) for j, t in enumerate(sampled)], abs=1e-4)


def test_score_only_with_token_id_prompts_batched(client, backend, server):
    """What lm-eval sends: token ids, several prompts, echo, max_tokens 0 (or 1), logprobs 1."""
    texts = ["Two plus three is five", "The sky is blue", "Hi"]
    prompts = [backend.tokenizer(t)["input_ids"] for t in texts]
    for max_tokens in (0, 1):
        done = client.completions.create(model="tiny", prompt=prompts, max_tokens=max_tokens, echo=True, logprobs=1,
                                         temperature=0)
        assert [c.index for c in done.choices] == [0, 1, 2]
        assert done.usage.prompt_tokens == sum(map(len, prompts))
        for ids, choice in zip(prompts, done.choices):
            lp = choice.logprobs
            assert len(lp.token_logprobs) == len(ids) + max_tokens
            reference = log_softmax(backend, ids)
            assert lp.token_logprobs[1 : len(ids)] == pytest.approx(
                [float(reference[t - 1, ids[t]]) for t in range(1, len(ids))], abs=1e-4)
        if max_tokens == 0:
            assert [c.text for c in done.choices] == [backend.tokenizer.decode(p, skip_special_tokens=True)
                                                      for p in prompts]
    # one prompt as token ids, and several texts
    one = client.completions.create(model="tiny", prompt=prompts[0], max_tokens=0, echo=True, logprobs=0)
    assert len(one.choices) == 1 and one.choices[0].logprobs.top_logprobs[1] == {}
    several = client.completions.create(model="tiny", prompt=texts[:2], max_tokens=2, temperature=0)
    assert len(several.choices) == 2 and all(c.logprobs is None for c in several.choices)


@pytest.mark.parametrize("body, param", [
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),  # nothing asked for
    ({"prompt": "hi", "logprobs": 21}, "logprobs"),  # more alternatives than scoring gives
    ({"prompt": "hi", "logprobs": 1, "stream": True}, "logprobs"),
    ({"prompt": ["a", "b", "c"], "n": 2}, "n"),  # 6 choices: over max_prompts (4)
    ({"prompt": "hi", "echo": True, "max_tokens": 0, "stream": True}, "max_tokens"),
    ({"prompt": ["a"] * 5}, "prompt"),  # max_prompts 4
    ({"prompt": [[1, 2], [3, 100000]]}, "prompt"),  # not a token id
    ({"prompt": [], "max_tokens": 1}, "prompt"),
    ({"prompt": ["word " * 60] * 4, "max_tokens": 10}, "prompt"),  # over max_batch_tokens together
    ({"prompt": "hi", "max_tokens": 65}, "max_tokens"),
])
def test_bounds_are_400s_naming_the_field(server, body, param):
    r = httpx.post(server + "/v1/completions", json={"model": "tiny", **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_llama_cpp_logprobs_equal_torch_at_f32(backend, tiny_model, tmp_path):
    pytest.importorskip("llama_cpp")
    from seedbed.quantize.gguf_export import write_gguf_model

    gguf_dir = write_gguf_model(tiny_model, tmp_path / "f32", "f32").parent
    engines = {"torch": Engine("torch", backend), "gguf": Engine("gguf", load(str(gguf_dir), "llama.cpp"))}
    with running_server(create_app(ServerConfig(engines))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        answers = [client.completions.create(model=name, prompt=PROMPT, max_tokens=4, temperature=0, echo=True,
                                             logprobs=2).choices[0] for name in engines]
    torch_lp, gguf_lp = (a.logprobs for a in answers)
    assert answers[0].text == answers[1].text and torch_lp.tokens == gguf_lp.tokens
    assert gguf_lp.token_logprobs[1:] == pytest.approx(torch_lp.token_logprobs[1:], abs=1e-3)
    assert [list(t) for t in gguf_lp.top_logprobs[1:]] == [list(t) for t in torch_lp.top_logprobs[1:]]


class Watched:
    """A backend that records whether `decode` and `score` ever ran at the same time."""

    def __init__(self, backend):
        self.backend, self.busy, self.overlaps, self.scored = backend, False, 0, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def run(self, method, *args):
        self.overlaps += self.busy
        self.busy = True
        try:
            time.sleep(0.02)  # widen the window an overlap would show in
            return getattr(self.backend, method)(*args)
        finally:
            self.busy = False

    def decode(self, batch, admit=None):
        return self.run("decode", batch)

    def score(self, sequences, starts, top_k=0):
        self.scored += 1
        return self.run("score", sequences, starts, top_k)


def test_scoring_takes_turns_with_decoding_and_keeps_the_time_limit(backend):
    from concurrent.futures import ThreadPoolExecutor

    watched = Watched(backend)
    engine = Engine("tiny", watched, max_batch=4, batch_window_ms=5)
    config = ServerConfig({"tiny": engine})
    with running_server(create_app(config)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        with ThreadPoolExecutor(8) as pool:
            jobs = [pool.submit(client.completions.create, model="tiny", prompt=f"{PROMPT} {i}", max_tokens=8,
                                temperature=0, echo=i % 2 == 0, logprobs=1 if i % 3 else None) for i in range(12)]
            assert all(len(j.result().choices) == 1 for j in jobs)
        assert watched.overlaps == 0 and watched.scored > 0
        # A scoring job that waits past the time limit (the model busy) is answered 408 and never runs.
        scored = watched.scored
        config.limits.request_timeout_s = 0.5
        with engine.model_lock:
            r = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": PROMPT, "max_tokens": 0,
                                                          "echo": True, "logprobs": 1})
        assert r.status_code == 408 and r.json()["error"]["type"] == "timeout_error"
        time.sleep(0.3)  # the job's thread takes the lock now, sees it was cancelled, and returns
        assert watched.scored == scored
