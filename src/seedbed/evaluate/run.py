"""Compare models zero- and few-shot on the same held-out questions: exact-match accuracy and held-out loss.

    seedbed eval --models base=gemma-3-270m --models tuned=runs/demo/model --data heldout.jsonl \
        --pool train.jsonl --shots 0 --shots 3 --out runs/eval
    seedbed eval --engine llama.cpp --models q4=runs/q4 --data heldout.jsonl --shots 0

Every condition (model x shots) answers the same questions, greedily, so rows differ only by model and prompt.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.chat import Example, render_prompt
from seedbed.errors import EvalError
from seedbed.evaluate.answers import follows_format, is_correct
from seedbed.evaluate.fewshot import fewshot_messages
from seedbed.inference import load
from seedbed.inference.generate import generate
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
    accuracy: float
    format_rate: float
    loss: float | None
    perplexity: float | None
    samples: list[dict]  # the first few {question, reference, prediction, correct}


@dataclass
class EvalResult:
    conditions: list[ConditionResult]
    data: list[str]
    n_questions: int


def evaluate(recipe: EvalRecipe, conditions: list[tuple[str, str, int]] | None = None) -> EvalResult:
    """Run every (name, model, shots) condition, by default every model in `recipe.models` x every `recipe.shots`.

    Each model is loaded once and its held-out loss, computed once, is reported on each of its rows.

    >>> evaluate(EvalRecipe(models=["base=gemma-3-270m"], data=["heldout.jsonl"], pool=["train.jsonl"]))  # doctest: +SKIP
    """
    from seedbed.data.readers import read_examples

    if conditions is None:
        conditions = [(*parse_model_spec(spec), k) for spec in recipe.models for k in recipe.shots]
    if not conditions:
        raise EvalError("nothing to evaluate: give at least one model and one shots count")
    if not recipe.data:
        raise EvalError("no held-out data: give --data files with reference answers")
    heldout = read_examples(recipe.data)
    questions = [e for e in heldout.examples if e.is_chat][: recipe.limit]
    if not questions:
        raise EvalError(f"{', '.join(recipe.data)}: no question with a reference answer to evaluate on")
    pool = [e for e in read_examples(recipe.pool).examples if e.is_chat] if recipe.pool else []
    most_shots = max(k for _, _, k in conditions)
    if most_shots > 0 and not pool:
        raise EvalError("few-shot conditions (shots > 0) need a few-shot pool: give --pool files "
                        "(training data, never the held-out questions), or use --shots 0")
    if most_shots > len(pool):
        raise EvalError(f"{most_shots}-shot prompts need at least {most_shots} examples in the pool; it has {len(pool)}")

    by_condition: dict[tuple[str, str, int], ConditionResult] = {}
    for model_name in dict.fromkeys(model for _, model, _ in conditions):  # each model loaded once
        mine = [c for c in conditions if c[1] == model_name]
        by_condition.update(zip(mine, _evaluate_model(model_name, mine, questions, pool, recipe)))
    result = EvalResult([by_condition[c] for c in conditions], [f.path for f in heldout.files], len(questions))
    if recipe.out:
        _write(result, recipe)
    return result


def _evaluate_model(model_name: str, conditions: list[tuple[str, str, int]], questions: list[Example],
                    pool: list[Example], recipe: EvalRecipe) -> list[ConditionResult]:
    backend = load(model_name, recipe.engine, recipe.threads)
    tokenizer = backend.tokenizer
    held = backend.heldout_loss(questions, max_length=recipe.max_length, batch_size=recipe.batch_size)
    loss = None if math.isnan(held["loss"]) else held["loss"]
    sampling = Sampling(greedy=True, max_new_tokens=recipe.max_new_tokens)
    results = []
    for name, _, shots in conditions:
        prompts = [render_prompt(tokenizer, fewshot_messages(q, pool, shots, recipe.seed)) for q in questions]
        with _progress(f"{name} {shots}-shot", len(prompts), recipe.quiet) as advance:
            predictions = generate(backend, prompts, sampling, recipe.batch_size, progress=advance)
        references = [q.reference() for q in questions]
        correct = [is_correct(p, r) for p, r in zip(predictions, references)]
        samples = [{"question": q.prompt_messages()[-1]["content"], "reference": r, "prediction": p, "correct": c}
                   for q, r, p, c in list(zip(questions, references, predictions, correct))[:SAMPLES_KEPT]]
        results.append(ConditionResult(
            name=name, model=model_name, shots=shots, n=len(questions), accuracy=sum(correct) / len(questions),
            format_rate=sum(map(follows_format, predictions)) / len(questions),
            loss=loss, perplexity=None if loss is None else held["perplexity"], samples=samples,
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
    """The results as a Markdown table, one row per condition.

    >>> print(markdown_table(EvalResult([ConditionResult("base", "m", 0, 10, 0.3, 0.5, 1.2, 3.32, [])], ["h"], 10)))
    | condition | model | shots | n | accuracy | follows format | held-out loss | perplexity |
    |---|---|---|---|---|---|---|---|
    | base | m | 0 | 10 | 30.0% | 50.0% | 1.200 | 3.32 |
    """
    from seedbed.evaluate.tables import markdown_table as render_table

    return render_table(
        ["condition", "model", "shots", "n", "accuracy", "follows format", "held-out loss", "perplexity"],
        [[c.name, c.model, c.shots, c.n, f"{c.accuracy:.1%}", f"{c.format_rate:.1%}",
          "-" if c.loss is None else f"{c.loss:.3f}", "-" if c.perplexity is None else f"{c.perplexity:.2f}"]
         for c in result.conditions],
    )


def _write(result: EvalResult, recipe: EvalRecipe) -> None:
    out = Path(recipe.out)
    atomic_write_text(out / "results.json", json.dumps(asdict(result), indent=2) + "\n")
    summary = (f"# Evaluation\n\n{result.n_questions} held-out questions from {', '.join(result.data)}; "
               "greedy answers, exact match on the final number.\n\n")
    atomic_write_text(out / "results.md", summary + markdown_table(result) + "\n")
    save_recipe(recipe, out / "recipe.yaml", "eval")
