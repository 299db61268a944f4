"""Compare models zero- and few-shot on the same held-out questions: the task's metrics, usability, held-out loss.

    seedbed eval --models base=gemma-3-270m --models tuned=runs/demo/model --data heldout.jsonl \
        --pool train.jsonl --shots 0 --shots 3 --out runs/eval
    seedbed eval --engine llama.cpp --models q4=runs/q4 --data heldout.jsonl --shots 0
    seedbed eval --models tuned=runs/snips/model --data seedbed:data/snips_heldout.jsonl --shots 0 \
        --mapping.prompt "Turn this request into JSON: {text}" --mapping.response-json intent \
        --mapping.response-json slots
    seedbed eval --models tuned=runs/gsm8k-calculator-cpu --data seedbed:data/gsm8k_demo_heldout.jsonl --shots 0 \
        --tools calculator --out runs/eval

Every condition (model x shots) answers the same questions, greedily, so rows differ only by model and prompt.
The task (`--task`, by default chosen from the references) decides the scores (`answers.py`): gsm8k, the final
number and the `####` form; json, exact match, each field's accuracy or F1, and valid JSON. Every task also
reports how usable the answers are: the stop rate (answers that ended with the end-of-turn marker or a stop
string rather than at max_new_tokens) and the repetition rate (a line or an 8-word run written three times).
With `--tools calculator` each condition also runs as `seedbed serve` runs it with the calculator (every `<<EXPR=`
the model opens is completed exactly), as a row `NAME +calculator`. Results: results.json, results.md,
answers.jsonl and report.html in `--out`; the table also goes into each evaluated Seedbed model's card.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date

from seedbed.atomic import atomic_write_text, check_output_dir, local_inputs, mark_output_dir
from seedbed.chat import Example, render_prompt
from seedbed.errors import EvalError
from seedbed.evaluate.answers import detect_task, is_repetitive, json_object, score_answers
from seedbed.evaluate.card import write_card_section
from seedbed.evaluate.fewshot import fewshot_messages
from seedbed.evaluate.harness import HarnessScore, harness_section, harness_table, run_harness
from seedbed.evaluate.report import Answer, Example as ReportExample, Section, render_report
from seedbed.inference import load
from seedbed.inference.generate import generate_requests, generate_with_calculator
from seedbed.inference.stops import Sampling
from seedbed.models import parse_model_spec
from seedbed.recipe import EvalRecipe, save_recipe

SAMPLES_KEPT = 5  # answers shown per condition in results.json
log = logging.getLogger("seedbed.eval")


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
    tools: list[str] = field(default_factory=list)  # the tools this row answered with (its name says so too)


@dataclass
class EvalResult:
    conditions: list[ConditionResult]
    data: list[str]
    n_questions: int
    task: str = "gsm8k"  # how the answers were scored: gsm8k or json
    harness: list[HarnessScore] = field(default_factory=list)  # --lm-eval tasks' scores (evaluate/harness.py)
    model_cards: list[str] = field(default_factory=list)  # the model cards (README.md) the table was written into
    likelihood: list = field(default_factory=list)  # likelihood.TaskResult per model and --likelihood task


def evaluate(recipe: EvalRecipe, conditions: list[tuple[str, str, int]] | None = None) -> EvalResult:
    """Run every (name, model, shots) condition, by default every model in `recipe.models` x every `recipe.shots`.

    Each model is loaded once and its held-out loss, computed once, is reported on each of its rows.

    >>> evaluate(EvalRecipe(models=["base=gemma-3-270m"], data=["heldout.jsonl"], pool=["train.jsonl"]))  # doctest: +SKIP
    """
    from seedbed.data.readers import read_examples
    from seedbed.evaluate.likelihood import evaluate_likelihood

    if recipe.out:  # refused now, not after an hour of answers
        models = [model for _, model, _ in conditions] if conditions else []
        check_output_dir(recipe.out, eval_inputs(recipe, models))
    if (recipe.lm_eval or recipe.likelihood) and not recipe.data:  # lm-eval tasks / multiple choice only
        result = EvalResult([], [], 0, harness=run_harness(recipe) if recipe.lm_eval else [],
                            likelihood=evaluate_likelihood(recipe, _progress) if recipe.likelihood else [])
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

    by_condition: dict[tuple[str, str, int], list[ConditionResult]] = {}  # each: the plain row, then its tool rows
    for model_name in dict.fromkeys(model for _, model, _ in conditions):  # each model loaded once
        mine = [c for c in conditions if c[1] == model_name]
        by_condition.update(zip(mine, _evaluate_model(model_name, mine, questions, pool, recipe, task)))
    result = EvalResult([row for c in conditions for row in by_condition[c]], [f.path for f in heldout.files],
                        len(questions), task, harness=run_harness(recipe) if recipe.lm_eval else [])
    if recipe.likelihood:
        result.likelihood = evaluate_likelihood(recipe, _progress)
    if recipe.model_card:
        result.model_cards = update_model_cards(result)
    if recipe.out:
        write_results(result, recipe)
    return result


def eval_inputs(recipe: EvalRecipe, models: list[str] = ()) -> list[str]:
    """What an eval reads that is on disk (models, data, pool, prompts, votes): its --out must stay apart from them
    (`seedbed.atomic.check_output_dir`)."""
    return local_inputs([parse_model_spec(spec)[1] for spec in recipe.models], list(models), recipe.data,
                        recipe.pool, recipe.prompts, recipe.votes, [recipe.judge or ""])


def update_model_cards(result: EvalResult) -> list[str]:
    """Put the table into the card of each evaluated model that is a Seedbed model directory (`card.py`), in place
    of an earlier eval's; the cards written."""
    written = []
    for model in dict.fromkeys(c.model for c in result.conditions):
        rows = ", ".join(dict.fromkeys(c.name for c in result.conditions if c.model == model))
        section = (f"## Evaluation\n\n`seedbed eval` on {date.today().isoformat()}: {result.n_questions} held-out "
                   f"questions from {', '.join(result.data)}, greedy answers scored as a {result.task} task. This "
                   f"model's rows: {rows}.\n\n{markdown_table(result)}\n")
        try:
            card = write_card_section(model, section)
        except OSError as e:  # a read-only model directory: the results are still written, the card is not
            log.warning("could not write the eval table into %s's model card: %s", model, e)
            continue
        if card is not None:
            written.append(str(card))
    return written


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
                    pool: list[Example], recipe: EvalRecipe, task: str) -> list[list[ConditionResult]]:
    """For each condition, its plain row followed by one row per tool in `recipe.tools` (same prompts)."""
    backend = load(model_name, recipe.engine, recipe.threads)
    tokenizer = backend.tokenizer
    held = backend.heldout_loss(questions, max_length=recipe.max_length, batch_size=recipe.batch_size)
    loss = None if math.isnan(held["loss"]) else held["loss"]
    sampling = Sampling(greedy=True, max_new_tokens=recipe.max_new_tokens, json_schema=Sampling.schema_from_file(recipe.json_schema))
    references = [q.reference() for q in questions]
    results = []
    for name, _, shots in conditions:
        prompts = [render_prompt(tokenizer, fewshot_messages(q, pool, shots, recipe.seed)) for q in questions]
        rows = []
        for tool in [None, *recipe.tools]:
            label = name if tool is None else f"{name} +{tool}"
            with _progress(f"{label} {shots}-shot", len(prompts), recipe.quiet) as advance:
                # The calculator runs as `seedbed serve` runs it: the same annotation loop, stops and limits.
                generate_all = generate_requests if tool is None else generate_with_calculator
                answers = generate_all(backend, prompts, sampling, recipe.batch_size, progress=advance)
            predictions = [a.text for a in answers]
            correct, valid, field_scores = score_answers(task, predictions, references)
            if sampling.json_schema is not None:
                field_scores["schema-valid"] = sum(map(schema_checker(sampling.json_schema), predictions)) / len(predictions)
            samples = [{"question": q.prompt_messages()[-1]["content"], "reference": r, "prediction": a.text,
                        "correct": c, "finish_reason": a.finish_reason}
                       | ({} if tool is None else {"tool_calls": [asdict(call) for call in a.calls]})
                       for q, r, a, c in zip(questions, references, answers, correct)]
            n = len(questions)
            rows.append(ConditionResult(
                name=label, model=model_name, shots=shots, n=n, accuracy=sum(correct) / n,
                format_rate=sum(valid) / n, stop_rate=sum(a.finish_reason == "stop" for a in answers) / n,
                repetition_rate=sum(map(is_repetitive, predictions)) / n,
                loss=loss, perplexity=None if loss is None else held["perplexity"], samples=samples[:SAMPLES_KEPT],
                field_scores=field_scores, answers=samples, tools=[] if tool is None else [tool],
            ))
        results.append(rows)
    return results


def schema_checker(schema: dict):
    """A test of one answer: is the whole of it JSON that `schema` accepts? (jsonschema judges, not the decoder
    that was constrained by the same schema.)

    >>> check = schema_checker({"type": "object", "required": ["intent"]})
    >>> check('{"intent": "PlayMusic"}'), check('{"slots": []}'), check('{"intent": "x"} and more')
    (True, False, False)
    """
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)

    def check(answer: str) -> bool:
        try:
            return validator.is_valid(json.loads(answer))
        except ValueError:
            return False

    return check


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

    if not result.conditions:
        return harness_table(result.harness)
    return render_table(*table_cells(result)) + (f"\n\n{harness_table(result.harness)}" if result.harness else "")


def table_cells(result: EvalResult) -> tuple[list[str], list[list[str]]]:
    """The headers and formatted cells of the results table (Markdown in results.md, HTML in report.html)."""
    fields = list(dict.fromkeys(k for c in result.conditions for k in c.field_scores))
    score, form = ("exact match", "valid JSON") if result.task == "json" else ("accuracy", "follows format")
    headers = ["condition", "model", "shots", "n", score, *fields, form, "stop rate", "repetition", "held-out loss",
               "perplexity"]
    rows = [[c.name, c.model, c.shots, c.n, f"{c.accuracy:.1%}",
             *(f"{c.field_scores[f]:.1%}" if f in c.field_scores else "-" for f in fields),
             f"{c.format_rate:.1%}", f"{c.stop_rate:.1%}", f"{c.repetition_rate:.1%}",
             "-" if c.loss is None else f"{c.loss:.3f}", "-" if c.perplexity is None else f"{c.perplexity:.2f}"]
            for c in result.conditions]
    return headers, rows


def report_section(result: EvalResult) -> Section:
    """The task's results as a section of report.html: the table, then each question with every condition's
    answer (right or not, finish reason, calculator calls)."""
    headers, rows = table_cells(result)
    examples = []
    for i in range(result.n_questions):
        first = result.conditions[0].answers[i]
        examples.append(ReportExample(first["question"], first["reference"], [
            Answer(f"{c.name} ({c.shots}-shot)", c.answers[i]["prediction"], c.answers[i]["correct"],
                   _answer_details(c.answers[i])) for c in result.conditions]))
    return Section(f"Scores: {result.task}", f"Scored as a {result.task} task: {SCORING[result.task]}. Each "
                   "example's prompt is its question; k-shot conditions saw k solved examples before it.",
                   headers, [[str(cell) for cell in row] for row in rows], examples)


def _answer_details(answer: dict) -> dict[str, str]:
    details = {"finish reason": str(answer["finish_reason"])}
    if "tool_calls" in answer:  # a +calculator row: every annotation it completed, as written into the answer
        calls = [f"<<{call['expression']}={call['value']}>>" for call in answer["tool_calls"]]
        details["calculator"] = "; ".join(calls) or "not called"
    return details


SCORING = {
    "gsm8k": "exact match on the final number (the one after `####`, else the last one written); "
             "follows format: the answer wrote `#### N`",
    "json": "exact match: the JSON object the answer opens with (whatever follows it) equals the reference's, key "
            "and list order ignored; "
            "`<field> acc`: that field is right; `<field> F1`: micro F1 over that list's elements; "
            "valid JSON: the answer, as it stands, parses to an object; schema-valid (with --json-schema): "
            "the answer, as it stands, is JSON the schema accepts (checked by jsonschema)",
}


def likelihood_section(results: list) -> Section:
    """Multiple choice by likelihood as a section of report.html (every question is in likelihood.jsonl)."""
    from seedbed.evaluate import likelihood

    rows = [[r.name, r.task, str(r.n), f"{r.acc:.1%}", "-" if r.acc_stderr is None else f"{r.acc_stderr:.1%}",
             "-" if r.acc_norm is None else f"{r.acc_norm:.1%}"] for r in results]
    return Section("Multiple choice by likelihood", likelihood.SCORING, ["model", "task", "n", "acc", "±", "acc_norm"],
                   rows)


def write_results(result: EvalResult, recipe: EvalRecipe) -> None:
    """results.json (the table's numbers), results.md (the tables), answers.jsonl (every answer), likelihood.jsonl
    (every multiple-choice question), report.html (the tables and every answer, to read) and recipe.yaml into
    `recipe.out`, each file atomically. (Not the directory as a whole: `--lm-eval` writes its task files into it
    during the run, for lm-eval's CLI to reuse.)"""
    from seedbed.evaluate import likelihood

    out = mark_output_dir(recipe.out)
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
               "three times or more. Every answer: answers.jsonl, and report.html to read."
               + (" `+calculator` rows: the same prompts, answered with every GSM8K annotation (`<<EXPR=`) completed "
                  "exactly by the calculator, as `seedbed serve` completes it." if recipe.tools else "") + "\n\n")
    if not result.conditions:
        summary = "# Evaluation\n\n"
    tables = [markdown_table(result)] if result.conditions or result.harness else []
    if result.likelihood:
        likelihood.write_likelihood(result.likelihood, out)
        tables.append(f"## Multiple choice by likelihood\n\n{likelihood.SCORING}\n\n"
                      + likelihood.markdown_table(result.likelihood))
    atomic_write_text(out / "results.md", summary + "\n\n".join(tables) + "\n")
    # Other kinds of result add their own sections to this list.
    sections = ([report_section(result)] if result.conditions else []) + (
        [harness_section(result.harness)] if result.harness else []) + (
        [likelihood_section(result.likelihood)] if result.likelihood else [])
    meta = (f"{result.n_questions} held-out questions from {', '.join(result.data)}; greedy answers, at most "
            f"{recipe.max_new_tokens} new tokens." if result.conditions else "Tasks scored without generating answers.")
    atomic_write_text(out / "report.html", render_report("Seedbed evaluation", sections, meta=meta))
    save_recipe(recipe, out / "recipe.yaml", "eval")
