"""`seedbed eval --tools calculator` runs the annotation loop `seedbed serve` runs: on the same scripted model
outputs, serve's driver (async, through its engine) and eval's (batched, in lockstep rounds) see the same contexts
and give the same final text and calculator calls."""

from __future__ import annotations

import asyncio
import doctest
import json
import re

import pytest
from conftest import write_jsonl

import seedbed.evaluate.run as run
from seedbed.evaluate import evaluate
from seedbed.inference import annotations, load
from seedbed.inference.annotations import MAX_ANNOTATIONS, AnnotatedAnswer
from seedbed.inference.calculator import ANNOTATION
from seedbed.inference.stops import TextTracker
from seedbed.recipe import EvalRecipe

# What the scripted model writes for each question, its own (wrong) annotation values included.
SCRIPTS = {
    "What is 17 times 23?": "17*23 = <<17*23=390>>390\n#### 390",
    "What is 3 times 4, plus 1?": "3*4 = <<3*4=13>>13 and 13+1 = <<13+1=15>>15\n#### 15",
    "What is x plus 1?": "It is <<x+1=5>>5\n#### 5",  # the calculator refuses `x+1`: `?>>`
    "What is the capital of France?": "Paris.\n#### 0",  # no annotation: one round either way
    "Count on.": "<<1+1=2>>2 " + "and on " * 40,  # runs past max_new_tokens after an annotation
}
REFERENCES = {"What is 17 times 23?": "#### 391", "What is 3 times 4, plus 1?": "#### 13",
              "What is x plus 1?": "#### 5", "What is the capital of France?": "#### 0", "Count on.": "#### 2"}
MAX_NEW_TOKENS = 40


class ScriptedModel:
    """A backend (`seedbed.inference.Backend`) whose model writes its script token by token through the real stop
    scanner (`TextTracker`), so `stop_when`, stop strings and max_tokens act on it as on a real model. After an
    annotation someone else completed, it goes on with the rest of its script, using the value it was given in
    place of its own (a model that reads the calculator's result)."""

    max_batch = 8

    def __init__(self, path):
        inner = load(str(path))  # for the tokenizer and context size
        self.name, self.tokenizer, self.max_context = "scripted", inner.tokenizer, inner.max_context
        self.contexts: list[str] = []  # every round's prompt + answer so far, decoded
        self.batches: list[int] = []

    def continuation(self, context: str) -> str:
        prompt, _, written = context.rpartition("<|assistant|>\n")
        script = SCRIPTS[prompt.rsplit("<|user|>\n", 1)[1].split("<|end|>")[0]]
        closed = written.count(">>")
        if not closed:
            return script
        start = 0
        for _ in range(closed):
            start = script.index(">>", start) + 2
        own, given = ANNOTATION.findall(script)[closed - 1][1], ANNOTATION.findall(written)[-1][1]
        return script[start:].replace(own, given)

    def decode(self, batch, admit=None):
        self.batches.append(len(batch))
        eos = self.tokenizer.eos_token_id
        for request in batch:
            context = self.tokenizer.decode(request.prompt_ids)
            self.contexts.append(context)
            ids = self.tokenizer(self.continuation(context), add_special_tokens=False)["input_ids"] + [eos]
            tracker = TextTracker(self.tokenizer, {eos}, request.stop, request.stop_when)
            for i, token in enumerate(ids):
                piece, finish = tracker.push(token, at_limit=i + 1 >= request.max_tokens)
                request.completion_tokens += 1
                if piece:
                    request.emit(piece)
                if finish:
                    request.end(finish)
                    break

    def heldout_loss(self, examples, max_length=1024, batch_size=8):
        return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}


def served(backend: ScriptedModel, question: str) -> tuple[str, str]:
    """The answer `seedbed serve` gives with the calculator on: (text, finish reason)."""
    from seedbed.serve.chat_completions import answer
    from seedbed.serve.engine import Engine
    from seedbed.serve.protocol import Limits, ServerConfig
    from seedbed.serve.schemas import ChatCompletionRequest

    engine = Engine("scripted", backend)
    config = ServerConfig({"scripted": engine}, limits=Limits(max_tokens=MAX_NEW_TOKENS))
    messages = [{"role": "user", "content": question}]
    body = ChatCompletionRequest(model="scripted", messages=messages, temperature=0, max_tokens=MAX_NEW_TOKENS)
    text, request = asyncio.run(answer(config, engine, messages, body, None, calculator=True))
    return text, request.finish_reason


@pytest.fixture
def heldout(tmp_path):
    return write_jsonl(tmp_path / "heldout.jsonl", [{"question": q, "answer": REFERENCES[q]} for q in SCRIPTS])


def test_eval_calculator_equals_serve_calculator_on_the_same_model_outputs(tiny_model, heldout, tmp_path, monkeypatch):
    backend = ScriptedModel(tiny_model)
    serve_answers = {q: served(backend, q) for q in SCRIPTS}
    serve_contexts = sorted(backend.contexts)

    backend.contexts, backend.batches = [], []
    monkeypatch.setattr(run, "load", lambda *args, **kwargs: backend)
    result = evaluate(EvalRecipe(models=[f"s={tiny_model}"], data=[str(heldout)], shots=[0], tools=["calculator"],
                                 max_new_tokens=MAX_NEW_TOKENS, batch_size=3, out=str(tmp_path / "eval"), quiet=True))
    plain, tooled = result.conditions
    assert (plain.name, plain.tools, tooled.name, tooled.tools) == ("s", [], "s +calculator", ["calculator"])

    # Eval decoded every question's first round (batched, 3 at a time) before any question's second round.
    assert backend.batches[:2] == [3, 2] and all(c.endswith("<|assistant|>\n") for c in backend.contexts[5:10])
    tool_contexts = sorted(backend.contexts[len(SCRIPTS):])  # after the plain condition's single round each
    assert tool_contexts == serve_contexts  # the same rounds, from the same contexts

    for a in tooled.answers:
        text, finish = serve_answers[a["question"]]
        assert (a["prediction"], a["finish_reason"]) == (text, finish)
        assert [(c["expression"], c["value"]) for c in a["tool_calls"]] == ANNOTATION.findall(text)
    by_question = {a["question"]: a for a in tooled.answers}
    assert by_question["What is 17 times 23?"]["prediction"] == "17*23 = <<17*23=391>>391\n#### 391"
    assert by_question["What is 3 times 4, plus 1?"]["tool_calls"] == [
        {"expression": "3*4", "value": "12"}, {"expression": "12+1", "value": "13"}]
    assert by_question["What is x plus 1?"]["tool_calls"] == [{"expression": "x+1", "value": "?"}]
    assert by_question["What is the capital of France?"]["tool_calls"] == []
    assert by_question["Count on."]["finish_reason"] == "length"
    assert all(SCRIPTS[a["question"]].startswith(a["prediction"]) for a in plain.answers)  # the model's own text
    # The tool changes the score: 17*23 and 3*4+1 become right, x+1 becomes `?` (wrong); Paris and 1+1 stay right.
    assert [a["correct"] for a in plain.answers] == [False, False, True, True, True]
    assert [a["correct"] for a in tooled.answers] == [True, True, False, True, True]

    out = tmp_path / "eval"
    lines = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [line["condition"] for line in lines] == ["s"] * 5 + ["s +calculator"] * 5
    assert "tool_calls" not in lines[0] and lines[5]["tool_calls"] == [{"expression": "17*23", "value": "391"}]
    table = (out / "results.md").read_text()
    assert "| s +calculator | " in table and "| 80.0% |" in table and "+calculator` rows" in table


def test_the_loop_stops_after_max_annotations():
    """A model that opens an annotation after every value is cut off after MAX_ANNOTATIONS + 1 rounds (as serve)."""
    chars = lambda text, add_special_tokens=False: {"input_ids": [ord(c) for c in text]}  # noqa: E731
    answer = AnnotatedAnswer([0], chars)
    while not answer.done:
        stop = answer.stop_when()
        assert stop("<<1+1") is False and stop("<<1+1=") is True
        answer.take(" <<1+1=", "stop", 2)
    assert answer.rounds == MAX_ANNOTATIONS + 1 and len(answer.calls) == MAX_ANNOTATIONS + 1
    assert answer.next_ids()[1:] == [ord(c) for c in answer.text] and answer.budget(10) == 1
    assert answer.text.endswith("<<1+1=2>>") and answer.completion_tokens == 2 * (MAX_ANNOTATIONS + 1)


def test_without_the_calculator_there_is_one_round():
    answer = AnnotatedAnswer([0], lambda text, add_special_tokens=False: {"input_ids": []}, calculator=False)
    assert answer.stop_when() is None
    answer.take("so <<48/2=", "stop", 4)
    assert answer.done and answer.calls == [] and answer.text == "so <<48/2="


def test_a_round_cut_at_max_tokens_is_not_completed():
    answer = AnnotatedAnswer([0], lambda text, add_special_tokens=False: {"input_ids": []})
    answer.take("so <<48/2=", "length", 4)
    assert answer.done and answer.calls == [] and answer.finish_reason == "length"


def test_annotations_doctests():
    assert doctest.testmod(annotations).failed == 0


def test_tools_flag_on_the_cli(tiny_model, heldout, tmp_path):
    """`seedbed eval --tools calculator` on the tiny model: a `+calculator` row beside the plain one; an unknown
    tool is refused naming the field."""
    from typer.testing import CliRunner

    from seedbed.cli import app

    args = ["eval", "--models", f"t={tiny_model}", "--data", str(heldout), "--shots", "0", "--max-new-tokens", "4",
            "--quiet"]
    done = CliRunner().invoke(app, [*args, "--tools", "calculator"], env={"COLUMNS": "300"})
    assert done.exit_code == 0, done.output
    assert re.search(r"\| t \| .*\n\| t \+calculator \| ", done.output)
    refused = CliRunner().invoke(app, [*args, "--tools", "python"], env={"COLUMNS": "300"})
    assert refused.exit_code != 0 and "tools" in refused.output


@pytest.fixture(scope="module")
def wrong_at_arithmetic(tmp_path_factory, tiny_model):
    """The tiny model, fine-tuned until it answers one question with a deliberately wrong annotated value."""
    from seedbed.recipe import FinetuneRecipe
    from seedbed.train.finetune import finetune

    tmp = tmp_path_factory.mktemp("calc")
    turns = [{"role": "user", "content": "What is 17 times 23?"},
             {"role": "assistant", "content": "17*23 = <<17*23=390>>390\n#### 390"}]
    data = write_jsonl(tmp / "d.jsonl", [{"messages": turns}] * 16)
    finetune(FinetuneRecipe(base=str(tiny_model), data=[str(data)], out=str(tmp / "m"), method="full", lr=3e-3,
                            max_steps=100, batch_size=8, warmup=0, val_fraction=0, quiet=True, save_steps=1000))
    return tmp / "m"


def test_on_a_real_model_eval_and_serve_complete_the_same_annotation(wrong_at_arithmetic, tmp_path):
    """The torch backend, not a script: eval's +calculator answer is serve's answer, with the exact value."""
    from seedbed.serve.chat_completions import answer
    from seedbed.serve.engine import Engine
    from seedbed.serve.protocol import Limits, ServerConfig
    from seedbed.serve.schemas import ChatCompletionRequest

    question = "What is 17 times 23?"
    heldout = write_jsonl(tmp_path / "q.jsonl", [{"question": question, "answer": "#### 391"}])
    result = evaluate(EvalRecipe(models=[f"m={wrong_at_arithmetic}"], data=[str(heldout)], shots=[0],
                                 tools=["calculator"], max_new_tokens=40, quiet=True, model_card=False))
    [plain], [tooled] = (c.answers for c in result.conditions)
    assert "<<17*23=390>>" in plain["prediction"]  # what the model itself writes: wrong
    assert "<<17*23=391>>" in tooled["prediction"] and tooled["tool_calls"][0] == {"expression": "17*23",
                                                                                   "value": "391"}
    engine = Engine("m", load(str(wrong_at_arithmetic)))
    messages = [{"role": "user", "content": question}]
    body = ChatCompletionRequest(model="m", messages=messages, temperature=0, max_tokens=40)
    served_text, request = asyncio.run(answer(ServerConfig({"m": engine}, limits=Limits(max_tokens=40)), engine,
                                              messages, body, None, calculator=True))
    assert (served_text, request.finish_reason) == (tooled["prediction"], tooled["finish_reason"])
