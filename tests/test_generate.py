"""Generation on a tiny Llama: greedy is deterministic and batch-independent, stops where told, streams the same text."""

from __future__ import annotations

import pytest

import seedbed.inference.generate as gen
from seedbed.chat import render_prompt
from seedbed.inference.generate import generate, run_chat, run_generate, stream
from seedbed.inference.hf import TorchBackend
from seedbed.inference.stops import Sampling, cut_at_stop
from seedbed.recipe import GenerateRecipe

QUESTIONS = ["What is two plus three?", "Hi", "Name a colour of the sky, please, in one word."]
GREEDY = Sampling(greedy=True, max_new_tokens=24)


@pytest.fixture(scope="module")
def backend(tiny_model):
    return TorchBackend.load(str(tiny_model))


@pytest.fixture(scope="module")
def prompts(backend):
    return [render_prompt(backend.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


def test_greedy_is_deterministic_and_batching_does_not_change_it(backend, prompts):
    batched = generate(backend, prompts, GREEDY, batch_size=3)
    assert batched == generate(backend, prompts, GREEDY, batch_size=3)
    assert batched == [generate(backend, [p], GREEDY)[0] for p in prompts]  # prompts of unequal length
    assert Sampling(temperature=0).is_greedy and generate(backend, prompts[:1], Sampling(temperature=0, max_new_tokens=24)) == batched[:1]


def test_greedy_equals_transformers_generate(backend, prompts):
    """Our decode loop (left-padded batch, rows leaving when done) gives transformers' own greedy output."""
    import torch

    model, tokenizer = backend.model, backend.tokenizer
    ours = generate(backend, prompts, Sampling(greedy=True, max_new_tokens=10))
    reference = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=sorted(backend.eos_ids),
                                 pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        end = next((i for i, t in enumerate(out) if t in backend.eos_ids), len(out))
        reference.append(tokenizer.decode(out[:end], skip_special_tokens=True))
    assert ours == reference


def test_one_seed_gives_one_answer_in_generate_eval_and_serve(tiny_model, backend, prompts):
    """The same seed and settings sample the same text through the CLI's generate, eval's path and the server."""
    import asyncio

    from seedbed.serve.engine import Engine

    sampling = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=11)
    cli = run_generate(GenerateRecipe(model=str(tiny_model), temperature=1.0, top_p=0.95, max_new_tokens=16, seed=11),
                       QUESTIONS[0])
    batched = generate(backend, prompts, sampling, batch_size=3)  # eval decodes in batches
    engine = Engine("tiny", backend, max_batch=1)
    request = gen.request_for(backend, prompts[0], sampling)
    served = asyncio.run(engine.complete(request))
    assert cli == batched[0] == served
    assert generate(backend, prompts[:1], Sampling(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=12)) != [cli]


def test_progress_reports_answers_done(backend, prompts):
    done = []
    generate(backend, prompts, Sampling(greedy=True, max_new_tokens=2), batch_size=2, progress=done.append)
    assert done == [2, 3]


def test_stop_string_cuts_the_output(backend, prompts):
    full = generate(backend, prompts[:1], GREEDY)[0]
    assert len(full) > 6, full
    stop = full[4:6]
    start = full.find(stop)
    cut = generate(backend, prompts[:1], Sampling(greedy=True, max_new_tokens=24, stop=[stop]))[0]
    assert cut == full[:start]


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert cut_at_stop("a STOP b END c", ["END", "STOP"]) == "a "
    assert cut_at_stop("nothing here", ["END"]) == "nothing here"


@pytest.mark.parametrize("stop", [[], ["e"], [" pl"]])
def test_streamed_pieces_join_to_the_greedy_output(backend, prompts, stop):
    sampling = Sampling(greedy=True, max_new_tokens=24, stop=stop)
    for prompt in prompts:
        pieces = list(stream(backend, prompt, sampling))
        assert "".join(pieces) == generate(backend, [prompt], sampling)[0]


def test_sampling_with_a_seed_is_reproducible(backend, prompts):
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=16, seed=3)
    assert generate(backend, prompts, sampling) == generate(backend, prompts, sampling)


def test_run_generate_answers_a_chat_prompt_and_a_raw_one(tiny_model, backend, prompts):
    recipe = GenerateRecipe(model=str(tiny_model), greedy=True, max_new_tokens=24)
    assert run_generate(recipe, QUESTIONS[0]) == generate(backend, prompts[:1], GREEDY)[0]
    raw = run_generate(recipe.model_copy(update={"raw": True}), "Two plus three is")
    assert raw == generate(backend, ["<s>Two plus three is"], GREEDY)[0]


def test_chat_keeps_history_resets_and_exits(tiny_model, monkeypatch):
    seen_prompts = []
    real_stream = gen.stream

    def recording_stream(backend, prompt, sampling):
        seen_prompts.append(prompt)
        yield from real_stream(backend, prompt, sampling)

    monkeypatch.setattr(gen, "stream", recording_stream)
    lines = iter(["What is two plus three?", "And four?", "/reset", "Hi", "/exit", "never read"])
    written = []
    run_chat(GenerateRecipe(model=str(tiny_model), greedy=True, max_new_tokens=8, system="Be brief."),
             read=lambda _prompt: next(lines), write=written.append)

    assert len(seen_prompts) == 3
    first_answer = "".join(written).split("model> ")[1].split("\n")[0].strip()
    assert first_answer and "What is two plus three?" in seen_prompts[1] and first_answer in seen_prompts[1]
    assert "What is two plus three?" not in seen_prompts[2] and "Be brief." in seen_prompts[2]  # reset keeps the system prompt
    assert next(lines) == "never read"


def test_chat_ends_at_end_of_input(tiny_model):
    def eof(_prompt):
        raise EOFError

    run_chat(GenerateRecipe(model=str(tiny_model)), read=eof, write=lambda _text: None)


# --- structured output: --json-schema FILE (the server's response_format is in test_serve_structured.py) ----------


def test_json_schema_rows_are_valid_and_batching_does_not_change_them(backend, prompts):
    from test_serve_structured import SNIPS, snips_problem

    sampling = Sampling(greedy=True, max_new_tokens=256, json_schema=SNIPS)
    batched = generate(backend, prompts, sampling, batch_size=3)
    assert batched == [generate(backend, [p], sampling)[0] for p in prompts]
    assert all(snips_problem(text) is None for text in batched), batched
    seeded = Sampling(temperature=1.0, top_p=0.9, seed=5, max_new_tokens=256, json_schema=SNIPS)
    sampled = generate(backend, prompts, seeded)
    assert sampled == generate(backend, prompts, seeded) and all(snips_problem(text) is None for text in sampled)


def test_the_end_of_turn_stays_allowed_once_the_json_is_complete(backend):
    """`12` is a whole integer and may also go on (`123`): both the digits and the row's end ids are allowed."""
    import torch

    from seedbed.inference.hf import JsonConstraint, mask_logits
    from seedbed.inference.stops import TextTracker

    tracker = TextTracker(backend.tokenizer, backend.eos_ids, ["<|end|>"])
    constraint = JsonConstraint(backend.compile_schema({"type": "integer"}), tracker.end_ids, backend.mask_width)
    for token in backend.tokenizer("12", add_special_tokens=False)["input_ids"]:
        assert constraint.accept(token) is False
    logits = torch.zeros((2, backend.model.config.vocab_size))
    mask_logits(logits, [1], [constraint])
    allowed = {backend.tokenizer.decode([t]) for t in torch.nonzero(logits[1] == 0).flatten().tolist()}
    assert {"</s>", "<|end|>", "3"} <= allowed and "{" not in allowed and (logits[0] == 0).all()
    assert constraint.accept(backend.tokenizer.convert_tokens_to_ids("<|end|>")) is True


def test_cli_generate_and_eval_with_a_json_schema_file(tiny_model, tmp_path):
    import json

    from typer.testing import CliRunner

    from conftest import qa_records, write_jsonl
    from seedbed.cli import app
    from seedbed.evaluate import evaluate
    from seedbed.recipe import EvalRecipe
    from test_serve_structured import SNIPS, snips_problem

    schema = tmp_path / "snips.json"
    schema.write_text(json.dumps(SNIPS))
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model), "--greedy", "--max-new-tokens", "256",
                                      "--json-schema", str(schema), "Play some jazz"])
    assert result.exit_code == 0 and snips_problem(result.output.strip()) is None, result.output
    held = write_jsonl(tmp_path / "held.jsonl", qa_records(3))
    evaluated = evaluate(EvalRecipe(models=[f"tiny={tiny_model}"], data=[str(held)], shots=[0], max_new_tokens=256,
                                    json_schema=str(schema), quiet=True))
    assert all(snips_problem(s["prediction"]) is None for s in evaluated.conditions[0].samples)


@pytest.mark.parametrize("content, says", [
    (None, "no such JSON schema file"),
    ("{not json", "not JSON (line 1"),
    ("[1, 2]", "a JSON schema is a JSON object"),
    ('{"type": "nonsense"}', "Invalid type: nonsense"),
])
def test_a_bad_json_schema_file_is_one_clear_cli_error(tiny_model, tmp_path, content, says):
    from typer.testing import CliRunner

    from seedbed.cli import app

    schema = tmp_path / "schema.json"
    if content is not None:
        schema.write_text(content)
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model), "--json-schema", str(schema), "Hi"])
    output = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2 and str(schema) in output and says in output and "Traceback" not in output, output
