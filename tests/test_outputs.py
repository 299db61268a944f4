"""The one rule for output directories (`seedbed.atomic`): no verb writes over, around or inside its inputs, and
only a directory Seedbed wrote is ever replaced, atomically; metrics are strict JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import qa_records, write_jsonl
from typer.testing import CliRunner

from seedbed.atomic import OWNER_MARKER, atomic_dir, check_output_dir, strict_json
from seedbed.cli import app
from seedbed.errors import RecipeError
from seedbed.recipe import FinetuneRecipe, QuantizeRecipe


def test_an_output_over_around_or_inside_an_input_is_refused(tmp_path):
    model = tmp_path / "runs" / "demo" / "model"
    model.mkdir(parents=True)
    for out, how in [(model, "is"), (model.parent, "contains"), (model / "q", "is inside")]:
        with pytest.raises(RecipeError, match=f"{out} {how} the input"):
            check_output_dir(out, [model])
    check_output_dir(tmp_path / "runs" / "elsewhere", [model])  # a sibling is fine


def test_only_a_directory_seedbed_wrote_is_replaced(tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    with pytest.raises(RecipeError, match="did not write"):
        with atomic_dir(theirs, replace=True) as tmp:
            (tmp / "x").write_text("new")
    assert (theirs / "notes.txt").read_text() == "keep me" and not (theirs / "x").exists()

    for text in ("first", "second"):
        with atomic_dir(mine, replace=True) as tmp:
            (tmp / "x").write_text(text)
    assert (mine / "x").read_text() == "second" and (mine / OWNER_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "theirs"]  # nothing left beside them


def test_what_a_killed_run_left_beside_its_output_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".out.tmp-{dead.stdout.strip()}-1"
    orphan.mkdir()
    (orphan / "train.jsonl").write_text("half")
    live = tmp_path / f".out.tmp-{os.getpid()}-1"  # a run still going (here: this process) keeps its own
    live.mkdir()
    with atomic_dir(tmp_path / "out", replace=True) as tmp:
        (tmp / "train.jsonl").write_text("whole")
    assert not orphan.exists() and live.exists()


def test_quantize_refuses_an_out_holding_its_model_and_keeps_every_file(tiny_model, tmp_path):
    demo = tmp_path / "runs" / "demo"
    shutil.copytree(tiny_model, demo / "model")
    (demo / "notes.txt").write_text("my notes")
    before = sorted(p.relative_to(demo) for p in demo.rglob("*"))
    result = CliRunner().invoke(app, ["quantize", "--model", str(demo / "model"), "--method", "int8",
                                      "--out", str(demo), "--quiet"])
    assert result.exit_code == 2 and "contains the input" in " ".join(result.output.split())
    assert sorted(p.relative_to(demo) for p in demo.rglob("*")) == before
    assert (demo / "notes.txt").read_text() == "my notes"


def test_quantize_replaces_its_own_output_but_not_a_foreign_directory(tiny_model, tmp_path):
    from seedbed.quantize.run import quantize

    out = tmp_path / "q"
    for _ in range(2):  # the second run replaces the first one's directory whole
        quantize(QuantizeRecipe(model=str(tiny_model), method="int8", out=str(out), quiet=True))
    assert json.loads((out / "quantize.json").read_text())["method"] == "int8"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(RecipeError, match="did not write"):
        quantize(QuantizeRecipe(model=str(tiny_model), method="int8", out=str(foreign), quiet=True))
    assert (foreign / "thesis.tex").read_text() == "years of work"


def test_data_prepare_never_writes_over_its_input(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    data = write_jsonl(folder / "train.jsonl", qa_records(50))
    before = data.read_bytes()
    for out in (folder, folder / "clean"):  # the file's folder holds it; a folder inside a data folder input
        given = str(data) if out == folder else str(folder)
        result = CliRunner().invoke(app, ["data", "prepare", given, "--out", str(out), "--quiet"])
        assert result.exit_code == 2, result.output
        assert "the input" in " ".join(result.output.split())
    assert data.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["train.jsonl"]


def test_finetune_refuses_an_out_that_holds_a_model_it_did_not_write(tiny_model, tmp_path):
    from seedbed.train.finetune import finetune

    data = write_jsonl(tmp_path / "train.jsonl", qa_records(8))
    existing = tmp_path / "somebodys-model"
    shutil.copytree(tiny_model, existing)
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    with pytest.raises(RecipeError, match="did not write"):
        finetune(FinetuneRecipe(base=str(tiny_model), data=[str(data)], out=str(existing), max_steps=1, quiet=True))
    with pytest.raises(RecipeError, match="is inside the input"):
        finetune(FinetuneRecipe(base=str(tiny_model), data=[str(data)], out=str(tiny_model / "tuned"),
                                max_steps=1, quiet=True))
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before


def test_strict_json_writes_no_bare_nan():
    text = strict_json({"loss": float("nan"), "curve": [1.0, float("inf")], "ok": 2.5})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "loss": None, "curve": [1.0, None], "ok": 2.5}


def test_eval_compare_demo_and_index_refuse_an_out_over_around_or_inside_their_inputs(tiny_model, tmp_path):
    """Each fails at once with exit 2 naming the input, and not one file changes (eval used to write its
    results.md and recipe.yaml into the model directory it was given as --out)."""
    runs = tmp_path / "runs"
    model = runs / "tuned"
    shutil.copytree(tiny_model, model)
    (runs / "notes.txt").write_text("my notes")
    held = write_jsonl(runs / "held.jsonl", qa_records(3))
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    attempts = [
        (["eval", "--models", f"t={model}", "--data", str(held), "--shots", "0", "--max-new-tokens", "4",
          "--no-model-card", "--quiet", "--out", str(model)], "is the input"),
        (["eval", "--models", f"t={tiny_model}", "--data", str(held), "--shots", "0", "--max-new-tokens", "4",
          "--no-model-card", "--quiet", "--out", str(runs)], "contains the input"),
        (["eval", "--judge", "http://127.0.0.1:9/v1", "--models", "a=gemma-3-270m", "--models", f"b={model}",
          "--quiet", "--out", str(model)], "is the input"),  # its answer cache goes into --out as it runs
        (["compare", f"t={model}", "--data", str(held), "--quiet", "--out", str(model / "cmp")], "is inside the input"),
        (["demo", "--out", str(runs), "--finetune.base", str(model), "--finetune.max-steps", "1",
          "--eval.limit", "2", "--eval.max-new-tokens", "4"], "contains the input"),
        (["index", str(runs), "--out", str(runs / "index")], "is inside the input"),
    ]
    for args, how in attempts:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and how in " ".join(result.output.split()), (args[0], result.output)
        assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before, args[0]


def test_eval_writes_again_into_its_own_results_but_refuses_a_foreign_directory(tiny_model, tmp_path):
    from seedbed.evaluate import evaluate
    from seedbed.recipe import EvalRecipe

    held = write_jsonl(tmp_path / "held.jsonl", qa_records(3))
    out = tmp_path / "ev"
    recipe = EvalRecipe(models=[f"t={tiny_model}"], data=[str(held)], shots=[0], max_new_tokens=4, model_card=False,
                        quiet=True, out=str(out))
    evaluate(recipe)
    assert (out / OWNER_MARKER).is_file() and (out / "results.json").is_file()
    evaluate(recipe)  # its own directory: written again
    assert json.loads((out / "results.json").read_text())["n_questions"] == 3
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(RecipeError, match="did not write"):
        evaluate(recipe.model_copy(update={"out": str(foreign)}))
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
