"""Evaluation: answer extraction, few-shot prompts, held-out loss against a hand computation, and the full run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import qa_records, write_jsonl

import seedbed.evaluate.run as run
from seedbed.chat import Example, tokenize_example
from seedbed.evaluate import evaluate, heldout_loss, markdown_table
from seedbed.evaluate.answers import final_answer, follows_format, is_correct, last_number, normalize_number, predicted_answer
from seedbed.errors import EvalError
from seedbed.evaluate.fewshot import fewshot_messages
from seedbed.models import load_model, parse_model_spec
from seedbed.recipe import EvalRecipe, load_recipe


def qa(i: int, question: str, answer: str, system: str | None = None) -> Example:
    turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return Example(f"q{i}", f"t:{i}", ([{"role": "system", "content": system}] if system else []) + turns)


# -- answers ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, reference, correct", [
    ("5 + 7 = 12\n#### 12", "#### 12", True),
    ("#### 1,000", "so 1000 in all\n#### 1000", True),
    ("She has $1,000.", "#### 1000", True),  # no '####': the last number counts
    ("It costs 18.00 dollars", "#### 18", True),
    ("Answer: 7.", "#### 7", True),
    ("#### +3", "#### 3", True),
    ("It fell by 4, so -4.", "#### -4", True),
    ("#### -4", "#### 4", False),
    ("3 then 4 then 5", "#### 3", False),  # the last number, not the first
    ("#### 8 and later 9", "#### 8", True),  # the number after '####' wins over later ones
    ("#### 2.5", "#### 2.50", True),
    ("no number at all", "#### 3", False),
    ("42", "42", True),  # a reference without '####' that is a number
    ("The answer is 42.", "42", True),
    ("  Paris ", "Paris", True),  # a text reference: compared as stripped text
    ("Lyon", "Paris", False),
])
def test_is_correct(prediction, reference, correct):
    assert is_correct(prediction, reference) is correct


def test_answer_pieces():
    assert final_answer("a #### 3 b #### 1,234") == "1,234" and final_answer("1 2 3") is None
    assert final_answer("#### none") is None
    assert last_number("-3 and $4,500.25 then.") == "$4,500.25" and last_number("none") is None
    assert normalize_number("$4,500.250") == "4500.25"
    assert predicted_answer("#### five, says 6") == "6"
    assert follows_format("so\n#### -3") and not follows_format("#### x") and not follows_format("3")


# -- few-shot -----------------------------------------------------------------------------------------------------

POOL = [qa(i, f"What is {i} plus 1?", f"#### {i + 1}") for i in range(10)]


def test_fewshot_puts_k_solved_examples_before_the_question():
    question = qa(99, "What is 3 plus 1?", "#### 4", system="Answer with ####.")
    messages = fewshot_messages(question, POOL, k=2, seed=0)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == "Answer with ####." and messages[-1]["content"] == "What is 3 plus 1?"
    demos = [m["content"] for m in messages[1:-1:2]]
    assert all(d != "What is 3 plus 1?" for d in demos)  # never the question itself, though it is in the pool
    assert fewshot_messages(question, POOL, k=2, seed=0) == messages  # deterministic
    others = {tuple(m["content"] for m in fewshot_messages(question, POOL, 2, seed=s)) for s in range(10)}
    assert len(others) > 1  # ... yet the seed matters


def test_fewshot_never_picks_the_question_even_when_it_must_use_the_rest():
    question = POOL[0]
    for seed in range(5):
        messages = fewshot_messages(question, POOL, k=len(POOL) - 1, seed=seed)
        assert [m["content"] for m in messages].count(question.messages[0]["content"]) == 1
    with pytest.raises(ValueError, match="pool"):
        fewshot_messages(question, POOL, k=len(POOL), seed=0)


def test_zero_shot_is_the_bare_prompt():
    assert fewshot_messages(POOL[3], POOL, k=0, seed=0) == POOL[3].prompt_messages()


# -- held-out loss ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(str(tiny_model))


def test_heldout_loss_equals_a_hand_computation_on_the_answer_tokens(loaded):
    model, tokenizer = loaded
    example = qa(0, "What is two plus three?", "Two plus three is five. #### 5")
    row = tokenize_example(tokenizer, example)
    ids, mask = torch.tensor([row["input_ids"]]), torch.tensor(row["assistant_masks"])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    answer_positions = mask[1:].nonzero().flatten()  # tokens that are predicted and scored
    expected = F.cross_entropy(logits[answer_positions], ids[0, answer_positions + 1]).item()

    result = heldout_loss(model, tokenizer, [example])
    assert result["tokens"] == int(mask.sum()) and 0 < result["tokens"] < len(row["input_ids"])
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))


def test_heldout_loss_is_token_weighted_and_independent_of_batching(loaded):
    model, tokenizer = loaded
    examples = [qa(0, "Hi", "Hello."), qa(1, "What is two plus three?", "Two plus three is five, as everyone knows. #### 5"),
                Example("t", "t:3", text="The sky is blue.")]
    singles = [heldout_loss(model, tokenizer, [e]) for e in examples]
    together = heldout_loss(model, tokenizer, examples, batch_size=2)  # right padding in a mixed batch
    assert together["tokens"] == sum(s["tokens"] for s in singles)
    weighted = sum(s["loss"] * s["tokens"] for s in singles) / together["tokens"]
    assert together["loss"] == pytest.approx(weighted, rel=1e-4) and math.isfinite(together["loss"])


# -- the whole evaluation -----------------------------------------------------------------------------------------

def test_parse_model_spec():
    assert parse_model_spec("tuned=runs/x/model") == ("tuned", "runs/x/model")
    assert parse_model_spec("runs/x/model/") == ("model", "runs/x/model/")
    assert parse_model_spec("google/gemma-3-270m") == ("gemma-3-270m", "google/gemma-3-270m")
    assert parse_model_spec("runs/lr=1e-4/model") == ("model", "runs/lr=1e-4/model")


@pytest.fixture
def eval_recipe(tiny_model, tmp_path):
    records = qa_records(30)
    heldout = write_jsonl(tmp_path / "heldout.jsonl", records[:8])
    pool = write_jsonl(tmp_path / "pool.jsonl", records[8:])
    return EvalRecipe(models=[f"a={tiny_model}", f"b={tiny_model}"], data=[str(heldout)], pool=[str(pool)],
                      shots=[0, 2], limit=6, max_new_tokens=8, batch_size=4, out=str(tmp_path / "eval"), quiet=True)


def test_evaluate_runs_every_condition_on_the_same_questions_and_writes_results(eval_recipe, tmp_path):
    result = evaluate(eval_recipe)
    rows = [(c.name, c.shots, c.n) for c in result.conditions]
    assert rows == [("a", 0, 6), ("a", 2, 6), ("b", 0, 6), ("b", 2, 6)] and result.n_questions == 6
    assert len({c.loss for c in result.conditions}) == 1 and math.isfinite(result.conditions[0].loss)
    assert all(0 <= c.accuracy < 1 and 0 <= c.format_rate <= 1 for c in result.conditions)  # an untrained model
    first = result.conditions[0].samples[0]
    assert first["question"] == qa_records(1)[0]["question"] and first["reference"] == qa_records(1)[0]["answer"]

    out = tmp_path / "eval"
    saved = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in saved["conditions"]] == ["a", "a", "b", "b"]
    table = (out / "results.md").read_text()
    assert markdown_table(result) in table and table.count("\n| a |") + table.count("\n| b |") == 4
    assert load_recipe(out / "recipe.yaml").eval == eval_recipe


def test_a_model_that_gives_the_reference_scores_full_accuracy(eval_recipe, monkeypatch):
    answers = {r["question"]: r["answer"] for r in qa_records(30)}

    def echo_reference(backend, prompts, sampling, batch_size=8, progress=None):
        # The question asked is the last user turn of each prompt; earlier ones are few-shot demonstrations.
        return [answers[prompt.rsplit("<|user|>\n", 1)[1].split("<|end|>")[0]] for prompt in prompts]

    monkeypatch.setattr(run, "generate", echo_reference)
    result = evaluate(eval_recipe.model_copy(update={"out": None}), conditions=[("oracle", eval_recipe.models[0].split("=")[1], 2)])
    assert [(c.name, c.accuracy, c.format_rate) for c in result.conditions] == [("oracle", 1.0, 1.0)]


def test_few_shot_without_a_pool_says_so(eval_recipe):
    with pytest.raises(EvalError, match="pool"):
        evaluate(eval_recipe.model_copy(update={"pool": []}))
