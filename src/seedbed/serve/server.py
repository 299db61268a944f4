"""Turn a `ServeRecipe` into a running server: load each model, the tools and the retrieval indexes, then uvicorn.

    seedbed serve --model tuned=runs/demo/model --api-key sk-local --rag tuned=runs/docs-index
    seedbed serve --engine llama.cpp --model q4=runs/q4
"""

from __future__ import annotations

from pathlib import Path

from seedbed.recipe import RecipeError, ServeRecipe
from seedbed.serve.app import Limits, ServerConfig, create_app
from seedbed.serve.engine import Engine


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise RecipeError(f"{flag}: expected NAME=VALUE, got '{value}'")
        pairs[name] = target
    return pairs


def build_config(recipe: ServeRecipe) -> ServerConfig:
    """Load everything the recipe names; errors name the flag at fault."""
    from seedbed.serve.tools import CALCULATOR, load_entry_point_tools, load_tools_yaml

    models = _pairs(recipe.model, "model")
    if not models:
        raise RecipeError("model: give at least one --model NAME=MODEL")
    keys = list(recipe.api_key)
    if recipe.api_keys_file:
        path = Path(recipe.api_keys_file)
        if not path.is_file():
            raise RecipeError(f"api_keys_file: no such file {path}")
        keys += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    tools = {CALCULATOR.name: CALCULATOR}
    for tool in load_entry_point_tools() + [t for f in recipe.tools for t in load_tools_yaml(f)]:
        tools[tool.name] = tool
    rag_paths = _pairs(recipe.rag, "rag")
    unknown = set(rag_paths) - set(models)
    if unknown:
        raise RecipeError(f"rag: {', '.join(sorted(unknown))} is not a served model name")
    rag = {}
    if rag_paths:
        from seedbed.retrieval import open_index

        rag = {name: (open_index(path), recipe.rag_k) for name, path in rag_paths.items()}
    fewshot_paths = _pairs(recipe.fewshot, "fewshot")
    if set(fewshot_paths) - set(models):
        raise RecipeError(f"fewshot: {', '.join(sorted(set(fewshot_paths) - set(models)))} is not a served model name")
    from seedbed.serve.fewshot_profile import FewshotProfile

    fewshot = {name: FewshotProfile.load([path], recipe.fewshot_k, recipe.fewshot_mode)
               for name, path in fewshot_paths.items()}
    engines = {name: _engine(recipe, name, path) for name, path in models.items()}
    limits = Limits(recipe.max_prompt_tokens, recipe.max_tokens, recipe.default_max_tokens, recipe.max_body_bytes,
                    recipe.request_timeout_s)
    return ServerConfig(engines, keys, limits, tools, rag, fewshot, recipe.log_content)


def _engine(recipe: ServeRecipe, name: str, path: str):
    """The engine that runs a model: torch (transformers, batched) or llama.cpp (GGUF, one request at a time)."""
    if recipe.engine == "llama.cpp":
        from seedbed.serve.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(name, path, n_threads=recipe.threads)
    return Engine(name, path, max_batch=recipe.max_batch, batch_window_ms=recipe.batch_window_ms)


def run_server(recipe: ServeRecipe) -> None:
    import uvicorn

    app = create_app(build_config(recipe))
    # uvicorn's access log holds paths and status codes only; bodies (prompts, completions) are never logged.
    uvicorn.run(app, host=recipe.host, port=recipe.port, log_level="info")
