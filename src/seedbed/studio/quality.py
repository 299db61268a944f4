"""What the registered models measured, read back from the files Seedbed's runs wrote, and their size / quality
Pareto front. No figure is computed here: each comes from a file, and one no file holds stays "not measured".

- `metrics.json` beside a trained model: its last validation loss, on that run's own validation split;
- an eval run's `results.json` (`seedbed eval`): held-out loss and the task's score (accuracy or exact match, and
  each field's score) per model, named with the data they were measured on, since only figures on the same
  questions compare;
- a compare run's `compare.json` (`seedbed compare`): decode tokens/s, the only speed Seedbed measures for
  inference, plus its held-out loss and accuracy on its own data.

A model path in an eval or compare run is resolved against the data directory (the studio's jobs run there) or
taken as absolute. When two runs measured the same figure, the newest file wins.

    measured = gather(data_dir, find_models(data_dir))      # {"runs/ft": Measured(metrics={...}, speed=41.0)}
    front = pareto_front({"a": (10.0, 1.2), "b": (20.0, 1.5)}, lower_is_better=True)   # ["a"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seedbed.studio.registry import SEARCH_DEPTH, YAML_LOADER, ModelEntry

VALIDATION = "validation loss (each run's own split)"


@dataclass
class Measured:
    metrics: dict[str, float] = field(default_factory=dict)  # figure name -> value
    speed: float | None = None  # decode tokens/s from the newest compare run, None when never measured
    speed_engine: str = ""


def lower_is_better(metric: str) -> bool:
    """Losses and perplexities fall as a model gets better; every score Seedbed writes (accuracy, exact match, a
    field's accuracy or F1, stop rate...) rises."""
    return "loss" in metric or "perplexity" in metric


def gather(data_dir: Path, entries: list[ModelEntry]) -> dict[str, Measured]:
    """Every registered model's figures, by its path relative to `data_dir` (models with none have empty ones)."""
    by_dir = {(data_dir / e.path).resolve(): e.path for e in entries}
    measured = {e.path: Measured() for e in entries}
    for e in entries:
        if e.val_loss is not None:
            measured[e.path].metrics[VALIDATION] = e.val_loss
    for results in newest_first(data_dir, "results.json"):
        for model, figures in eval_figures(results).items():
            path = by_dir.get(resolve(data_dir, model))
            if path is not None:
                for name, value in figures.items():
                    measured[path].metrics.setdefault(name, value)
    for compared in newest_first(data_dir, "compare.json"):
        for model, row in compare_rows(compared).items():
            path = by_dir.get(resolve(data_dir, model))
            if path is None:
                continue
            if measured[path].speed is None and row.get("decode_tok_s"):
                measured[path].speed, measured[path].speed_engine = row["decode_tok_s"], row.get("engine", "")
            on = data_names(compared.parent)
            for key, name in (("loss", "held-out loss"), ("accuracy", "accuracy")):
                if row.get(key) is not None:
                    measured[path].metrics.setdefault(f"{name} on {on} (compare)", row[key])
    return measured


def newest_first(data_dir: Path, name: str) -> list[Path]:
    found = [p for depth in range(1, SEARCH_DEPTH + 1) for p in data_dir.glob("/".join(["*"] * depth) + "/" + name)
             if "jobs" not in p.relative_to(data_dir).parts[:1]]
    return sorted(found, key=lambda p: -p.stat().st_mtime_ns)


def resolve(data_dir: Path, model: str) -> Path:
    """The model directory a run named: a GGUF file's is the directory holding it (the registry's entry)."""
    path = Path(model).expanduser()
    path = (path if path.is_absolute() else data_dir / path).resolve()
    return path.parent if path.suffix == ".gguf" else path


def eval_figures(results_file: Path) -> dict[str, dict[str, float]]:
    """{model: {figure: value}} from an eval's results.json: the rows answered without tools, the fewest shots
    for each model (0-shot when it ran), each figure named with its data."""
    try:
        results = json.loads(results_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    conditions = [c for c in results.get("conditions", []) if isinstance(c, dict) and not c.get("tools")]
    on = ", ".join(Path(d).name for d in results.get("data", [])) or "?"
    score = "exact match" if results.get("task") == "json" else "accuracy"
    figures: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(c.get("model") for c in conditions):
        row = min((c for c in conditions if c.get("model") == model), key=lambda c: c.get("shots", 0))
        mine = figures[str(model)] = {f"{score}, {row.get('shots', 0)}-shot, on {on}": row["accuracy"]}
        mine.update({f"{name}, {row.get('shots', 0)}-shot, on {on}": value
                     for name, value in (row.get("field_scores") or {}).items()})
        if row.get("loss") is not None:
            mine[f"held-out loss on {on}"] = row["loss"]
    return figures


def compare_rows(compare_file: Path) -> dict[str, dict]:
    try:
        rows = json.loads(compare_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(r["model"]): r for r in rows if isinstance(r, dict) and r.get("model")} if isinstance(rows, list) else {}


def data_names(run_dir: Path) -> str:
    """The held-out files a compare run scored on, from its recipe.yaml."""
    try:
        recipe = yaml.load((run_dir / "recipe.yaml").read_text(), Loader=YAML_LOADER) or {}
    except (OSError, yaml.YAMLError):
        return "?"
    data = (recipe.get("compare") or {}).get("data") or []
    return ", ".join(Path(d).name for d in data) or "?"


def metric_choices(measured: dict[str, Measured]) -> list[str]:
    """Every figure some model carries, the sensible default first: the one most models carry, a held-out loss
    before a task score before the validation loss on a tie (held-out figures are on the same questions for
    every model; each run's validation split is its own)."""
    counts: dict[str, int] = {}
    for m in measured.values():
        for name in m.metrics:
            counts[name] = counts.get(name, 0) + 1

    def rank(name: str):
        kind = 2 if name == VALIDATION else 0 if name.startswith("held-out loss") else 1
        return (-counts[name], kind, name)

    return sorted(counts, key=rank)


def pareto_front(points: dict[str, tuple[float, float]], lower_is_better: bool) -> list[str]:
    """The names no other point dominates: none is at most as large and at least as good, and strictly one of them.

    >>> pareto_front({"small": (10, 2.0), "big": (100, 1.0), "worse": (50, 2.5)}, lower_is_better=True)
    ['small', 'big']
    """
    sign = 1 if lower_is_better else -1

    def dominated(name: str) -> bool:
        size, quality = points[name]
        return any(s <= size and sign * q <= sign * quality and (s < size or sign * q < sign * quality)
                   for other, (s, q) in points.items() if other != name)

    return [name for name in points if not dominated(name)]
