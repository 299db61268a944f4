"""`seedbed compare`: the size / speed / quality trade-off of several models, as a table and a plot.

    seedbed compare tuned=runs/demo/model int8=runs/demo-int8 q4=runs/demo-q4 --data heldout.jsonl --out runs/compare

Each model is measured in a fresh process (`seedbed.evaluate.measure`), one after the other, so peak RAM, load
time and speed are the model's own and never compete for the CPU. With `--engine auto` (the default) GGUF models run in
llama.cpp and everything else in PyTorch (`seedbed.inference.resolve_engine`). Quality (held-out loss, zero-shot accuracy) comes from `seedbed eval` on the same questions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from seedbed.atomic import atomic_dir, atomic_path, check_output_dir, local_inputs
from seedbed.errors import RecipeError
from seedbed.evaluate.tables import markdown_table as render_table
from seedbed.recipe import CompareRecipe, save_recipe

COLUMNS = [  # (key, header, format)
    ("name", "model", "{}"), ("engine", "engine", "{}"), ("params", "params (M)", "{:.1f}"),
    ("file_mib", "file (MiB)", "{:,.1f}"), ("peak_rss_mib", "peak RAM (MiB)", "{:,.0f}"), ("load_s", "load (s)", "{:.1f}"),
    ("prompt_tok_s", "prompt tok/s", "{:,.0f}"), ("decode_tok_s", "decode tok/s", "{:.1f}"),
    ("decode_speedup", "decode vs first", "{:.2f}x"), ("loss", "held-out loss", "{:.3f}"),
    ("accuracy", "accuracy", "{:.1%}"),
]


class CompareError(RecipeError):
    """A model that could not be measured; the message names it and gives its error."""


@dataclass
class CompareResult:
    rows: list[dict]
    markdown: str


def compare(recipe: CompareRecipe, on_model=None) -> CompareResult:
    """Measure every model in `recipe.models` and write compare.json, compare.md and compare.png to `recipe.out`.

    The first model is the baseline of the "decode vs first" column.
    """
    from seedbed.models import parse_model_spec

    if not recipe.models:
        raise RecipeError("models: give at least one NAME=MODEL to compare")
    specs = [parse_model_spec(m) for m in recipe.models]
    names = [n for n, _ in specs]
    if len(set(names)) < len(names):
        raise RecipeError(f"models: names must differ, got {', '.join(names)}")
    from seedbed.inference import resolve_engine
    from seedbed.models import resolve

    for name, model in specs:  # fail now, not after measuring the models before it
        if resolve_engine(model, recipe.engine) == "torch":
            resolve(model)
    check_output_dir(recipe.out, local_inputs([m for _, m in specs], recipe.data))  # before measuring, not after
    rows = []
    for i, (name, model) in enumerate(specs):
        if on_model:
            on_model(i, name)
        rows.append(_measure_in_subprocess(name, model, recipe))
    for row in rows:
        row["decode_speedup"] = row["decode_tok_s"] / rows[0]["decode_tok_s"]
        row["params"] = row["params"] / 1e6
    table = markdown_table(rows)
    with atomic_dir(recipe.out, replace=True) as out:  # this comparison's files, whole, never a mix with the last
        (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out / "compare.md").write_text(table + "\n")
        plot(rows, out / "compare.png")
        save_recipe(recipe, out / "recipe.yaml", "compare")
    return CompareResult(rows, table)


def _measure_in_subprocess(name: str, model: str, recipe: CompareRecipe) -> dict:
    spec = {"name": name, "model": model, **recipe.model_dump(include={
        "engine", "data", "limit", "max_new_tokens", "threads", "prompt_tokens", "decode_tokens", "repeats"})}
    done = subprocess.run([sys.executable, "-m", "seedbed.evaluate.measure", json.dumps(spec)],
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CompareError(f"{name} ({model}): could not be measured: {detail}")
    return json.loads(lines[-1])


def markdown_table(rows: list[dict]) -> str:
    """One row per model; a dash where a value is missing (no held-out data given).

    >>> print(markdown_table([{"name": "a", "engine": "torch", "params": 1.0, "file_mib": 4, "peak_rss_mib": 300,
    ...       "load_s": 0.5, "prompt_tok_s": 900, "decode_tok_s": 20, "decode_speedup": 1, "loss": None, "accuracy": 0.5}]))
    | model | engine | params (M) | file (MiB) | peak RAM (MiB) | load (s) | prompt tok/s | decode tok/s | decode vs first | held-out loss | accuracy |
    |---|---|---|---|---|---|---|---|---|---|---|
    | a | torch | 1.0 | 4.0 | 300 | 0.5 | 900 | 20.0 | 1.00x | - | 50.0% |
    """
    return render_table([h for _, h, _ in COLUMNS],
                        [["-" if row.get(k) is None else fmt.format(row[k]) for k, _, fmt in COLUMNS] for row in rows])


def plot(rows: list[dict], path: Path) -> None:
    """Quality against decode speed: held-out loss (lower is better) and accuracy, one point per model."""
    import matplotlib

    matplotlib.use("Agg")  # no display; write a file
    import matplotlib.pyplot as plt

    panels = [(k, label) for k, label in (("loss", "held-out loss (lower is better)"), ("accuracy", "task accuracy"))
              if any(r.get(k) is not None for r in rows)] or [("params", "parameters (M)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for r in rows:
            if r.get(key) is None:
                continue
            marker = "s" if r["engine"] == "llama.cpp" else "o"
            ax.scatter(r["decode_tok_s"], r[key], marker=marker, s=60)
            ax.annotate(r["name"], (r["decode_tok_s"], r[key]), textcoords="offset points", xytext=(6, 4), fontsize=9)
        ax.set_xlabel("decode tokens/s (higher is faster)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)
    fig.suptitle("Quality vs decode speed (circles: PyTorch, squares: llama.cpp)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")  # the temporary name ends in .tmp: say the format
    plt.close(fig)
