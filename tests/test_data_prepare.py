"""`seedbed data prepare` end to end: a file mixing planted PII, duplicates, toxic, non-English and
contaminated records; every record accounted for; the datasheet renders in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from seedbed.cli import app
from seedbed.curate.prepare import prepare
from seedbed.recipe import DataRecipe

TOPICS = ["volcanoes", "bread baking", "tax law", "chess openings", "river ecology", "bicycle repair", "jazz history",
          "solar panels", "bee keeping", "knitting", "glaciers", "printing presses", "tea ceremonies", "satellites",
          "coral reefs", "sourdough", "roman roads", "cloud computing", "origami", "lighthouses"]
EVAL_QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?")


def _clean(i: int, topic: str) -> dict:
    return {"id": f"r{i}", "category": "open_qa" if i % 3 else "brainstorming",
            "instruction": f"Tell me about {topic}, and explain why it matters to the people who study it.",
            "response": f"{topic.capitalize()} is a subject with a long history. Experts say that the details of "
                        f"{topic} have changed over the years, and that it is worth learning about for record {i}."}


def planted_records() -> tuple[list[dict], dict[str, str]]:
    """Records, and the expected drop reason of each planted bad one (by id)."""
    records = [_clean(i, topic) for i, topic in enumerate(TOPICS)]
    expected = {}
    records.append({**records[0], "id": "dup-exact"})  # same text as r0, different id
    expected["dup-exact"] = "exact_dedup:duplicate"
    near = dict(records[1], id="dup-near")
    near["response"] = near["response"].replace("a long history", "a very long history")
    records.append(near)
    expected["dup-near"] = "near_dedup:near_duplicate"
    records.append({"id": "toxic", "text": "You are a fucking idiot and everyone in this town knows that about you."})
    expected["toxic"] = "toxicity:profanity"
    records.append({"id": "french", "text": "Le chat est assis sur le tapis et il regarde la télévision avec ses amis."})
    expected["french"] = "language:fr"
    records.append({"id": "leak", "question": EVAL_QUESTION, "answer": "Natalia sold 48/2 = 24 clips in May. #### 72"})
    expected["leak"] = "decontaminate:13gram_overlap"
    records.append({"id": "short", "text": "ok"})
    expected["short"] = "quality:too_short"
    records.append({"id": "pii", "text": "Please email jane.roe@example.org or call +1 415-555-0132 about the order, "
                                         "and pay with card 4111 1111 1111 1111 when the invoice arrives."})
    return records, expected


@pytest.fixture()
def planted(tmp_path):
    records, expected = planted_records()
    raw = write_jsonl(tmp_path / "raw.jsonl", records)
    heldout = write_jsonl(tmp_path / "heldout.jsonl", [{"question": EVAL_QUESTION, "answer": "#### 72"}])
    return raw, heldout, records, expected


def _outputs(out):
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    return read("train.jsonl"), read("validation.jsonl"), read("dropped.jsonl"), json.loads((out / "report.json").read_text())


def test_prepare_accounts_for_every_record(planted, tmp_path):
    raw, heldout, records, expected = planted
    out = tmp_path / "clean"
    recipe = DataRecipe(inputs=[str(raw)], out=str(out), workers=2, decontaminate={"eval_sets": [str(heldout)]},
                        split={"validation_fraction": 0.2})
    report = prepare(recipe)
    train, validation, dropped, on_disk = _outputs(out)
    assert on_disk == report

    # every planted record dropped for its reason, nothing else dropped
    assert {d["id"]: d["reason"] for d in dropped} == expected
    # counts reconcile: overall, per stage, and from one stage to the next
    assert report["input_records"] == len(records) == report["kept"]["total"] + report["dropped"]["total"]
    assert report["kept"]["train"] == len(train) and report["kept"]["validation"] == len(validation)
    assert report["dropped"]["total"] == len(dropped)
    previous_out = report["input_records"]
    for stage in report["stages"]:
        assert stage["records_in"] == previous_out, stage["name"]
        assert stage["records_out"] == stage["records_in"] - stage["dropped"] == previous_out - stage["dropped"]
        assert sum(stage["reasons"].values()) == stage["dropped"]
        previous_out = stage["records_out"]
    assert previous_out == report["kept"]["total"]
    # ids: outputs + dropped = inputs, disjoint; outputs keep their shape
    out_ids = [r["id"] for r in train + validation]
    assert sorted(out_ids + [d["id"] for d in dropped]) == sorted(r["id"] for r in records)
    assert all("instruction" in r and "response" in r for r in train if r["id"].startswith("r"))
    # PII redacted with typed placeholders, and counted
    pii = next(r for r in train + validation if r["id"] == "pii")["text"]
    assert "jane.roe@example.org" not in pii and "4111" not in pii and "555-0132" not in pii
    assert "<EMAIL>" in pii and "<CREDIT_CARD>" in pii and "<PHONE>" in pii
    assert report["redactions"]["EMAIL"] == 1 and report["redactions"]["CREDIT_CARD"] == 1
    # stratified split: both categories appear in validation
    assert {r.get("category") for r in validation} >= {"open_qa", "brainstorming"}
    assert report["duplicates"]["exact_clusters"] == 1 and report["duplicates"]["near_clusters"] == 1
    assert (out / "recipe.yaml").read_text().startswith("data:")
    assert not list(out.parent.glob(f".{out.name}.*"))  # its work folder took OUT's place, nothing left beside it


def test_same_result_with_one_or_two_workers(planted, tmp_path):
    raw, heldout, _, _ = planted
    results = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        prepare(DataRecipe(inputs=[str(raw)], out=str(out), workers=workers, chunk_size=7,
                           decontaminate={"eval_sets": [str(heldout)]}))
        results.append([(out / n).read_text() for n in ("train.jsonl", "validation.jsonl", "dropped.jsonl")])
    assert results[0] == results[1]


def test_cli_prepare_and_datasheet_in_chromium(planted, tmp_path):
    raw, heldout, _, _ = planted
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["data", "prepare", str(raw), "--out", str(out), "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and "report.html" in result.output
    html = (out / "report.html").read_text()
    assert "toxicity:profanity" in html and "jane.roe@example.org" not in html
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (README's test command installs it)")
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1800", f"--screenshot={shot}",
                    (out / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 30_000  # a rendered page with charts, not a blank one


def test_malformed_input_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "hi", "response": "hello there"}) + "\n"
                   + json.dumps({"instruction": "hi", "response": 42}) + "\n{not json\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["data", "prepare", str(bad), "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    said = " ".join(result.output.split())  # rich wraps long lines
    assert f"{bad}:2: field 'response': expected text" in said and f"{bad}:3: field '-': invalid JSON" in said
    assert not (out / "train.jsonl").exists()


def test_a_record_a_stage_cannot_process_is_dropped_with_its_reason(planted, tmp_path, monkeypatch):
    raw, _, records, _ = planted
    import seedbed.curate.stages as stages

    real = stages.check_record

    def fragile(item, config, *args):
        if "bee keeping" in stages.text_of(item).lower():
            raise ValueError("cannot score this one")
        return real(item, config, *args)

    monkeypatch.setattr(stages, "check_record", fragile)
    report = prepare(DataRecipe(inputs=[str(raw)], out=str(tmp_path / "o"), workers=1))
    dropped = [json.loads(line) for line in (tmp_path / "o" / "dropped.jsonl").read_text().splitlines()]
    error = [d for d in dropped if d["reason"] == "quality:error"]
    assert len(error) == 1 and "cannot score this one" in error[0]["detail"]
    assert report["input_records"] == report["kept"]["total"] + report["dropped"]["total"] == len(records)


def test_balance_caps_categories_and_never_oversamples_by_default(tmp_path):
    records = [_clean(i, TOPICS[i % 20]) for i in range(60)]
    raw = write_jsonl(tmp_path / "raw.jsonl", records)
    base = dict(inputs=[str(raw)], workers=1, pii={"names": False}, dedup={"near": False})
    report = prepare(DataRecipe(out=str(tmp_path / "a"), balance={"max_per_category": 15}, **base))
    after = report["histograms"]["category_after"]
    assert after == {"open_qa": 15, "brainstorming": 15}
    assert report["dropped"]["by_reason"] == {"balance:category_cap": 30}
    report = prepare(DataRecipe(out=str(tmp_path / "b"), balance={"min_per_category": 60, "max_repeat": 2}, **base))
    assert report["kept"]["train_upsampled_copies"] > 0
    lines = (tmp_path / "b" / "train.jsonl").read_text().splitlines()
    assert max(lines.count(line) for line in lines) == 2  # never more than max_repeat copies


def test_ray_engine_gives_the_same_result(planted, tmp_path):
    pytest.importorskip("ray")
    raw, heldout, _, _ = planted
    results = []
    for engine in ("local", "ray"):
        out = tmp_path / engine
        report = prepare(DataRecipe(inputs=[str(raw)], out=str(out), workers=2, engine=engine, chunk_size=10,
                                    decontaminate={"eval_sets": [str(heldout)]}))
        assert report["engine"] == engine
        results.append([(out / n).read_text() for n in ("train.jsonl", "validation.jsonl", "dropped.jsonl")])
    assert results[0] == results[1]


def test_a_run_killed_mid_way_leaves_the_last_output_and_a_rerun_writes_the_same(tmp_path):
    """kill -9 part-way through: OUT still holds the previous run whole, and the next run writes the same files."""
    import os
    import signal
    import sys
    import time

    records = [_clean(i, f"{TOPICS[i % 20]} number {i}") for i in range(3000)]
    raw = write_jsonl(tmp_path / "raw.jsonl", records)
    out = tmp_path / "out"
    settings = dict(inputs=[str(raw)], out=str(out), workers=1, chunk_size=100, pii={"names": False}, quiet=True)
    prepare(DataRecipe(**settings))
    names = ("train.jsonl", "validation.jsonl", "dropped.jsonl")
    first = {name: (out / name).read_bytes() for name in names}
    counts = json.loads((out / "report.json").read_text())["stages"]

    script = f"from seedbed.curate.prepare import prepare; from seedbed.recipe import DataRecipe; prepare(DataRecipe(**{settings!r}))"
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:  # kill once the work folder holds kept records
        spill = [p for p in tmp_path.glob(".out.tmp-*/kept.jsonl") if p.stat().st_size > 0]
        if spill:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert child.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert list(tmp_path.glob(".out.tmp-*"))  # it died mid-run, leaving its work folder
    assert {name: (out / name).read_bytes() for name in names} == first  # OUT untouched by the killed run

    prepare(DataRecipe(**settings))
    assert {name: (out / name).read_bytes() for name in names} == first
    again = json.loads((out / "report.json").read_text())["stages"]
    strip = [{k: v for k, v in s.items() if k not in ("seconds", "records_per_s")} for s in counts]
    assert [{k: v for k, v in s.items() if k not in ("seconds", "records_per_s")} for s in again] == strip
    assert not list(tmp_path.glob(".out.*"))  # the killed run's work folder is gone
