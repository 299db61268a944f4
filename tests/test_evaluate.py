"""Evaluation: answer extraction, JSON task scores and usability on planted answers, few-shot prompts, held-out loss
against a hand computation, and the full run (GSM8K and a SNIPS-shaped JSON task)."""

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
from seedbed.evaluate.answers import (
    detect_task,
    final_answer,
    follows_format,
    is_correct,
    is_repetitive,
    json_field_scores,
    json_matches,
    json_object,
    last_number,
    normalize_number,
    predicted_answer,
)
from seedbed.errors import EvalError
from seedbed.evaluate.fewshot import fewshot_messages
from seedbed.inference.request import Request
from seedbed.models import load_model, parse_model_spec
from seedbed.recipe import EvalRecipe, FieldMapping, load_recipe


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


# -- JSON tasks and usability, on planted answers -----------------------------------------------------------------

# Real records, copied from sonos/nlu-benchmark (SNIPS, CC0-1.0), flattened to {id, text, intent, slots}.
SNIPS = [
    {"id": "train-PlayMusic-1277", "text": "Play the top caleigh peters.", "intent": "PlayMusic",
     "slots": [{"name": "sort", "value": "top"}, {"name": "artist", "value": "caleigh peters"}]},
    {"id": "train-GetWeather-790", "text": "What's the weather in Andorra", "intent": "GetWeather",
     "slots": [{"name": "country", "value": "Andorra"}]},
    {"id": "train-BookRestaurant-1186", "text": "I need a table for five in Viroqua", "intent": "BookRestaurant",
     "slots": [{"name": "party_size_number", "value": "five"}, {"name": "city", "value": "Viroqua"}]},
    {"id": "train-SearchCreativeWork-384", "text": "show creativity of Home Brew", "intent": "SearchCreativeWork",
     "slots": [{"name": "object_name", "value": "Home Brew"}]},
]
SNIPS_MAPPING = FieldMapping(prompt="Turn this request into JSON: {text}", response_json=["intent", "slots"])


def reference(record: dict) -> str:
    return json.dumps({"intent": record["intent"], "slots": record["slots"]})


# What a model might answer to each SNIPS question above, and how it stopped.
PLANTED = {
    # exact, though keys and slots come in another order
    SNIPS[0]["text"]: ('{"slots": [{"value": "caleigh peters", "name": "artist"}, {"name": "sort", "value": "top"}], '
                       '"intent": "PlayMusic"}', "stop"),
    # right in JSON but fenced: not valid as it stands, yet its content is read (the lenient reading)
    SNIPS[1]["text"]: ('```json\n{"intent": "GetWeather", "slots": [{"name": "country", "value": "Andorra"}]}\n```',
                       "length"),
    # right intent, one of two slots right and one invented
    SNIPS[2]["text"]: ('{"intent": "BookRestaurant", "slots": [{"name": "party_size_number", "value": "five"}, '
                       '{"name": "city", "value": "Vienna"}]}', "stop"),
    # a loop until max_new_tokens
    SNIPS[3]["text"]: ("Search for Home Brew.\nSearch for Home Brew.\nSearch for Home Brew.\nSearch", "length"),
}


def test_json_exact_match_ignores_key_and_slot_order_but_not_values():
    ref = reference(SNIPS[0])
    assert json_matches(PLANTED[SNIPS[0]["text"]][0], ref)
    assert json_matches(" " + ref + "\n", ref)  # whitespace around is fine
    assert not json_matches(ref.replace("top", "Top"), ref)
    # the content is read from the object the answer opens with; whether the answer is usable as it stands is
    # the valid-JSON rate's business (test below)
    assert json_matches(f"```json\n{ref}\n```", ref) and json_matches(ref + " Done.\nDone.", ref)
    assert not json_matches("Here it is: " + ref, ref)
    assert not json_matches(json.dumps({"intent": "PlayMusic", "slots": SNIPS[0]["slots"][:1]}), ref)
    assert json_matches('{"n": 2.0, "tags": ["b", "a", "a"]}', '{"tags": ["a", "b", "a"], "n": 2}')
    assert not json_matches('{"tags": ["a", "b"]}', '{"tags": ["a", "b", "b"]}')  # a list is a multiset
    assert json_object("[1, 2]") is None and json_object("null") is None and json_object("{") is None


def test_field_accuracy_and_slot_f1_by_hand():
    references = [reference(r) for r in SNIPS]
    predictions = [PLANTED[r["text"]][0] for r in SNIPS]
    scores = json_field_scores(predictions, references)
    # intent: right in answers 1, 2 (fenced, read leniently) and 3 of 4 (answer 4 is not JSON).
    # slots, (name, value) pairs: found 2 + 1 + 1 + 0 = 4; invented 1 (city=Vienna); missed 0 + 0 + 1 + 1 = 2.
    assert scores == {"intent acc": 0.75, "slots F1": pytest.approx(2 * 4 / (2 * 4 + 1 + 2))}
    assert list(scores) == ["intent acc", "slots F1"]
    assert json_field_scores(references, references) == {"intent acc": 1.0, "slots F1": 1.0}
    # a field holding objects only counts in the exact match; nothing to find and nothing invented is F1 1
    assert json_field_scores(['{"a": {"b": 1}, "xs": []}'], ['{"a": {"b": 2}, "xs": []}']) == {"xs F1": 1.0}


def test_repetition_is_a_line_or_an_8_word_run_written_three_times():
    assert is_repetitive(PLANTED[SNIPS[3]["text"]][0])
    assert is_repetitive("so we add them up and get the sum " * 3)  # one line, an 8-word run thrice
    assert not is_repetitive("so we add them up and get the sum " * 2)
    assert not is_repetitive("Step one.\nStep one.\nStep two.")
    pretty = json.dumps({"intent": "X", "slots": [{"name": f"s{i}", "value": "v"} for i in range(4)]}, indent=2)
    assert not is_repetitive(pretty)  # its '{' and '},' lines are not repetition
    assert not is_repetitive(qa_records(1)[0]["answer"]) and not is_repetitive("")


def test_the_task_is_chosen_from_the_references():
    assert detect_task([reference(r) for r in SNIPS]) == "json"
    assert detect_task([r["answer"] for r in qa_records(3)]) == "gsm8k"
    assert detect_task(["Paris", reference(SNIPS[0])]) == "gsm8k"


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


def answering(answers: dict[str, tuple[str, str]]):
    """A stand-in for `generate_requests` whose answers (text, finish reason) are looked up by the question."""

    def generate_requests(backend, prompts, sampling, batch_size=8, progress=None):
        # The question asked is the last user turn of each prompt; earlier ones are few-shot demonstrations.
        asked = [prompt.rsplit("<|user|>\n", 1)[1].split("<|end|>")[0] for prompt in prompts]
        return [Request([], sampling.max_new_tokens, text=answers[q][0], finish_reason=answers[q][1]) for q in asked]

    return generate_requests


def test_a_model_that_gives_the_reference_scores_full_accuracy(eval_recipe, monkeypatch):
    answers = {r["question"]: (r["answer"], "stop") for r in qa_records(30)}
    monkeypatch.setattr(run, "generate_requests", answering(answers))
    result = evaluate(eval_recipe.model_copy(update={"out": None}), conditions=[("oracle", eval_recipe.models[0].split("=")[1], 2)])
    assert result.task == "gsm8k"
    assert [(c.name, c.accuracy, c.format_rate, c.stop_rate, c.repetition_rate, c.field_scores)
            for c in result.conditions] == [("oracle", 1.0, 1.0, 1.0, 0.0, {})]


@pytest.fixture
def snips_recipe(tiny_model, tmp_path):
    heldout = write_jsonl(tmp_path / "snips.jsonl", SNIPS)
    return EvalRecipe(models=[f"t={tiny_model}"], data=[str(heldout)], mapping=SNIPS_MAPPING, shots=[0],
                      max_new_tokens=8, batch_size=4, out=str(tmp_path / "eval"), quiet=True)


def test_planted_json_answers_give_the_hand_computed_row(snips_recipe, monkeypatch, tmp_path):
    monkeypatch.setattr(run, "generate_requests",
                        answering({f"Turn this request into JSON: {text}": a for text, a in PLANTED.items()}))
    result = evaluate(snips_recipe)
    assert result.task == "json"
    [row] = result.conditions
    # the fenced answer is right in content (exact, intent, slots) but not valid JSON as it stands
    assert (row.accuracy, row.format_rate, row.stop_rate, row.repetition_rate) == (0.5, 0.5, 0.5, 0.25)
    assert row.field_scores == {"intent acc": 0.75, "slots F1": pytest.approx(8 / 11)}
    assert [(s["correct"], s["finish_reason"]) for s in row.samples] == [
        (True, "stop"), (True, "length"), (False, "stop"), (False, "length")]
    table = markdown_table(result)
    assert table.splitlines()[0] == ("| condition | model | shots | n | exact match | intent acc | slots F1 | valid JSON "
                                     "| stop rate | repetition | held-out loss | perplexity |")
    assert "| t | " in table and "| 50.0% | 75.0% | 72.7% | 50.0% | 50.0% | 25.0% |" in table
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["task"] == "json" and saved["conditions"][0]["field_scores"]["intent acc"] == 0.75
    every = [json.loads(line) for line in (tmp_path / "eval" / "answers.jsonl").read_text().splitlines()]
    assert [(a["condition"], a["prediction"], a["finish_reason"]) for a in every] == [
        ("t", PLANTED[r["text"]][0], PLANTED[r["text"]][1]) for r in SNIPS]
    assert saved["conditions"][0]["stop_rate"] == 0.5 and saved["conditions"][0]["repetition_rate"] == 0.25
    assert "json task" in (tmp_path / "eval" / "results.md").read_text()


def test_task_json_on_references_that_are_not_json_names_the_line(eval_recipe):
    with pytest.raises(EvalError, match=r"heldout\.jsonl:1: the reference answer is not a JSON object"):
        evaluate(eval_recipe.model_copy(update={"task": "json"}))


def test_seedbed_eval_on_a_json_task_with_mapping_flags(tiny_model, tmp_path):
    """End to end on the tiny model: SNIPS-shaped records read through dotted --mapping flags, scored as JSON."""
    from typer.testing import CliRunner

    from seedbed.cli import app

    heldout = write_jsonl(tmp_path / "snips.jsonl", SNIPS)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, [
        "eval", "--models", f"t={tiny_model}", "--data", str(heldout), "--shots", "0", "--max-new-tokens", "6",
        "--mapping.prompt", "Turn this request into JSON: {text}",
        "--mapping.response-json", "intent", "--mapping.response-json", "slots", "--out", str(out), "--quiet"],
        env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "| exact match | intent acc | slots F1 | valid JSON | stop rate | repetition |" in result.output
    saved = json.loads((out / "results.json").read_text())
    [row] = saved["conditions"]
    assert saved["task"] == "json" and row["n"] == 4 and set(row["field_scores"]) == {"intent acc", "slots F1"}
    assert all(0 <= row[k] <= 1 for k in ("accuracy", "format_rate", "stop_rate", "repetition_rate"))
    assert row["samples"][0]["question"] == "Turn this request into JSON: " + SNIPS[0]["text"]
    assert row["samples"][0]["reference"] == reference(SNIPS[0])
    assert all(s["finish_reason"] in ("stop", "length") for s in row["samples"])
    assert load_recipe(out / "recipe.yaml").eval.mapping == SNIPS_MAPPING


def test_few_shot_without_a_pool_says_so(eval_recipe):
    with pytest.raises(EvalError, match="pool"):
        evaluate(eval_recipe.model_copy(update={"pool": []}))
