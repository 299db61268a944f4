"""The command line: flags map onto recipes, bad input is one clear message, the README and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import qa_records, write_jsonl
from typer.testing import CliRunner

from seedbed.cli import app

runner = CliRunner()
ROOT = Path(__file__).parents[1]


def test_every_finetune_field_is_a_flag():
    from seedbed.recipe import FinetuneRecipe

    help_text = runner.invoke(app, ["finetune", "--help"], env={"COLUMNS": "300"}).output
    for name in FinetuneRecipe.model_fields:
        assert "--" + name.replace("_", "-") in help_text, name


def test_finetune_cli_writes_a_model(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", qa_records(12))
    out = tmp_path / "out"
    result = runner.invoke(app, ["finetune", "--base", str(tiny_model), "--data", str(data), "--method", "lora",
                                 "--out", str(out), "--max-steps", "2", "--quiet", "--eval-steps", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and "validation loss" in result.output


def test_a_diverged_run_exits_1_and_says_so(tiny_model, tmp_path):
    """A run whose loss spiked (lr 1000: step 2's loss is orders of magnitude above the first) is no success: the
    command exits 1 and says why; a run whose loss goes non-finite stops, naming the step, with a non-zero code."""
    data = write_jsonl(tmp_path / "train.jsonl", qa_records(40))
    common = ["--base", str(tiny_model), "--data", str(data), "--method", "full", "--max-steps", "4",
              "--batch-size", "4", "--warmup", "0", "--logging-steps", "1", "--eval-steps", "2", "--quiet"]
    spiked = runner.invoke(app, ["finetune", *common, "--lr", "1000", "--out", str(tmp_path / "spike")])
    assert spiked.exit_code == 1, spiked.output
    assert "Diverged" in spiked.output and "lower --lr" in spiked.output and "Done" not in spiked.output
    nan = runner.invoke(app, ["finetune", *common, "--lr", "1e36", "--out", str(tmp_path / "nan")])
    assert nan.exit_code not in (0, None) and "diverged at step" in nan.output and "Done" not in nan.output
    healthy = runner.invoke(app, ["finetune", *common, "--lr", "5e-3", "--out", str(tmp_path / "ok")])
    assert healthy.exit_code == 0 and "Done" in healthy.output, healthy.output


def test_recipe_file_and_flags_combine(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", qa_records(12))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"finetune:\n  base: {tiny_model}\n  data: [{data}]\n  max_steps: 50\n  quiet: true\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["finetune", "--recipe", str(recipe), "--max-steps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = (out / "recipe.yaml").read_text()
    assert "max_steps: 1" in saved and str(data) in saved  # flag overrode the file; the file filled the rest


def test_bad_input_is_one_clear_error(tmp_path):
    result = runner.invoke(app, ["finetune", "--method", "qlora", "--data", "x.jsonl"])
    assert result.exit_code == 2 and "method" in result.output and "Traceback" not in result.output
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "Say hi"}])
    result = runner.invoke(app, ["finetune", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"{bad}:1" in result.output


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(block) == 2 and "seedbed demo" in block[0] and "pytest" in block[1]
    assert "torch==2.13.0" in block[0] and "torch==2.13.0" in block[1]
    assert "README.md" in (ROOT / ".ci/run").read_text()


def test_generate_and_eval_commands(tiny_model, tmp_path):
    result = runner.invoke(app, ["generate", "--model", str(tiny_model), "--greedy", "--max-new-tokens", "5", "Hi"])
    assert result.exit_code == 0, result.output

    held = write_jsonl(tmp_path / "held.jsonl", qa_records(4))
    pool = write_jsonl(tmp_path / "pool.jsonl", qa_records(10)[4:])
    result = runner.invoke(app, ["eval", "--models", f"tiny={tiny_model}", "--data", str(held), "--pool", str(pool),
                                 "--shots", "0", "--shots", "2", "--max-new-tokens", "8", "--quiet",
                                 "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| tiny")]
    assert [row.split("|")[3].strip() for row in rows] == ["0", "2"]  # zero-shot and few-shot, same questions
    assert (tmp_path / "ev" / "results.json").is_file()


def test_eval_without_pool_is_a_clear_error(tiny_model, tmp_path):
    held = write_jsonl(tmp_path / "held.jsonl", qa_records(2))
    result = runner.invoke(app, ["eval", "--models", str(tiny_model), "--data", str(held), "--shots", "3"])
    assert result.exit_code == 2 and "pool" in result.output


def test_index_command(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("The Zorblax reactor opened in 1987.")
    result = runner.invoke(app, ["index", str(docs), "--out", str(tmp_path / "ix")])
    assert result.exit_code == 0, result.output
    assert "added=1" in result.output and (tmp_path / "ix" / "chunks.sqlite").is_file()
    result = runner.invoke(app, ["index", str(tmp_path / "missing"), "--out", str(tmp_path / "ix")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_nested_sections_take_dotted_flags(tmp_path):
    """`--quality.min-words 2` sets one value of a nested section; the file's other values in it stay."""
    from seedbed.recipe import load_recipe

    data = write_jsonl(tmp_path / "d.jsonl", qa_records(20))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  quality:\n    max_words: 5000\n  pii:\n    names: false\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "prepare", str(data), "--out", str(out), "--recipe", str(recipe),
                                 "--quality.min-words", "2", "--no-toxicity.enabled", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    saved = load_recipe(out / "recipe.yaml").data
    assert (saved.quality.min_words, saved.quality.max_words) == (2, 5000)
    assert saved.toxicity.enabled is False and saved.pii.names is False
    bad = runner.invoke(app, ["data", "prepare", str(data), "--out", str(tmp_path / "o2"), "--quality.min-words", "-1"])
    assert bad.exit_code == 2 and "quality.min_words" in bad.output and "Traceback" not in bad.output


def test_demo_runs_end_to_end_and_every_number_it_prints_is_saved(tiny_model, tmp_path):
    """`seedbed demo` on the tiny model and a slice of the shipped SNIPS data: curation, base eval, LoRA, tuned
    eval; the printed table is results.md's, and answers.jsonl holds every answer of the three conditions."""
    import json

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, [
        "demo", "--out", str(out), "--show", "2", "--fewshot", "2",
        "--finetune.base", str(tiny_model), "--finetune.max-steps", "3", "--finetune.eval-steps", "3",
        "--finetune.batch-size", "2", "--eval.limit", "6", "--eval.max-new-tokens", "8", "--eval.batch-size", "6",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "data" / "report.json").read_text())
    assert report["input_records"] == report["kept"]["total"] + report["dropped"]["total"] == 462
    saved = json.loads((out / "eval" / "results.json").read_text())
    assert [c["name"] for c in saved["conditions"]] == ["base", "base 2-shot", "tuned"] and saved["task"] == "json"
    answers = [json.loads(line) for line in (out / "eval" / "answers.jsonl").read_text().splitlines()]
    assert [a["condition"] for a in answers] == ["base"] * 6 + ["base 2-shot"] * 6 + ["tuned"] * 6
    assert (out / "model" / "model.safetensors").is_file() and "intent acc" in result.output
    printed = "".join(result.output.split())  # the console wraps long lines
    rows = [line for line in (out / "eval" / "results.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 4 and all("".join(row.split()) in printed for row in rows)
