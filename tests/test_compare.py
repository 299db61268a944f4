"""`seedbed compare`: every model measured in its own process, a table, the JSON behind it and a plot."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from conftest import qa_records, write_jsonl
from seedbed.cli import app
from seedbed.quantize import quantize
from seedbed.recipe import QuantizeRecipe


def test_compare_fp32_and_int8(tiny_model, tmp_path):
    int8 = tmp_path / "int8"
    quantize(QuantizeRecipe(model=str(tiny_model), method="int8", out=str(int8), quiet=True))
    heldout = write_jsonl(tmp_path / "heldout.jsonl", qa_records(3))
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, [
        "compare", f"fp32={tiny_model}", f"int8={int8}", "--data", str(heldout), "--limit", "2",
        "--max-new-tokens", "4", "--prompt-tokens", "8", "--decode-tokens", "4", "--repeats", "1",
        "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((out / "compare.json").read_text())}
    assert set(rows) == {"fp32", "int8"}
    assert rows["int8"]["file_mib"] < rows["fp32"]["file_mib"]
    assert rows["fp32"]["params"] == rows["int8"]["params"]  # quantization changes storage, not the parameters
    for r in rows.values():
        assert r["engine"] == "torch" and r["decode_tok_s"] > 0 and r["prompt_tok_s"] > 0 and r["peak_rss_mib"] > 0
        assert r["loss"] is not None and 0 <= r["accuracy"] <= 1 and r["n"] == 2
    assert rows["fp32"]["decode_speedup"] == 1.0
    table = (out / "compare.md").read_text()
    assert "| fp32 | torch |" in table and "| int8 | torch |" in table
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_a_bad_model_before_measuring_any(tiny_model, tmp_path):
    result = CliRunner().invoke(app, ["compare", f"ok={tiny_model}", f"broken={tmp_path}", "--repeats", "1",
                                      "--out", str(tmp_path / "cmp"), "--quiet"])
    assert result.exit_code == 2
    assert str(tmp_path) in result.output and "config.json" in result.output
    assert not (tmp_path / "cmp").exists()
