"""lm-evaluation-harness tasks, in process: `seedbed eval --lm-eval TASK`.

    seedbed eval --models base=gemma-3-270m --lm-eval seedbed_csqa --limit 100 --out runs/lm-eval

Each model is loaded as Seedbed loads it (`models.load_model`: the embedded default, int4 directories) and handed
to lm-eval's own Hugging Face model (`HFLM`), so the scores are lm-eval's. The shipped tasks (`assets/lm_eval/`,
`seedbed_csqa`) read a local JSONL; their YAMLs are written with the data's absolute path into
OUT/lm_eval_tasks/, which lm-eval's CLI takes as `--include_path` to run the same task against `seedbed serve`
(`--model local-completions`, README).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from seedbed.atomic import atomic_write_text
from seedbed.errors import EvalError
from seedbed.evaluate.report import Section
from seedbed.evaluate.tables import markdown_table
from seedbed.inference import resolve_engine
from seedbed.models import load_model, parse_model_spec
from seedbed.recipe import EvalRecipe

SHIPPED = Path(str(files("seedbed") / "assets" / "lm_eval"))
METRICS = ("acc", "acc_norm", "exact_match", "f1", "mcc", "word_perplexity")  # reported when a task has them


@dataclass
class HarnessScore:
    """One metric of one lm-eval task for one model (lm-eval's value and its standard error)."""

    name: str  # the model's condition name
    model: str
    task: str
    metric: str
    value: float
    stderr: float | None
    n: int


def write_shipped_tasks(out: Path) -> Path:
    """The shipped task YAMLs, each `data_files` entry made an absolute path into `assets/lm_eval/` (lm-eval reads
    it relative to the working directory), written into `out`; returns `out`."""
    for source in sorted(SHIPPED.glob("*.yaml")):
        task = yaml.safe_load(source.read_text())
        data_files = task.get("dataset_kwargs", {}).get("data_files", {})
        for split, name in data_files.items():
            data_files[split] = str(SHIPPED / name)
        atomic_write_text(out / source.name, yaml.safe_dump(task, sort_keys=False))
    return out


def run_harness(recipe: EvalRecipe) -> list[HarnessScore]:
    """lm-eval's scores of every task in `recipe.lm_eval` for every model in `recipe.models` (first
    `recipe.limit` documents of each task).

    >>> run_harness(EvalRecipe(models=["base=gemma-3-270m"], lm_eval=["seedbed_csqa"], limit=50))  # doctest: +SKIP
    [HarnessScore(name='base', model='gemma-3-270m', task='seedbed_csqa', metric='acc', value=0.3, ...), ...]
    """
    specs = [parse_model_spec(spec) for spec in recipe.models]
    if gguf := [model for _, model in specs if resolve_engine(model, recipe.engine) == "llama.cpp"]:
        raise EvalError(f"--lm-eval runs a model in torch; {gguf[0]} runs in llama.cpp: serve it (seedbed serve) "
                        "and point lm-eval's local-completions at the server (README: lm-evaluation-harness)")
    for directory in recipe.lm_eval_include:
        if not Path(directory).is_dir():
            raise EvalError(f"lm_eval_include: {directory} is not a directory of lm-eval task YAMLs")
    if recipe.out:
        return run_tasks(recipe, specs, write_shipped_tasks(Path(recipe.out) / "lm_eval_tasks"))
    with tempfile.TemporaryDirectory() as scratch:
        return run_tasks(recipe, specs, write_shipped_tasks(Path(scratch)))


def run_tasks(recipe: EvalRecipe, specs: list[tuple[str, str]], shipped: Path) -> list[HarnessScore]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    include = [str(shipped), *recipe.lm_eval_include]
    tasks = TaskManager(include_path=include, include_defaults=False)
    if any(t not in tasks.all_tasks for t in recipe.lm_eval):  # lm-eval's own tasks: indexing them takes ~25 s
        tasks = TaskManager(include_path=include)
    if unknown := [t for t in recipe.lm_eval if t not in tasks.all_tasks]:
        shipped_names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
        raise EvalError(f"lm_eval: no lm-eval task named {unknown[0]} (shipped: {shipped_names}; add directories "
                        "of task YAMLs with --lm-eval-include)")
    scores = []
    for name, model_name in specs:
        model, tokenizer = load_model(model_name)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=recipe.batch_size, max_length=recipe.max_length)
        out = simple_evaluate(model=lm, tasks=list(recipe.lm_eval), limit=recipe.limit, task_manager=tasks,
                              log_samples=False, verbosity="ERROR", random_seed=recipe.seed)
        scores += harness_scores(name, model_name, out)
    return scores


def harness_scores(name: str, model: str, out: dict) -> list[HarnessScore]:
    """The metrics of lm-eval's `simple_evaluate` result (`{"results": {task: {"acc,none": ..}}, ...}`) as rows.

    >>> out = {"results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1}},
    ...        "n-samples": {"t": {"effective": 20}}}
    >>> harness_scores("base", "m", out)
    [HarnessScore(name='base', model='m', task='t', metric='acc', value=0.5, stderr=0.1, n=20)]
    """
    rows = []
    for task, metrics in out["results"].items():
        n = out.get("n-samples", {}).get(task, {}).get("effective", 0)
        for key, value in metrics.items():
            metric, _, filter_ = key.partition(",")
            if metric in METRICS and isinstance(value, (int, float)):
                stderr = metrics.get(f"{metric}_stderr,{filter_}")
                rows.append(HarnessScore(name, model, task, metric, float(value),
                                         float(stderr) if isinstance(stderr, (int, float)) else None, n))
    return rows


def harness_cells(scores: list[HarnessScore]) -> tuple[list[str], list[list[str]]]:
    """The headers and formatted cells of the scores' table (Markdown in results.md, HTML in report.html)."""
    return (["condition", "model", "task", "metric", "value", "stderr", "n"],
            [[s.name, s.model, s.task, s.metric, f"{s.value:.1%}", "-" if s.stderr is None else f"{s.stderr:.1%}",
              str(s.n)] for s in scores])


def harness_table(scores: list[HarnessScore]) -> str:
    """The scores as a Markdown table, one row per model, task and metric.

    >>> print(harness_table([HarnessScore("base", "m", "t", "acc", 0.5, 0.1, 20)]))
    | condition | model | task | metric | value | stderr | n |
    |---|---|---|---|---|---|---|
    | base | m | t | acc | 50.0% | 10.0% | 20 |
    """
    return markdown_table(*harness_cells(scores))


def harness_section(scores: list[HarnessScore]) -> Section:
    """The scores as a section of report.html (lm-eval keeps its own per-document samples)."""
    return Section("lm-evaluation-harness", "Tasks run in process by lm-eval on its Hugging Face model "
                   "(`--lm-eval`); value and standard error are lm-eval's.", *harness_cells(scores))
