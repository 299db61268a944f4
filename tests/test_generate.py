"""Generation on a tiny Llama: greedy is deterministic and batch-independent, stops where told, streams the same text."""

from __future__ import annotations

import pytest

import seedbed.generate as gen
from seedbed.chat import render_prompt
from seedbed.generate import Sampling, cut_at_stop, generate, run_chat, run_generate, stream
from seedbed.models import load_model
from seedbed.recipe import GenerateRecipe

QUESTIONS = ["What is two plus three?", "Hi", "Name a colour of the sky, please, in one word."]
GREEDY = Sampling(greedy=True, max_new_tokens=24)


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(str(tiny_model))


@pytest.fixture(scope="module")
def prompts(loaded):
    _, tokenizer = loaded
    return [render_prompt(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


def test_greedy_is_deterministic_and_batching_does_not_change_it(loaded, prompts):
    model, tokenizer = loaded
    batched = generate(model, tokenizer, prompts, GREEDY, batch_size=3)
    assert batched == generate(model, tokenizer, prompts, GREEDY, batch_size=3)
    assert batched == [generate(model, tokenizer, [p], GREEDY)[0] for p in prompts]  # prompts of unequal length
    assert tokenizer.padding_side == "right"  # left padding was only for the call
    assert Sampling(temperature=0).is_greedy and generate(model, tokenizer, prompts[:1], Sampling(temperature=0, max_new_tokens=24)) == batched[:1]


def test_progress_reports_answers_done(loaded, prompts):
    model, tokenizer = loaded
    done = []
    generate(model, tokenizer, prompts, Sampling(greedy=True, max_new_tokens=2), batch_size=2, progress=done.append)
    assert done == [2, 3]


def test_stop_string_cuts_the_output(loaded, prompts):
    model, tokenizer = loaded
    full = generate(model, tokenizer, prompts[:1], GREEDY)[0]
    assert len(full) > 6, full
    stop = full[4:6]
    start = full.find(stop)
    cut = generate(model, tokenizer, prompts[:1], Sampling(greedy=True, max_new_tokens=24, stop=[stop]))[0]
    assert cut == full[:start]


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert cut_at_stop("a STOP b END c", ["END", "STOP"]) == "a "
    assert cut_at_stop("nothing here", ["END"]) == "nothing here"


@pytest.mark.parametrize("stop", [[], ["e"], [" pl"]])
def test_streamed_pieces_join_to_the_greedy_output(loaded, prompts, stop):
    model, tokenizer = loaded
    sampling = Sampling(greedy=True, max_new_tokens=24, stop=stop)
    for prompt in prompts:
        pieces = list(stream(model, tokenizer, prompt, sampling))
        assert "".join(pieces) == generate(model, tokenizer, [prompt], sampling)[0]


def test_sampling_with_a_seed_is_reproducible(loaded, prompts):
    model, tokenizer = loaded
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=16, seed=3)
    assert generate(model, tokenizer, prompts, sampling) == generate(model, tokenizer, prompts, sampling)


def test_run_generate_answers_a_chat_prompt_and_a_raw_one(tiny_model, loaded, prompts):
    model, tokenizer = loaded
    recipe = GenerateRecipe(model=str(tiny_model), greedy=True, max_new_tokens=24)
    assert run_generate(recipe, QUESTIONS[0]) == generate(model, tokenizer, prompts[:1], GREEDY)[0]
    raw = run_generate(recipe.model_copy(update={"raw": True}), "Two plus three is")
    assert raw == generate(model, tokenizer, ["<s>Two plus three is"], GREEDY)[0]


def test_chat_keeps_history_resets_and_exits(tiny_model, monkeypatch):
    seen_prompts = []
    real_stream = gen.stream

    def recording_stream(model, tokenizer, prompt, sampling):
        seen_prompts.append(prompt)
        yield from real_stream(model, tokenizer, prompt, sampling)

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
