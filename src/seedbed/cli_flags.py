"""Recipe fields as command-line flags: every field of a verb's recipe is a flag (`lora_r` is `--lora-r`), and every
field of a nested section is a dotted flag (`--quality.min-words 3`, `--finetune.max-steps 10`), as LitGPT's
jsonargparse does, so a recipe never needs a file to change one value. Flags override the file given with
`--recipe`; the result is validated by the recipe's own pydantic model.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape  # a message's [extra] is text, not rich markup
from pydantic import BaseModel
from rich.console import Console

from seedbed.errors import SeedbedError
from seedbed.extras import missing_extra_error
from seedbed.recipe import load_recipe, packaged_recipe, validate

SEP = "__"  # a nested field's Python parameter name: quality__min_words for --quality.min-words
err = Console(stderr=True)


def flag_type(annotation):
    """The type typer should parse a field's flag as (Literal -> str: pydantic checks the choice), or None when
    the field cannot be a flag (a mapping, or a nested section below the first level)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return flag_type(inner[0])
    if origin is Literal:
        return str
    if origin is list:
        inner = typing.get_args(annotation)[0]
        inner = str if typing.get_origin(inner) is Literal else inner
        return list[inner] if inner in (str, int, float) else None
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return None
    return annotation


def section_model(annotation) -> type[BaseModel] | None:
    """The model of a nested section (`quality: QualityConfig`, or an optional one, `mapping: FieldMapping | None`),
    or None for a plain field."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def field_option(name: str, field, prefix: str = "") -> inspect.Parameter | None:
    """The typer option for one recipe field (`prefix` names its section: `quality.`)."""
    kind = flag_type(field.annotation)
    if kind is None:
        return None
    flag = "--" + prefix + name.replace("_", "-")
    help_text = field.description or ""
    if typing.get_origin(field.annotation) is Literal:
        help_text += f" One of: {', '.join(map(str, typing.get_args(field.annotation)))}."
    if kind is bool:
        flag = f"{flag}/--no-{prefix}{name.replace('_', '-')}"
    option = typer.Option(None, flag, help=help_text, show_default=False,
                          rich_help_panel=f"{prefix.rstrip('.')} section" if prefix else None)
    param = (prefix.rstrip(".") + SEP + name) if prefix else name
    return inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])


def recipe_options(stage: type[BaseModel]) -> list[inspect.Parameter]:
    """Options for every field of `stage`, and dotted options for every field of its nested sections."""
    params = []
    for name, field in stage.model_fields.items():
        if (section := section_model(field.annotation)) is not None:
            params += [p for sub, f in section.model_fields.items()
                       if (p := field_option(sub, f, prefix=name + ".")) is not None]
        elif (p := field_option(name, field)) is not None:
            params.append(p)
    return params


def given_values(stage: type[BaseModel], kwargs: dict) -> dict:
    """The recipe values the user gave as flags, nested the way the recipe file nests them; pops them from kwargs."""
    given: dict = {}
    for key in [k for k in kwargs if k in stage.model_fields or SEP in k]:
        value = kwargs.pop(key)
        if value is None:
            continue
        section, _, name = key.partition(SEP)
        if name:
            given.setdefault(section, {})[name] = value
        else:
            given[key] = value
    return given


def merged(base: dict, override: dict) -> dict:
    """`override` on top of `base`, section by section."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def recipe_command(app: typer.Typer, name: str, stage: type[BaseModel], section: str,
                   default_recipe: str | None = None, before=None):
    """Register `fn(recipe, **extra)` on `app` as a verb whose flags are `stage`'s fields plus `--recipe FILE`.

    The verb's help is `fn`'s docstring; `fn`'s own parameters after the recipe become extra arguments. A
    `SeedbedError` is printed as one line and exits 2; anything else is a bug of ours and keeps its traceback.
    `before(recipe)` runs after the recipe validated and before `fn` (the CLI checks the verb's extras and quiets
    the libraries' logging there). A library an extra installs that is still found missing while `fn` runs is
    the same one-line error, naming the extra.
    """

    def register(fn):
        extra = list(inspect.signature(fn).parameters.values())[1:]
        recipe_param = inspect.Parameter(
            "recipe", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
            default=typer.Option(
                None, "--recipe",
                help=f"YAML recipe file; its '{section}' section is used" + (f" (default: recipes/{default_recipe})." if default_recipe else "."),
            ),
        )

        @functools.wraps(fn)
        def command(**kwargs):
            recipe_file = kwargs.pop("recipe") or (packaged_recipe(default_recipe) if default_recipe else None)
            given = given_values(stage, kwargs)
            try:
                raw = {}
                if recipe_file is not None:
                    section_obj = getattr(load_recipe(recipe_file), section)
                    raw = section_obj.model_dump(exclude_unset=True) if section_obj else {}
                resolved = validate(stage, merged(raw, given), str(recipe_file or "flags"))
                if before is not None:
                    before(resolved)
                try:
                    return fn(resolved, **kwargs)
                except ModuleNotFoundError as e:
                    raise missing_extra_error(e, f"seedbed {name}") or e
            except SeedbedError as e:
                err.print(f"[bold red]error:[/bold red] {escape(str(e))}", markup=True, highlight=False)
                raise typer.Exit(2) from None

        command.__signature__ = inspect.Signature([*extra, recipe_param, *recipe_options(stage)])
        # typer must read the signature above, not fn's (which functools.wraps copied over)
        del command.__wrapped__
        command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
        return app.command(name)(command)

    return register
