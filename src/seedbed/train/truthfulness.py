"""TruthfulQA MC1/MC2 of a trained model beside its base's: the model card's check that training on a team's own
data did not cost the model what it knew (or made it repeat more popular falsehoods).

Both run the same seeded subset (`TrainArgs.truthfulness_questions`), scored as lm-eval does
(`seedbed.evaluate.likelihood.truthfulness`). The base's figure is cached under the Seedbed home, keyed by the
base's identity (its resolved path and its weight files' sizes and times, the dtype it runs in, the subset), so
every fine-tune of one base pays for it once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.evaluate.likelihood import truthfulness
from seedbed.inference import load
from seedbed.models import default_device, inference_dtype, resolve, seedbed_home

CACHE_VERSION = 1  # bump when the scoring or the task's data changes: every cached base figure is then stale
SUBSET_SEED = 42  # fixed, not the training seed: every model of every run is asked the same questions


def base_identity(base: str, questions: int, seed: int) -> dict:
    """What a base's figure depends on: its resolved location, its config and weight files (name, size, mtime),
    the dtype it runs in here, and the questions asked."""
    where = resolve(base)
    path = Path(where)
    files = []
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.name == "config.json" or f.suffix in (".safetensors", ".bin", ".gguf"):
                stat = f.stat()
                files.append([f.name, stat.st_size, stat.st_mtime_ns])
    return {"version": CACHE_VERSION, "base": where, "files": files, "questions": questions, "seed": seed,
            "dtype": str(inference_dtype(where, default_device()))}


def base_truthfulness(base: str, questions: int, seed: int) -> dict:
    """The base's TruthfulQA figure, from the cache when this base, dtype and subset were measured before."""
    identity = base_identity(base, questions, seed)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cached = seedbed_home() / "truthfulness" / f"{key}.json"
    if cached.is_file():
        return {**json.loads(cached.read_text())["figures"], "cached": True}
    figures = truthfulness(load(base), questions, seed)
    atomic_write_text(cached, json.dumps({"identity": identity, "figures": figures}, indent=2) + "\n")
    return {**figures, "cached": False}


def measure(model_dir: Path, base: str, questions: int, seed: int = SUBSET_SEED) -> dict | None:
    """TruthfulQA MC1/MC2 for the trained model in `model_dir` and for `base` (None when `questions` is 0).

    >>> measure(Path("runs/demo/model"), "gemma-3-270m", 10)["base"]["mc2"]  # doctest: +SKIP
    0.2193
    """
    if questions <= 0:
        return None
    return {"questions": questions, "seed": seed, "model": truthfulness(load(str(model_dir)), questions, seed),
            "base_model": base, "base": base_truthfulness(base, questions, seed)}


def card_section(figures: dict | None, base_label: str = "base") -> str:
    """The model card's truthfulness section: MC1 and MC2 of the model and its base, with N and standard errors.

    >>> fig = {"n": 200, "mc1": 0.25, "mc1_stderr": 0.0307, "mc2": 0.42, "mc2_stderr": 0.021, "seconds": 30.0}
    >>> print(card_section({"questions": 200, "seed": 42, "model": fig, "base_model": "b", "base": fig}))
    ## Truthfulness (TruthfulQA, by likelihood)
    <BLANKLINE>
    | model | MC1 | MC2 |
    |---|---|---|
    | this model | 25.0% ± 3.1% | 42.0% ± 2.1% |
    | base `b` | 25.0% ± 3.1% | 42.0% ± 2.1% |
    <BLANKLINE>
    200 of TruthfulQA's 817 questions (seeded subset, seed 42), 0-shot with lm-eval's QA preamble; MC1: the best answer is the likeliest; MC2: probability mass on the true answers; ± one standard error.
    <BLANKLINE>
    """
    if not figures:
        return "## Truthfulness (TruthfulQA, by likelihood)\n\nNot measured (`truthfulness_questions: 0`).\n"
    from seedbed.evaluate.tables import markdown_table

    def cell(fig, name):
        stderr = fig[f"{name}_stderr"]
        return f"{fig[name]:.1%}" + ("" if stderr is None else f" ± {stderr:.1%}")

    mine, base = figures["model"], figures["base"]
    table = markdown_table(["model", "MC1", "MC2"], [
        ["this model", cell(mine, "mc1"), cell(mine, "mc2")],
        [f"{base_label} `{figures['base_model']}`", cell(base, "mc1"), cell(base, "mc2")]])
    which = (f"{mine['n']} of TruthfulQA's 817 questions (seeded subset, seed {figures['seed']})" if mine["n"] < 817
             else "all 817 TruthfulQA questions")
    return (f"## Truthfulness (TruthfulQA, by likelihood)\n\n{table}\n\n{which}, 0-shot with lm-eval's QA preamble; "
            "MC1: the best answer is the likeliest; MC2: probability mass on the true answers; ± one standard error.\n")
