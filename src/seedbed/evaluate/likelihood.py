"""Multiple-choice evaluation by log-likelihood: which choice the model finds likeliest, as lm-eval scores it.

    seedbed eval --models base=gemma-3-270m --likelihood truthfulqa_mc1 --likelihood truthfulqa_mc2 \
        --likelihood commonsenseqa --limit 100 --out runs/knowledge
    seedbed eval --engine llama.cpp --models q4=runs/q4 --likelihood truthfulqa_mc2 --out runs/knowledge-q4

Each choice is scored by the summed log-probability of its tokens after the question's context
(`Backend.score`, batched), tokenized as lm-eval's `_encode_pair` does: context and context + " " + choice
encoded whole (with the tokenizer's own special tokens, as lm-eval's HF model), the choice being the tokens past
the context's. Metrics, as lm-eval's `multiple_choice` output type and its TruthfulQA `process_results_mc2`:
- acc: the true choice has the highest log-likelihood (first on a tie, as numpy's argmax);
- acc_norm: the same after dividing each log-likelihood by its choice's length in characters;
- truthfulqa_mc2 `acc`: the probability mass on the true choices after normalising over all choices;
each with its standard error, the sample standard deviation over questions / sqrt(n) (lm-eval's `mean_stderr`).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.errors import EvalError
from seedbed.evaluate.mc_tasks import TASKS, Item, read_truthfulqa
from seedbed.inference.scores import total

SEQUENCES_PER_CALL = 64  # about this many sequences per Backend.score call (whole contexts): the progress step


@dataclass
class TaskResult:
    """One model on one task. `acc_norm` is None for TruthfulQA MC2 (a probability mass, not a pick)."""

    task: str
    name: str
    model: str
    n: int
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    acc_norm_stderr: float | None
    seconds: float  # scoring this model on all its tasks together (they share continuations: MC1's are MC2's)
    questions: list[dict] = field(default_factory=list)  # per question (likelihood.jsonl; not in results.json)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], int]:
    """The tokens of context + continuation and where the continuation's start, as lm-eval's `_encode_pair`:
    the context's trailing spaces move to the continuation, and the whole and the context are encoded
    separately, the continuation being the whole's tokens past the context's.

    >>> from seedbed.models import load_tokenizer  # doctest: +SKIP
    >>> encode_pair(load_tokenizer("gemma-3-270m"), "Q: Why?\\nA:", " Because.")  # doctest: +SKIP
    ([2, 236911, 236787, 6265, 236881, 107, 236776, 236787, 8409, 236761], 8)
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    return whole, len(tokenizer(context)["input_ids"])


def loglikelihoods(backend, pairs: list[tuple[str, str]], progress=None) -> dict[tuple[str, str], float]:
    """log p(continuation | context) for each distinct (context, continuation) pair; `progress(done)` after each
    call to the backend. A context's continuations go to `Backend.score` together, so the torch backend runs
    that context once for all of them. A sequence longer than the model's context keeps its last tokens (lm-eval
    truncates on the left too).

    >>> loglikelihoods(backend, [("Q: Why?\\nA:", " Because."), ("Q: Why?\\nA:", " No.")])  # doctest: +SKIP
    {('Q: Why?\\nA:', ' Because.'): -9.81, ('Q: Why?\\nA:', ' No.'): -6.02}
    """
    by_context: dict[str, list[tuple[str, str]]] = {}
    for pair in dict.fromkeys(pairs):
        by_context.setdefault(pair[0], []).append(pair)
    limit = backend.max_context
    found: dict[tuple[str, str], float] = {}
    batch: list[tuple[str, str]] = []
    groups = list(by_context.values())
    for k, group in enumerate(groups):
        batch += group
        if len(batch) < SEQUENCES_PER_CALL and k < len(groups) - 1:
            continue
        encoded = []
        for context, continuation in batch:
            ids, start = encode_pair(backend.tokenizer, context, continuation)
            cut = max(0, len(ids) - limit)
            encoded.append((ids[cut:], min(max(1, start - cut), len(ids) - cut)))
        scores = backend.score([ids for ids, _ in encoded], [start for _, start in encoded])
        found.update((pair, total(s)) for pair, s in zip(batch, scores))
        batch = []
        if progress:
            progress(len(found))
    return found


def softmax(values: list[float]) -> list[float]:
    """exp(v) / sum(exp), shifted by the maximum so very negative log-likelihoods do not all underflow to 0.

    >>> [round(p, 4) for p in softmax([math.log(1), math.log(3)])]
    [0.25, 0.75]
    """
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def argmax(values: list[float]) -> int:
    """The index of the largest value, the first on a tie (as numpy's argmax)."""
    return max(range(len(values)), key=values.__getitem__)


def score_item(item: Item, lls: list[float], kind: str) -> dict:
    """One question's metrics from its choices' log-likelihoods: `kind` "single" gives acc and acc_norm,
    "mass" gives acc as the normalised probability on the true choices (TruthfulQA MC2).

    >>> item = Item("q", "Q:", ["Yes.", "No, never."], [0, 1], "f:1")
    >>> score_item(item, [-2.0, -3.0], "single")
    {'acc': 0.0, 'acc_norm': 1.0, 'prediction': 0}
    >>> round(score_item(item, [math.log(0.2), math.log(0.6)], "mass")["acc"], 4)
    0.75
    """
    if kind == "mass":
        probs = softmax(lls)
        return {"acc": sum(p for p, label in zip(probs, item.labels) if label), "prediction": argmax(lls)}
    normalised = [ll / len(choice) for ll, choice in zip(lls, item.choices)]
    return {"acc": float(argmax(lls) == item.gold), "acc_norm": float(argmax(normalised) == item.gold),
            "prediction": argmax(lls)}


def mean_stderr(values: list[float]) -> float | None:
    """Sample standard deviation / sqrt(n), lm-eval's standard error of a mean; None for fewer than 2 values.

    >>> round(mean_stderr([1.0, 0.0, 1.0, 0.0]), 4)
    0.2887
    """
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def score_tasks(backend, tasks: dict[str, list[Item]], name: str = "model", model: str = "",
                progress=None) -> list[TaskResult]:
    """Score every task's items on `backend`, each distinct continuation once, and aggregate per task."""
    pairs = [(item.context, " " + choice) for items in tasks.values() for item in items for choice in item.choices]
    started = time.perf_counter()
    found = loglikelihoods(backend, pairs, progress)
    seconds = time.perf_counter() - started
    results = []
    for task, items in tasks.items():
        kind = TASKS[task][1] if task in TASKS else "single"
        questions = []
        for item in items:
            lls = [found[(item.context, " " + choice)] for choice in item.choices]
            questions.append({"task": task, "source": item.source, "question": item.question, "choices": item.choices,
                              "labels": item.labels, "loglikelihoods": lls, **score_item(item, lls, kind)})
        accs = [q["acc"] for q in questions]
        norms = [q["acc_norm"] for q in questions] if kind == "single" else None
        results.append(TaskResult(
            task=task, name=name, model=model, n=len(items), acc=sum(accs) / len(accs), acc_stderr=mean_stderr(accs),
            acc_norm=None if norms is None else sum(norms) / len(norms),
            acc_norm_stderr=None if norms is None else mean_stderr(norms), seconds=seconds, questions=questions))
    return results


def task_items(names: list[str], limit: int | None = None) -> dict[str, list[Item]]:
    """Each named task's items, the first `limit` of each (as lm-eval's --limit)."""
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise EvalError(f"likelihood: unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    return {name: TASKS[name][0]()[:limit] for name in dict.fromkeys(names)}


def evaluate_likelihood(recipe, progress_bar) -> list[TaskResult]:
    """Every model in `recipe.models` on every task in `recipe.likelihood` (an `EvalRecipe`), each model loaded
    once and scored on all its tasks together; `progress_bar(label, total, quiet)` is the eval verb's (a context
    manager yielding `advance(done)` or None)."""
    from seedbed.inference import load
    from seedbed.models import parse_model_spec

    tasks = task_items(recipe.likelihood, recipe.limit)
    results = []
    for spec in recipe.models:
        name, model = parse_model_spec(spec)
        backend = load(model, recipe.engine, recipe.threads)
        total_pairs = len({(i.context, c) for items in tasks.values() for i in items for c in i.choices})
        with progress_bar(f"{name} likelihood", total_pairs, recipe.quiet) as advance:
            results += score_tasks(backend, tasks, name, model, advance)
    return results


def truthfulness(backend, questions: int, seed: int = 42) -> dict:
    """TruthfulQA MC1 and MC2 on a seeded subset of `questions` questions (all 817 if more): what a model card
    shows. The subset depends only on the seed and size, so a tuned model and its base answer the same ones.

    >>> truthfulness(load("gemma-3-270m"), 10)  # doctest: +SKIP
    {'n': 10, 'seed': 42, 'mc1': 0.1, 'mc1_stderr': 0.1, 'mc2': 0.2193, 'mc2_stderr': 0.0804, 'seconds': 192.2}
    """
    rows = read_truthfulqa()
    if questions < len(rows):
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), questions))]
    mc1, mc2 = score_tasks(backend, {"truthfulqa_mc1": [r.mc1() for r in rows], "truthfulqa_mc2": [r.mc2() for r in rows]})
    return {"n": mc1.n, "seed": seed, "mc1": mc1.acc, "mc1_stderr": mc1.acc_stderr, "mc2": mc2.acc,
            "mc2_stderr": mc2.acc_stderr, "seconds": round(mc1.seconds, 1)}


def markdown_table(results: list[TaskResult]) -> str:
    """The likelihood results as a Markdown table, one row per model and task.

    >>> print(markdown_table([TaskResult("truthfulqa_mc2", "base", "m", 817, 0.4123, 0.0141, None, None, 60.0)]))
    | model | task | n | acc | ± | acc_norm | ± |
    |---|---|---|---|---|---|---|
    | base | truthfulqa_mc2 | 817 | 41.2% | 1.4% | - | - |
    """
    from seedbed.evaluate.tables import markdown_table as render_table

    def pct(v):
        return "-" if v is None else f"{v:.1%}"

    return render_table(["model", "task", "n", "acc", "±", "acc_norm", "±"],
                        [[r.name, r.task, r.n, pct(r.acc), pct(r.acc_stderr), pct(r.acc_norm), pct(r.acc_norm_stderr)]
                         for r in results])


SCORING = ("Multiple choice scored by log-likelihood, as lm-evaluation-harness: acc, the true choice is the likeliest; "
           "acc_norm, the same per character of the choice; truthfulqa_mc2's acc, the normalised probability on the "
           "true answers; ± is the standard error (sample sd / sqrt(n)). Every question: likelihood.jsonl.")


def write_likelihood(results: list[TaskResult], out: Path) -> None:
    """likelihood.jsonl: every question of every model and task, its choices' log-likelihoods and whether the
    model got it right (the place to read why a task scored as it did)."""
    atomic_write_text(Path(out) / "likelihood.jsonl", "".join(
        json.dumps({"model": r.name, **q}, ensure_ascii=False) + "\n" for r in results for q in r.questions))


def summary_rows(results: list[TaskResult]) -> list[dict]:
    """The results as results.json carries them: no per-question detail."""
    return [{k: v for k, v in asdict(r).items() if k != "questions"} for r in results]
