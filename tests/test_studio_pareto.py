"""The Models page's size / speed / quality plot and the compare page, over fake model directories whose sizes and
figures are known: the Pareto front is exactly the models no other beats on both, a model without the figure is
named as not measured, and speed shows only where a compare run measured it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient

from seedbed.studio.app import Studio, build_app
from seedbed.studio.quality import pareto_front

MiB = 2**20


def fake_model(data_dir: Path, name: str, mib: float, recipe: str = "", val_loss: float | None = None) -> str:
    d = data_dir / "runs" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "recipe.yaml").write_text(recipe or "finetune:\n  base: /models/tiny\n  lr: 0.0002\n")
    (d / "model.safetensors").write_bytes(b"\0" * int(mib * MiB))
    if val_loss is not None:
        (d / "metrics.json").write_text(json.dumps({"val": [{"step": 10, "loss": val_loss}]}))
    return f"runs/{name}"


def fake_eval(data_dir: Path, rows: dict[str, tuple[float, float]], task: str = "gsm8k") -> None:
    """An eval run's results.json: {model: (accuracy, held-out loss)}, 0-shot and 3-shot rows."""
    out = data_dir / "runs" / "eval"
    out.mkdir(parents=True)
    conditions = [{"name": m, "model": m, "shots": shots, "n": 10, "accuracy": acc + shots / 100, "loss": loss,
                   "tools": [], "field_scores": {}} for m, (acc, loss) in rows.items() for shots in (3, 0)]
    (out / "results.json").write_text(json.dumps({"conditions": conditions, "data": ["datasets/heldout.jsonl"],
                                                  "n_questions": 10, "task": task}))
    (out / "recipe.yaml").write_text("eval:\n  data: [datasets/heldout.jsonl]\n")


def studio_with_models(tmp_path) -> tuple[Studio, TestClient]:
    studio = Studio(tmp_path / "studio")
    d = studio.data_dir
    fake_model(d, "small", 1, val_loss=2.2)
    fake_model(d, "mid", 3, val_loss=2.0)
    fake_model(d, "big", 8)
    fake_model(d, "unmeasured", 2)
    fake_eval(d, {"runs/small": (0.30, 2.0), "runs/mid": (0.50, 2.5), "runs/big": (0.40, 1.5)})
    compare = d / "runs" / "compare"
    compare.mkdir()
    (compare / "compare.json").write_text(json.dumps([
        {"name": "s", "model": "runs/small", "engine": "torch", "decode_tok_s": 42.5, "loss": None, "accuracy": None},
        {"name": "b", "model": "runs/big/model.gguf", "engine": "llama.cpp", "decode_tok_s": 9.5}]))  # the file's dir
    (compare / "recipe.yaml").write_text("compare:\n  models: [s=runs/small]\n")
    return studio, TestClient(build_app(studio, schedule=False))


def front_of(page: str) -> list[str]:
    listed = page.split('<ul id="pareto-front">', 1)[1].split("</ul>", 1)[0]
    return re.findall(r'<a href="/models/([^"]+)">', listed)


def drawn(page: str) -> dict[str, bool]:
    """Each point in the SVG: its model and whether it is drawn as on the front."""
    return {name: kind == "point front" for kind, name in re.findall(r'<circle class="(point(?: front)?)" data-name="([^"]+)"', page)}


def test_the_pareto_front_is_the_models_no_other_beats_on_size_and_quality(tmp_path):
    _, c = studio_with_models(tmp_path)
    page = c.get("/models").text
    # The default figure: the one most models carry (eval's held-out loss: 3 models; validation loss: 2).
    selected = re.search(r"<option selected>([^<]+)</option>", page).group(1)
    assert selected == "held-out loss on heldout.jsonl"
    assert "Lower is better" in page
    # Lower loss is better: small (1 MiB, 2.0) and big (8 MiB, 1.5) are on the front; mid (3 MiB, 2.5) is beaten
    # by small on both.
    assert front_of(page) == ["runs/small", "runs/big"]
    assert drawn(page) == {"runs/small": True, "runs/mid": False, "runs/big": True}
    assert "Not measured (held-out loss on heldout.jsonl): <code>runs/unmeasured</code>" in page
    assert "runs/small · 42.5 tok/s (torch)" in page  # measured speed, only where a compare run measured it
    assert "runs/big · 9.5 tok/s (llama.cpp)" in page  # measured on the GGUF file in big's directory
    assert page.count("tok/s (") == 4  # each in the chart and in the front's list: mid has no speed

    # Higher accuracy is better (the 0-shot rows, not the 3-shot ones): mid beats big on both, small is smallest.
    accuracy = c.get("/models", params={"metric": "accuracy, 0-shot, on heldout.jsonl"}).text
    assert "Higher is better" in accuracy
    assert front_of(accuracy) == ["runs/small", "runs/mid"]
    assert "0.5</li>" in accuracy  # mid's 0-shot accuracy, not its 3-shot 0.53
    validation = c.get("/models", params={"metric": "validation loss (each run's own split)"}).text
    assert front_of(validation) == ["runs/small", "runs/mid"]
    missing = validation.split('id="pareto-missing">', 1)[1].split("</p>", 1)[0]
    assert sorted(re.findall(r"<code>([^<]+)</code>", missing)) == ["runs/big", "runs/unmeasured"]


def test_a_studio_with_no_figures_says_how_to_get_them(tmp_path):
    studio = Studio(tmp_path / "studio")
    fake_model(studio.data_dir, "a", 0.1)
    page = TestClient(build_app(studio, schedule=False)).get("/models").text
    assert 'id=pareto-none' in page and "seedbed eval" in page and "<svg" not in page


def test_pareto_front_ties_and_direction():
    assert pareto_front({"a": (1, 1.0), "b": (1, 1.0)}, lower_is_better=True) == ["a", "b"]  # equal: neither beats
    assert pareto_front({"a": (1, 1.0), "b": (1, 0.5)}, lower_is_better=True) == ["b"]  # same size, better
    assert pareto_front({"a": (1, 1.0), "b": (1, 0.5)}, lower_is_better=False) == ["a"]
    assert pareto_front({}, lower_is_better=True) == []


def test_compare_shows_lineage_only_the_differing_recipe_fields_and_eval_tables_side_by_side(tmp_path):
    studio, c = studio_with_models(tmp_path)
    d = studio.data_dir
    fake_model(d, "q8", 0.5, recipe="quantize:\n  model: runs/big\n  method: int8\n")
    (d / "runs" / "small" / "recipe.yaml").write_text("finetune:\n  base: /models/tiny\n  lr: 0.001\n  lora_r: 8\n")
    (d / "runs" / "mid" / "README.md").write_text(
        "---\ntags: [seedbed]\n---\n# mid\n\n<!-- seedbed eval: begin ... -->\n## Evaluation\n\n"
        "| model | accuracy |\n|---|---|\n| mid | 0.77 |\n<!-- seedbed eval: end -->\n\nAfter the table.\n")
    # The models page's checkboxes post to /compare.
    models = c.get("/models").text
    assert 'id="compare-form" action="/compare"' in models and 'name="model" value="runs/small" form="compare-form"' in models
    page = c.get("/compare", params=[("model", "runs/small"), ("model", "runs/mid"), ("model", "runs/q8")])
    assert page.status_code == 200
    html = page.text
    lineage = html.split("id=compare-lineage>", 1)[1].split("</table>", 1)[0]
    assert "<code>runs/big</code> ─▶ <code>runs/q8</code>" in lineage  # the quantized model traced to its source
    assert "<code>/models/tiny</code> ─▶ <code>runs/small</code>" in lineage
    diff = html.split('id="recipe-diff">', 1)[1].split("</table>", 1)[0]
    differing = re.findall(r"<tr><th><code>([^<]+)</code></th>((?:<td>[^<]*</td>)+)</tr>", diff)
    cells = {name: re.findall(r"<td>([^<]*)</td>", row) for name, row in differing}
    assert cells == {"made by": ["finetune", "finetune", "quantize"], "base": ["/models/tiny", "/models/tiny", "(not set)"],
                     "lr": ["0.001", "0.0002", "(not set)"], "lora_r": ["8", "(not set)", "(not set)"],
                     "model": ["(not set)", "(not set)", "runs/big"], "method": ["(not set)", "(not set)", "int8"]}
    # small and mid alone: their recipes differ only in lr and lora_r; made by and base are the same, counted.
    pair = c.get("/compare", params=[("model", "runs/small"), ("model", "runs/mid")]).text
    assert re.findall(r"<tr><th><code>([^<]+)</code>", pair.split('id="recipe-diff">', 1)[1].split("</table>")[0]) == ["lr", "lora_r"]
    assert "2 fields the same in every recipe, not shown" in pair
    figures = html.split('id="compare-figures">', 1)[1].split("</table>", 1)[0]
    held_out = re.search(r"<th>held-out loss on heldout.jsonl</th>(.*?)</tr>", figures).group(1)
    assert held_out == "<td><b>2</b></td><td>2.5</td><td class=meta>not measured</td>"  # lower is better: small's
    assert "<td>42.5</td>" in figures and "<td>9.5</td>" not in figures  # big is not compared here
    cards = html.split('id="compare-cards">', 1)[1]
    assert cards.index('data-model="runs/small"') < cards.index('data-model="runs/mid"') < cards.index('data-model="runs/q8"')
    assert "<td>0.77</td>" in cards and "After the table" not in cards and "No eval table in its card" in cards


def test_compare_needs_two_registered_models(tmp_path):
    _, c = studio_with_models(tmp_path)
    one = c.get("/compare", params={"model": "runs/small"})
    assert one.status_code == 400 and "pick two or more models to compare (1 picked)" in one.text
    unknown = c.get("/compare", params=[("model", "runs/small"), ("model", "runs/nope")])
    assert unknown.status_code == 400 and "no registered model <code>runs/nope</code>" in unknown.text
