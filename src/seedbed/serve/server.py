"""Turn a `ServeRecipe` into a running server: load each model, the tools and the retrieval indexes, then uvicorn.

    seedbed serve --model tuned=runs/demo/model --api-key sk-local --rag tuned=runs/docs-index
    seedbed serve --engine llama.cpp --model q4=runs/q4
"""

from __future__ import annotations

from pathlib import Path

from seedbed.errors import RecipeError
from seedbed.inference import load
from seedbed.models import parse_model_spec
from seedbed.recipe import ServeRecipe
from seedbed.serve.app import create_app
from seedbed.serve.engine import Engine
from seedbed.serve.protocol import Limits, ServerConfig


def named(values: list[str], flag: str, served: dict | None = None) -> dict[str, str]:
    """NAME=VALUE flags by name (a bare MODEL is named as `parse_model_spec` names it); with `served`, every
    name must be a served model's."""
    pairs = {}
    for value in values:
        name, target = parse_model_spec(value)
        if not target:
            raise RecipeError(f"{flag}: expected NAME=VALUE, got '{value}'")
        pairs[name] = target
    unknown = set(pairs) - set(served) if served is not None else set()
    if unknown:
        raise RecipeError(f"{flag}: {', '.join(sorted(unknown))} is not a served model name")
    return pairs


def build_config(recipe: ServeRecipe) -> ServerConfig:
    """Load everything the recipe names; errors name the flag at fault."""
    from seedbed.serve.tools import CALCULATOR, load_entry_point_tools, load_tools_yaml

    models = named(recipe.model, "model")
    if not models:
        raise RecipeError("model: give at least one --model NAME=MODEL")
    keys = list(recipe.api_key)
    if recipe.api_keys_file:
        path = Path(recipe.api_keys_file)
        if not path.is_file():
            raise RecipeError(f"api_keys_file: no such file {path}")
        # A comment may be indented: an indented "# old key" once became a valid key.
        keys += [key for key in (line.strip() for line in path.read_text().splitlines())
                 if key and not key.startswith("#")]
    tools = {CALCULATOR.name: CALCULATOR}
    for tool in load_entry_point_tools() + [t for f in recipe.tools for t in load_tools_yaml(f)]:
        tools[tool.name] = tool
    rag_paths = named(recipe.rag, "rag", models)
    rag = {}
    if rag_paths:
        from seedbed.retrieval import open_index

        rag = {name: (open_index(path), recipe.rag_k) for name, path in rag_paths.items()}
    fewshot_paths = named(recipe.fewshot, "fewshot", models)
    fewshot = {}
    if fewshot_paths:
        from seedbed.serve.fewshot_profile import FewshotProfile

        fewshot = {name: FewshotProfile.load([path], recipe.fewshot_k, recipe.fewshot_mode)
                   for name, path in fewshot_paths.items()}
    engines = {name: Engine(name, load(path, recipe.engine, recipe.threads), max_batch=recipe.max_batch,
                            batch_window_ms=recipe.batch_window_ms, max_queue=recipe.max_queue)
               for name, path in models.items()}
    limits = Limits(max_prompt_tokens=recipe.max_prompt_tokens, max_tokens=recipe.max_tokens,
                    default_max_tokens=recipe.default_max_tokens, max_body_bytes=recipe.max_body_bytes,
                    request_timeout_s=recipe.request_timeout_s, max_stops=recipe.max_stops)
    return ServerConfig(engines, keys, limits, tools, rag, fewshot, recipe.log_content)


def run_server(recipe: ServeRecipe) -> None:
    import uvicorn

    app = create_app(build_config(recipe))
    # uvicorn's access log holds paths and status codes only; bodies (prompts, completions) are never logged.
    uvicorn.run(app, host=recipe.host, port=recipe.port, log_level="info")
