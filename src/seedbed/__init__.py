"""Seedbed: grow your own language model from your own data on one machine, and serve it cheaply.

The Python API is the CLI's verbs as functions, each taking the verb's recipe (the same fields as its flags):

    from seedbed import DataRecipe, FinetuneRecipe, ServeRecipe, prepare, finetune, serve_app

    prepare(DataRecipe(inputs=["raw.jsonl"], out="runs/data"))
    finetune(FinetuneRecipe(base="gemma-3-270m", data=["runs/data/train.jsonl"], out="runs/model"))
    app = serve_app(ServeRecipe(model=["tuned=runs/model"]))   # a FastAPI app: uvicorn.run(app)

| name | what it is | extra |
|---|---|---|
| `prepare(DataRecipe)` | `seedbed data prepare`: curate, returns the report | `data` |
| `finetune(FinetuneRecipe)`, `distill(DistillRecipe)` | train; a result with `.out` and `.metrics` | `train` |
| `run_eval(EvalRecipe)` | `seedbed eval` | `eval` |
| `quantize_model(QuantizeRecipe)`, `compare(CompareRecipe)` | `seedbed quantize` / `compare` | `compress` |
| `serve_app(ServeRecipe)` | the OpenAI-compatible server as an ASGI app | `serve` |
| `build_index(paths, out)` | `seedbed index` | `rag` |
| `load(model, engine)`, `generate(backend, prompts, Sampling(...))` | the decode path | core |
| `load_model(name)`, `read_examples(paths)`, `load_recipe(path)` | models, data, recipes | core |

Names load on first use (PEP 562), so `import seedbed` and `seedbed --help` import neither torch nor numpy.
`run_eval` and `quantize_model` are `seedbed.evaluate.evaluate` and `seedbed.quantize.quantize`: as
`seedbed.evaluate` and `seedbed.quantize` those names are the packages.
"""

from __future__ import annotations

import importlib
import logging as _logging
from typing import TYPE_CHECKING

from seedbed.version import __version__

# transformers and PEFT import torchao when it is installed (it is with [compress]). On a CPU-only machine
# torchao then logs a warning for each CUDA extension it cannot load, and torch one for each enum torchao
# registers; neither is actionable by a user, and they bury our own output.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)

if TYPE_CHECKING:  # what type checkers see (py.typed); at run time `__getattr__` imports each on first use
    from fastapi import FastAPI

    from seedbed.curate.prepare import prepare
    from seedbed.data.readers import read_examples
    from seedbed.errors import SeedbedError
    from seedbed.evaluate.compare import compare
    from seedbed.evaluate.run import evaluate as run_eval
    from seedbed.inference import load
    from seedbed.inference.generate import generate
    from seedbed.inference.stops import Sampling
    from seedbed.models import load_model
    from seedbed.quantize.run import quantize as quantize_model
    from seedbed.recipe import (
        CompareRecipe, DataRecipe, DistillRecipe, EvalRecipe, FinetuneRecipe, GenerateRecipe, QuantizeRecipe,
        ServeRecipe, load_recipe,
    )
    from seedbed.retrieval.index import build_index
    from seedbed.train.distill import distill
    from seedbed.train.finetune import finetune

# public name -> (the module that defines it, its name there)
RENAMED = {"run_eval": ("seedbed.evaluate.run", "evaluate"), "quantize_model": ("seedbed.quantize.run", "quantize")}
API = {
    "prepare": "seedbed.curate.prepare", "finetune": "seedbed.train.finetune", "distill": "seedbed.train.distill",
    "run_eval": "seedbed.evaluate.run", "quantize_model": "seedbed.quantize.run", "compare": "seedbed.evaluate.compare",
    "build_index": "seedbed.retrieval.index", "load": "seedbed.inference", "generate": "seedbed.inference.generate",
    "Sampling": "seedbed.inference.stops", "load_model": "seedbed.models", "read_examples": "seedbed.data.readers",
    "SeedbedError": "seedbed.errors", "load_recipe": "seedbed.recipe",
    **{name: "seedbed.recipe" for name in ("CompareRecipe", "DataRecipe", "DistillRecipe", "EvalRecipe",
                                          "FinetuneRecipe", "GenerateRecipe", "QuantizeRecipe", "ServeRecipe")},
}
__all__ = ["__version__", "serve_app", *API]


def __getattr__(name: str):
    if name not in API:
        raise AttributeError(f"module 'seedbed' has no attribute {name!r}")
    value = getattr(importlib.import_module(API[name]), RENAMED.get(name, (None, name))[1])
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))


def serve_app(recipe: ServeRecipe) -> FastAPI:
    """The OpenAI-compatible server of `recipe` (its models loaded) as a FastAPI app, for any ASGI server.

    >>> import uvicorn
    >>> uvicorn.run(serve_app(ServeRecipe(model=["tuned=runs/demo/model"])), port=8000)  # doctest: +SKIP
    """
    from seedbed.serve.app import create_app
    from seedbed.serve.server import build_config

    return create_app(build_config(recipe))
