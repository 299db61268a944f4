"""Compare models zero- and few-shot on the same held-out questions: the task's metrics, usability, held-out loss.

    seedbed eval --models base=gemma-3-270m --models tuned=runs/demo/model --data heldout.jsonl \
        --pool train.jsonl --shots 0 --shots 3 --out runs/eval
    seedbed eval --engine llama.cpp --models q4=runs/q4 --data heldout.jsonl --shots 0
    seedbed eval --models tuned=runs/snips/model --data seedbed:data/snips_heldout.jsonl --shots 0 \
        --mapping.prompt "Turn this request into JSON: {text}" --mapping.response-json intent \
        --mapping.response-json slots

Every condition (model x shots) answers the same questions, greedily, so rows differ only by model and prompt.
The task (`--task`, by default chosen from the references) decides the scores (`answers.py`): gsm8k, the final
number and the `####` form; json, exact match, each field's accuracy or F1, and valid JSON. Every task also
reports how usable the answers are: the stop rate (answers that ended with the end-of-turn marker or a stop
string rather than at max_new_tokens) and the repetition rate (a line or an 8-word run written three times).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.chat import Example, render_prompt
from seedbed.errors import EvalError
from seedbed.evaluate.answers import detect_task, is_repetitive, json_object, score_answers
from seedbed.evaluate.fewshot import fewshot_messages
from seedbed.inference import load
from seedbed.inference.generate import generate_requests
from seedbed.inference.stops import Sampling
from seedbed.models import parse_model_spec
from seedbed.recipe import EvalRecipe, save_recipe

SAMPLES_KEPT = 5  # answers shown per condition in results.json


@dataclass
class ConditionResult:
    name: str
    model: str
    shots: int
    n: int
    accuracy: float  # gsm8k: the final number is right; json: exact match of the JSON object
    format_rate: float  # gsm8k: wrote `#### N`; json: the answer is a JSON object
    stop_rate: float  # ended with the end of turn or a stop string, not at max_new_tokens
    repetition_rate: float  # a line or an 8-word run written three times or more
    loss: float | None
    perplexity: float | None
    samples: list[dict]  # the first few {question, reference, prediction, correct, finish_reason}
    field_scores: dict[str, float] = field(default_factory=dict)  # json: {"intent acc": .., "slots F1": ..}
    answers: list[dict] = field(default_factory=list)  # every sample (answers.jsonl; not in results.json)


@dataclass
class EvalResult:
    conditions: list[ConditionResult]
    data: list[str]
    n_questions: int
    task: str = "gsm8k"  # how the answers were scored: gsm8k or json
    likelihood: list = field(default_factory=list)  # likelihood.TaskResult per model and --likelihood task


def evaluate(recipe: EvalRecipe, conditions: list[tuple[str, str, int]] | None = None) -> EvalResult:
    """Run every (name, model, shots) condition, by default every model in `recipe.models` x every `recipe.shots`.

    Each model is loaded once and its held-out loss, computed once, is reported on each of its rows.

    >>> evaluate(EvalRecipe(models=["base=gemma-3-270m"], data=["heldout.jsonl"], pool=["train.jsonl"]))  # doctest: +SKIP
    """
    from seedbed.data.readers import read_examples
    from seedbed.evaluate.likelihood import evaluate_likelihood

    if recipe.likelihood and not recipe.data:  # multiple choice only: no generated answers
        result = EvalResult([], [], 0, likelihood=evaluate_likelihood(recipe, _progress))
        if recipe.out:
            write_results(result, recipe)
        return result
    if conditions is None:
        conditions = [(*parse_model_spec(spec), k) for spec in recipe.models for k in recipe.shots]
    if not conditions:
        raise EvalError("nothing to evaluate: give at least one model and one shots count")
    if not recipe.data:
        raise EvalError("no held-out data: give --data files with reference answers, or --likelihood tasks")
    heldout = read_examples(recipe.data, recipe.mapping)
    questions = [e for e in heldout.examples if e.is_chat][: recipe.limit]
    if not questions:
        raise EvalError(f"{', '.join(recipe.data)}: no question with a reference answer to evaluate on")
    task = task_for(recipe.task, questions)
    pool = [e for e in read_examples(recipe.pool, recipe.mapping).examples if e.is_chat] if recipe.pool else []
    most_shots = max(k for _, _, k in conditions)
    if most_shots > 0 and not pool:
        raise EvalError("few-shot conditions (shots > 0) need a few-shot pool: give --pool files "
                        "(training data, never the held-out questions), or use --shots 0")
    if most_shots > len(pool):
        raise EvalError(f"{most_shots}-shot prompts need at least {most_shots} examples in the pool; it has {len(pool)}")

    by_condition: dict[tuple[str, str, int], ConditionResult] = {}
    for model_name in dict.fromkeys(model for _, model, _ in conditions):  # each model loaded once
        mine = [c for c in conditions if c[1] == model_name]
        by_condition.update(zip(mine, _evaluate_model(model_name, mine, questions, pool, recipe, task)))
    result = EvalResult([by_condition[c] for c in conditions], [f.path for f in heldout.files], len(questions), task)
    if recipe.likelihood:
        result.likelihood = evaluate_likelihood(recipe, _progress)
    if recipe.out:
        write_results(result, recipe)
    return result


def task_for(task: str, questions: list[Example]) -> str:
    """The task the answers are scored as: `task`, or for "auto" the one the references call for; a json task
    whose references are not all JSON objects fails naming the first that is not."""
    references = [q.reference() for q in questions]
    if task == "auto":
        return detect_task(references)
    if task == "json" and (bad := [q for q, r in zip(questions, references) if json_object(r) is None]):
        raise EvalError(f"{bad[0].source}: the reference answer is not a JSON object ({len(bad)} of {len(questions)} "
                        "are not), so --task json cannot score it; give JSON references or use --task gsm8k")
    return task


def _evaluate_model(model_name: str, conditions: list[tuple[str, str, int]], questions: list[Example],
                    pool: list[Example], recipe: EvalRecipe, task: str) -> list[ConditionResult]:
    backend = load(model_name, recipe.engine, recipe.threads)
    tokenizer = backend.tokenizer
    held = backend.heldout_loss(questions, max_length=recipe.max_length, batch_size=recipe.batch_size)
    loss = None if math.isnan(held["loss"]) else held["loss"]
    sampling = Sampling(greedy=True, max_new_tokens=recipe.max_new_tokens, json_schema=Sampling.schema_from_file(recipe.json_schema))
    references = [q.reference() for q in questions]
    results = []
    for name, _, shots in conditions:
        prompts = [render_prompt(tokenizer, fewshot_messages(q, pool, shots, recipe.seed)) for q in questions]
        with _progress(f"{name} {shots}-shot", len(prompts), recipe.quiet) as advance:
            answers = generate_requests(backend, prompts, sampling, recipe.batch_size, progress=advance)
        predictions = [a.text for a in answers]
        correct, valid, field_scores = score_answers(task, predictions, references)
        samples = [{"question": q.prompt_messages()[-1]["content"], "reference": r, "prediction": a.text,
                    "correct": c, "finish_reason": a.finish_reason}
                   for q, r, a, c in zip(questions, references, answers, correct)]
        n = len(questions)
        results.append(ConditionResult(
            name=name, model=model_name, shots=shots, n=n, accuracy=sum(correct) / n, format_rate=sum(valid) / n,
            stop_rate=sum(a.finish_reason == "stop" for a in answers) / n,
            repetition_rate=sum(map(is_repetitive, predictions)) / n,
            loss=loss, perplexity=None if loss is None else held["perplexity"], samples=samples[:SAMPLES_KEPT],
            field_scores=field_scores, answers=samples,
        ))
    return results


@contextmanager
def _progress(label: str, total: int, quiet: bool):
    """A progress bar over generated answers (on stderr); yields `advance(n_done)`, or None when quiet."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def markdown_table(result: EvalResult) -> str:
    """The results as a Markdown table, one row per condition: the task's columns, then usability and loss.

    >>> gsm8k = ConditionResult("base", "m", 0, 10, 0.3, 0.5, 0.9, 0.1, 1.2, 3.32, [])
    >>> print(markdown_table(EvalResult([gsm8k], ["h"], 10)))
    | condition | model | shots | n | accuracy | follows format | stop rate | repetition | held-out loss | perplexity |
    |---|---|---|---|---|---|---|---|---|---|
    | base | m | 0 | 10 | 30.0% | 50.0% | 90.0% | 10.0% | 1.200 | 3.32 |
    >>> snips = ConditionResult("tuned", "m", 0, 10, 0.6, 1.0, 1.0, 0.0, 0.4, 1.49, [],
    ...                         {"intent acc": 0.9, "slots F1": 0.75})
    >>> print(markdown_table(EvalResult([snips], ["h"], 10, task="json")))
    | condition | model | shots | n | exact match | intent acc | slots F1 | valid JSON | stop rate | repetition | held-out loss | perplexity |
    |---|---|---|---|---|---|---|---|---|---|---|---|
    | tuned | m | 0 | 10 | 60.0% | 90.0% | 75.0% | 100.0% | 100.0% | 0.0% | 0.400 | 1.49 |
    """
    from seedbed.evaluate.tables import markdown_table as render_table

    fields = list(dict.fromkeys(k for c in result.conditions for k in c.field_scores))
    score, form = ("exact match", "valid JSON") if result.task == "json" else ("accuracy", "follows format")
    return render_table(
        ["condition", "model", "shots", "n", score, *fields, form, "stop rate", "repetition", "held-out loss",
         "perplexity"],
        [[c.name, c.model, c.shots, c.n, f"{c.accuracy:.1%}",
          *(f"{c.field_scores[f]:.1%}" if f in c.field_scores else "-" for f in fields),
          f"{c.format_rate:.1%}", f"{c.stop_rate:.1%}", f"{c.repetition_rate:.1%}",
          "-" if c.loss is None else f"{c.loss:.3f}", "-" if c.perplexity is None else f"{c.perplexity:.2f}"]
         for c in result.conditions],
    )


SCORING = {
    "gsm8k": "exact match on the final number (the one after `####`, else the last one written); "
             "follows format: the answer wrote `#### N`",
    "json": "exact match: the JSON object the answer opens with (whatever follows it) equals the reference's, key "
            "and list order ignored; "
            "`<field> acc`: that field is right; `<field> F1`: micro F1 over that list's elements; "
            "valid JSON: the answer, as it stands, parses to an object",
}


def write_results(result: EvalResult, recipe: EvalRecipe) -> None:
    """results.json (the table's numbers), results.md (the table), answers.jsonl (every answer) and recipe.yaml
    into `recipe.out`."""
    from seedbed.evaluate import likelihood

    out = Path(recipe.out)
    summary = asdict(result)
    for condition in summary["conditions"]:
        condition.pop("answers")
    summary["likelihood"] = likelihood.summary_rows(result.likelihood)
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    # Every answer, one line each (as lm-eval's --log_samples): the place to read why a condition scored as it did.
    atomic_write_text(out / "answers.jsonl", "".join(
        json.dumps({"condition": c.name, "shots": c.shots, **a}, ensure_ascii=False) + "\n"
        for c in result.conditions for a in c.answers))
    summary = (f"# Evaluation\n\n{result.n_questions} held-out questions from {', '.join(result.data)}; "
               f"greedy answers, scored as a {result.task} task: {SCORING[result.task]}. "
               f"Stop rate: answers that ended with the end-of-turn marker or a stop string, not at "
               f"{recipe.max_new_tokens} new tokens; repetition: answers with a line or an 8-word run written "
               "three times or more. Every answer: answers.jsonl.\n\n")
    if not result.conditions:
        summary = "# Evaluation\n\n"
    tables = [markdown_table(result)] if result.conditions else []
    if result.likelihood:
        likelihood.write_likelihood(result.likelihood, out)
        tables.append(f"## Multiple choice by likelihood\n\n{likelihood.SCORING}\n\n"
                      + likelihood.markdown_table(result.likelihood))
    atomic_write_text(out / "results.md", summary + "\n\n".join(tables) + "\n")
    save_recipe(recipe, out / "recipe.yaml", "eval")
