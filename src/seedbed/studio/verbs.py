"""The verbs a studio job may run, and nothing else: each is a `seedbed` CLI verb with its recipe model. A job is
(verb, recipe fields); the fields are validated by the verb's own pydantic model before anything runs, and the
process is always `python -m seedbed.cli VERB --recipe FILE`, so no input reaches a shell or picks a program.

    recipe = build_recipe("finetune", {"base": "tiny", "data": ["train.jsonl"], "max_steps": 20}, data_dir)
    shell_command("finetune", recipe)   # 'seedbed finetune --base tiny --data train.jsonl --max-steps 20 ...'
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from seedbed.errors import RecipeError
from seedbed.recipe import (
    DataRecipe, DistillRecipe, EvalRecipe, FinetuneRecipe, QuantizeRecipe, ServeRecipe, Stage, validate,
)


@dataclass(frozen=True)
class Verb:
    words: tuple[str, ...]  # the CLI words: ("data", "prepare")
    recipe: type[Stage]
    section: str  # the recipe file's section
    title: str
    # A service runs until cancelled (a server), beside the queue rather than in it: serving a model must not wait
    # for a training to end, nor hold up the next one.
    service: bool = False


VERBS = {
    "prepare": Verb(("data", "prepare"), DataRecipe, "data", "Prepare data"),
    "finetune": Verb(("finetune",), FinetuneRecipe, "finetune", "Fine-tune"),
    "distill": Verb(("distill",), DistillRecipe, "distill", "Distill"),
    "quantize": Verb(("quantize",), QuantizeRecipe, "quantize", "Quantize / export GGUF"),
    "eval": Verb(("eval",), EvalRecipe, "eval", "Evaluate"),
    "serve": Verb(("serve",), ServeRecipe, "serve", "Serve (OpenAI-compatible)", service=True),
}


def verb_of(name: str) -> Verb:
    if name not in VERBS:
        raise RecipeError(f"verb: {name!r} is not a studio job; choose one of {', '.join(VERBS)}")
    return VERBS[name]


def build_recipe(verb: str, fields: dict, data_dir: str | Path) -> Stage:
    """The verb's validated recipe from form fields; its `out` must lie inside the data directory (jobs run there,
    so relative paths are relative to it), so a job never writes anywhere else."""
    recipe = validate(verb_of(verb).recipe, fields, verb)
    out = getattr(recipe, "out", None)
    if out is not None:
        root = Path(data_dir).resolve()
        target = (root / out).resolve()
        if target != root and root not in target.parents:
            raise RecipeError(f"out: {out!r} is outside the studio's data directory {root}")
        if target == root:
            raise RecipeError("out: give a directory inside the data directory, not the data directory itself")
    return recipe


def recipe_yaml(verb: str, recipe: Stage, full: bool = False) -> str:
    """The recipe as the YAML `--recipe` reads: the fields that differ from the defaults (or all of them)."""
    fields = recipe.model_dump(mode="json", exclude_defaults=not full)
    return yaml.safe_dump({verb_of(verb).section: fields}, sort_keys=False)


def process_command(verb: str, recipe_file: str | Path) -> list[str]:
    """What a job's runner executes: this Python, the seedbed CLI, the verb and its recipe file. Nothing else."""
    return [sys.executable, "-m", "seedbed.cli", *verb_of(verb).words, "--recipe", str(recipe_file)]


def shell_command(verb: str, recipe: Stage) -> str:
    """The command a user would type for the same job: one flag per field that differs from its default."""
    parts = ["seedbed", *verb_of(verb).words]
    for name, value in recipe.model_dump(mode="json", exclude_defaults=True).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list):
            parts += [p for item in value for p in (flag, str(item))]
        elif isinstance(value, dict):  # a nested section: dotted flags, one level down
            parts += [p for k, v in value.items() for p in (f"{flag}.{k.replace('_', '-')}", str(v))]
        elif value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)
