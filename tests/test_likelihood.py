"""Multiple choice by log-likelihood (`seedbed eval --likelihood`): the numbers are the model's own log-softmax
summed over each choice's tokens, the metrics are lm-eval's arithmetic on them, the readers name bad lines, both
engines agree, and a trained model's card carries TruthfulQA beside its base's."""

from __future__ import annotations

import json
import math
import typing

import pytest
import torch
from conftest import qa_records, write_jsonl

from seedbed.errors import DataError, EvalError, RecipeError
from seedbed.evaluate import evaluate
from seedbed.evaluate.likelihood import encode_pair, loglikelihoods, mean_stderr, score_tasks, task_items
from seedbed.evaluate.mc_tasks import QA_PROMPT, TASKS, Item, read_commonsenseqa, read_truthfulqa
from seedbed.inference.hf import TorchBackend
from seedbed.models import load_model
from seedbed.recipe import EvalRecipe, LikelihoodTask, validate

HEADER = "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"


@pytest.fixture(scope="module")
def backend(tiny_model):
    return TorchBackend(*load_model(str(tiny_model), device="cpu"))


def by_hand(backend, context: str, choice: str) -> float:
    """log p(" " + choice | context) from one forward pass of the whole text: the sum, over the choice's tokens,
    of each token's log-softmax at the position before it."""
    tok = backend.tokenizer
    whole = tok(context + " " + choice)["input_ids"]
    n_context = len(tok(context)["input_ids"])
    with torch.no_grad():
        logprobs = torch.log_softmax(backend.model(torch.tensor([whole])).logits[0].float(), -1)  # (seq, vocab)
    return sum(float(logprobs[t - 1, whole[t]]) for t in range(n_context, len(whole)))


def test_a_two_choice_item_is_scored_from_the_log_softmax_by_hand(backend):
    item = Item("What is 2 plus 3?", "Q: What is 2 plus 3?\nA:", ["5.", "Seven, or thereabouts."], [1, 0], "t:1")
    expected = [by_hand(backend, item.context, c) for c in item.choices]
    assert all(e < 0 for e in expected)

    [mc1] = score_tasks(backend, {"truthfulqa_mc1": [item]})
    [mc2] = score_tasks(backend, {"truthfulqa_mc2": [item]})
    lls = mc1.questions[0]["loglikelihoods"]
    assert lls == pytest.approx(expected, abs=1e-4)
    # acc: the true choice (0) is the likeliest; acc_norm: per character of the choice (2 and 22 characters)
    assert mc1.acc == float(expected[0] > expected[1])
    assert mc1.acc_norm == float(expected[0] / 2 > expected[1] / 22)
    # MC2: the probability mass on the true choice after normalising over both
    p0, p1 = math.exp(expected[0]), math.exp(expected[1])
    assert mc2.acc == pytest.approx(p0 / (p0 + p1), rel=1e-4)
    assert mc2.acc_norm is None and mc1.acc_stderr is None  # one question: no standard error


def test_metrics_aggregate_as_lm_eval_does(backend):
    items = [Item(f"q{k}", f"Q: What is {k} plus 1?\nA:", [f"{k + 1}.", "I have no comment."], [1, 0], f"t:{k}")
             for k in range(4)]
    [result] = score_tasks(backend, {"truthfulqa_mc1": items})
    accs = [q["acc"] for q in result.questions]
    assert result.acc == sum(accs) / 4
    mean = sum(accs) / 4
    assert result.acc_stderr == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in accs) / 3) / 2)
    assert mean_stderr([1.0, 1.0]) == 0.0 and mean_stderr([0.5]) is None
    for q in result.questions:  # each pick is the argmax of the log-likelihoods it records
        assert q["prediction"] == max(range(2), key=q["loglikelihoods"].__getitem__)
        assert q["acc"] == float(q["prediction"] == 0)


def test_continuations_are_tokenized_as_lm_eval_encodes_pairs(backend):
    tok = backend.tokenizer
    ids, start = encode_pair(tok, "Q: Why?\nA: ", "Because.")  # the trailing space moves to the continuation
    assert ids == tok("Q: Why?\nA: Because.")["input_ids"] and start == len(tok("Q: Why?\nA:")["input_ids"])
    pairs = [("Q: Why?\nA:", " Because."), ("Q: Why?\nA:", " Because."), ("Q: How?\nA:", " So.")]
    found = loglikelihoods(backend, pairs)
    assert len(found) == 2  # each distinct pair scored once
    assert found[pairs[0]] == pytest.approx(by_hand(backend, "Q: Why?\nA:", "Because."), abs=1e-4)


def test_truthfulqa_targets_follow_the_documented_derivation():
    rows = read_truthfulqa()
    assert len(rows) == 817
    first = rows[0]
    mc1, mc2 = first.mc1(), first.mc2()
    assert mc1.choices[0] == "The watermelon seeds pass through your digestive system."
    assert mc1.labels == [1] + [0] * 7 and mc1.choices[1:] == mc2.choices[5:]
    assert mc2.choices[:5][0] == "Nothing happens." and mc2.labels == [1] * 5 + [0] * 7
    assert all(c.endswith(".") for c in mc2.choices)
    assert mc1.context == QA_PROMPT + "\n\nQ: What happens to you if you eat watermelon seeds?\nA:"
    assert QA_PROMPT.startswith("Q: What is human life expectancy") and QA_PROMPT.endswith("Barcelona, Spain.")


def test_commonsenseqa_is_prompted_with_lettered_options():
    items = read_commonsenseqa()
    assert len(items) == 1221
    first = items[0]
    assert first.choices == ["A", "B", "C", "D", "E"] and first.gold == 0
    assert first.context.startswith("Question: A revolving door is convenient")
    assert first.context.endswith("\nA. bank\nB. library\nC. department store\nD. mall\nE. new york\nAnswer:")


def test_bad_truthfulqa_rows_are_named_by_line(tmp_path):
    good = 'A,B,Why?,Because,Because; So,No reason,src\n'
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + good + 'A,B,How?,Thus,Thus,,src\n')
    with pytest.raises(DataError, match=r"bad\.csv:3: Incorrect Answers is empty"):
        read_truthfulqa(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("Question,Best Answer\nWhy?,Because\n")
    with pytest.raises(DataError, match=r"missing\.csv:1: missing column\(s\) Correct Answers, Incorrect Answers"):
        read_truthfulqa(missing)
    ok = tmp_path / "ok.csv"
    ok.write_text(HEADER + good)
    [row] = read_truthfulqa(ok)
    assert row.mc2().choices == ["Because.", "So.", "No reason."]


def test_bad_commonsenseqa_lines_are_named(tmp_path):
    record = {"answerKey": "B", "question": {"stem": "Where?", "choices": [
        {"label": letter, "text": f"place {letter}"} for letter in "ABCDE"]}}
    path = tmp_path / "csqa.jsonl"
    path.write_text(json.dumps(record) + "\n{not json\n")
    with pytest.raises(DataError, match=r"csqa\.jsonl:2: not a CommonsenseQA record"):
        read_commonsenseqa(path)
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "answerKey": "F"}) + "\n")
    with pytest.raises(DataError, match=r"csqa\.jsonl:2: answerKey 'F'"):
        read_commonsenseqa(path)
    path.write_text(json.dumps({**record, "question": {"stem": "x", "choices": record["question"]["choices"][:4]}}))
    with pytest.raises(DataError, match=r"csqa\.jsonl:1: question.choices must be labelled A-E"):
        read_commonsenseqa(path)


def test_task_names_are_one_list_and_checked():
    assert set(typing.get_args(LikelihoodTask)) == set(TASKS)
    with pytest.raises(RecipeError, match="likelihood"):
        validate(EvalRecipe, {"likelihood": ["truthfulqa_mc3"]}, "eval")
    with pytest.raises(EvalError, match="unknown task"):
        task_items(["mmlu"])
    assert [len(v) for v in task_items(["commonsenseqa", "truthfulqa_mc2"], limit=3).values()] == [3, 3]


def test_eval_writes_a_likelihood_table_without_data(tiny_model, tmp_path):
    out = tmp_path / "eval"
    recipe = EvalRecipe(models=[f"tiny={tiny_model}"], likelihood=["truthfulqa_mc1", "truthfulqa_mc2", "commonsenseqa"],
                        limit=3, out=str(out), quiet=True)
    result = evaluate(recipe)
    assert result.conditions == [] and [r.task for r in result.likelihood] == list(recipe.likelihood)
    summary = json.loads((out / "results.json").read_text())
    assert [(r["task"], r["n"]) for r in summary["likelihood"]] == [(t, 3) for t in recipe.likelihood]
    assert "questions" not in summary["likelihood"][0]
    lines = [json.loads(line) for line in (out / "likelihood.jsonl").read_text().splitlines()]
    assert len(lines) == 9 and {"question", "choices", "loglikelihoods", "acc"} <= set(lines[0])
    assert "## Multiple choice by likelihood" in (out / "results.md").read_text()


def test_eval_runs_likelihood_beside_generated_answers(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "heldout.jsonl", qa_records(2))
    out = tmp_path / "both"
    result = evaluate(EvalRecipe(models=[f"tiny={tiny_model}"], data=[str(data)], shots=[0], max_new_tokens=4,
                                 likelihood=["commonsenseqa"], limit=2, out=str(out), quiet=True))
    assert len(result.conditions) == 1 and result.likelihood[0].n == 2
    text = (out / "results.md").read_text()
    assert "| condition |" in text and "| model | task |" in text


def test_both_engines_give_the_same_likelihoods_at_f32(backend, tiny_model, tmp_path):
    pytest.importorskip("llama_cpp")
    from seedbed.inference.llamacpp import LlamaCppBackend
    from seedbed.quantize.gguf_export import write_gguf_model

    llama = LlamaCppBackend(str(write_gguf_model(tiny_model, tmp_path / "f32", "f32").parent), n_threads=2)
    tasks = {"truthfulqa_mc2": [r.mc2() for r in read_truthfulqa()[:2]], "commonsenseqa": read_commonsenseqa()[:2]}
    ours, reference = score_tasks(llama, tasks), score_tasks(backend, tasks)
    for a, b in zip(ours, reference):
        for qa, qb in zip(a.questions, b.questions):
            assert qa["loglikelihoods"] == pytest.approx(qb["loglikelihoods"], abs=2e-3)
        assert a.acc == pytest.approx(b.acc, abs=1e-3)


def test_a_finetuned_models_card_shows_truthfulness_beside_its_base(tiny_model, tmp_path, monkeypatch):
    from seedbed.recipe import FinetuneRecipe
    from seedbed.train import truthfulness
    from seedbed.train.finetune import finetune

    data = write_jsonl(tmp_path / "train.jsonl", qa_records(16))
    recipe = FinetuneRecipe(base=str(tiny_model), data=[str(data)], out=str(tmp_path / "m"), max_steps=2,
                            batch_size=4, lr=5e-3, warmup=0, val_fraction=0.25, quiet=True, truthfulness_questions=2)
    metrics = finetune(recipe).metrics
    figures = metrics["truthfulness"]
    assert figures["model"]["n"] == figures["base"]["n"] == 2 and figures["base_model"] == str(tiny_model)
    for fig in (figures["model"], figures["base"]):
        assert 0 <= fig["mc1"] <= 1 and 0 < fig["mc2"] < 1
    assert figures["model"]["mc2"] != figures["base"]["mc2"]  # the trained weights answer differently
    card = (tmp_path / "m" / "README.md").read_text()
    assert "## Truthfulness (TruthfulQA, by likelihood)" in card and f"base `{tiny_model}`" in card
    assert "2 of TruthfulQA's 817 questions (seeded subset, seed 42)" in card and "±" in card
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["truthfulness"] == figures

    # The base's figure is computed once per base: the second time it comes from the cache, unchanged.
    again = truthfulness.base_truthfulness(str(tiny_model), 2, truthfulness.SUBSET_SEED)
    assert again["cached"] and again["mc2"] == figures["base"]["mc2"]
    assert figures["base"]["cached"] is False

    off = finetune(recipe.model_copy(update={"out": str(tmp_path / "off"), "truthfulness_questions": 0})).metrics
    assert off["truthfulness"] is None
    assert "Not measured" in (tmp_path / "off" / "README.md").read_text()


def test_the_eval_verb_takes_likelihood_flags(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from seedbed.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["eval", "--models", f"tiny={tiny_model}", "--likelihood", "commonsenseqa",
                                 "--likelihood", "truthfulqa_mc2", "--limit", "2", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| tiny | commonsenseqa | 2 |" in result.output and "| tiny | truthfulqa_mc2 | 2 |" in result.output
    assert (out / "likelihood.jsonl").is_file()
    bad = runner.invoke(app, ["eval", "--models", f"tiny={tiny_model}", "--likelihood", "mmlu"])
    assert bad.exit_code == 2 and "likelihood" in bad.output and "Traceback" not in bad.output


def test_the_docstring_examples_hold():
    import doctest

    from seedbed.evaluate import likelihood, mc_tasks
    from seedbed.train import truthfulness

    for module in (likelihood, mc_tasks, truthfulness):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_loglikelihoods_equal_lm_evals_own(backend, tiny_model):
    """The reference: lm-evaluation-harness's HF model scores the same (context, " " + choice) requests."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    items = [r.mc2() for r in read_truthfulqa()[:2]] + read_commonsenseqa()[:2]
    lm = HFLM(pretrained=str(tiny_model), device="cpu", batch_size=4, dtype="float32")
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=(item.context, " " + choice), idx=k)
                for item in items for k, choice in enumerate(item.choices)]
    theirs = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    results = score_tasks(backend, {"truthfulqa_mc2": items[:2], "commonsenseqa": items[2:]})
    ours = [ll for r in results for q in r.questions for ll in q["loglikelihoods"]]
    assert ours == pytest.approx(theirs, abs=1e-3)
