"""report.html, the datasheet of `seedbed data prepare`: the numbers are all there, user text is escaped, a
thin report still renders, and a real headless browser draws it."""

from __future__ import annotations

import copy
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from seedbed.curate.datasheet import render_datasheet

STAGES = [  # (name, dropped, modified, reasons): 1,200 in, 950 out, as a real run of prepare reports it
    ("normalise", 0, 300, {}),
    ("pii", 0, 142, {}),
    ("toxicity", 20, 0, {"hate": 5, "profanity": 15}),
    ("quality", 40, 0, {"too_short": 12, "symbol_ratio": 28}),
    ("language", 30, 0, {"fr": 20, "uncertain": 10}),
    ("decontaminate", 10, 0, {"13gram": 10}),
    ("exact_dedup", 100, 0, {"duplicate": 100}),
    ("near_dedup", 40, 0, {"near_duplicate": 40}),
    ("balance", 10, 0, {"category_cap": 10}),
    ("split", 0, 0, {}),
]


def full_report(enabled: list = STAGES) -> dict:
    stages, n = [], 1200
    for name, dropped, modified, reasons in enabled:
        stages.append({"name": name, "records_in": n, "records_out": n - dropped, "dropped": dropped,
                       "modified": modified, "reasons": reasons, "seconds": 0.25, "records_per_s": n / 0.25})
        n -= dropped
    return {
        "seedbed_version": "0.1.0", "created": "2026-11-23T10:00:00Z", "engine": "local", "workers": 2,
        "inputs": [{"path": "raw.jsonl", "sha256": "ab12cd34ef56" + "0" * 52, "records": 1200,
                    "shapes": {"dolly": 1000, "text": 200}}],
        "input_records": 1200,
        "kept": {"train": 900, "validation": 50, "total": 950},
        "dropped": {"total": 250,
                    "by_stage": {name: d for name, d, _, _ in STAGES if d},
                    "by_reason": {f"{name}:{r}": c for name, _, _, reasons in STAGES for r, c in reasons.items()}},
        "stages": stages,
        "redactions": {"EMAIL": 40, "PHONE": 22, "PERSON": 80},
        "duplicates": {"exact_clusters": 60, "near_clusters": 25, "largest": [
            {"kept": "id-1", "dropped": ["id-7", "id-9"], "similarity": 0.93, "kind": "near"},
            {"kept": "id-2", "dropped": [f"id-{i}" for i in range(100, 112)], "similarity": 1.0, "kind": "exact"}]},
        "histograms": {
            "category_before": {"open_qa": 300, "brainstorming": 600, "classification": 300},
            "category_after": {"open_qa": 280, "brainstorming": 420, "classification": 250},
            "language": {"en": 1150, "fr": 20, "uncertain": 30},
            "length_chars": {"edges": [0, 100, 200, 400, 800, 1600, 3200],
                             "before": [110, 220, 380, 290, 150, 50], "after": [70, 190, 330, 240, 95, 25]},
            "toxicity_max": {"edges": [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                             "counts": [900, 150, 60, 30, 20, 15, 8, 7, 6, 4]}},
        "examples": {
            "toxicity:hate": [{"id": "r12", "text": "<script>alert('owned')</script> you people are [PERSON]"}],
            "quality:too_short": [{"id": "r40", "text": "ok"}, {"id": "r41", "text": "yes."}],
            "language:fr": [{"id": "r77", "text": "Quelle est la capitale de la France ?"}]},
        "split": {"validation_fraction": 0.05, "seed": 42, "stratify_by": "category"},
        "seconds": 3.2, "records_per_s": 375.0,
        "recipe": {"data": {"inputs": ["raw.jsonl"], "quality": {"min_words": 3}, "near_dedup": {"threshold": 0.8}}},
    }


def test_the_datasheet_shows_every_count_and_reason():
    page = render_datasheet(full_report())
    assert "✓ 1,200 in = 950 kept + 250 dropped" in page
    assert "✗" not in page
    for text in ["raw.jsonl", "dolly 1,000", "train 900", "validation 50", "20.8% of input",
                 "toxicity:hate", "quality:symbol_ratio", "near_dedup:near_duplicate", "balance:category_cap",
                 "EMAIL", "PERSON", "open_qa", "brainstorming", "uncertain", "800–1,600",
                 "exact clusters 60", "near clusters 25", "id-7", "… and 4 more",
                 "Quelle est la capitale", "stratify by <code>category</code>", "threshold: 0.8"]:
        assert text in page, text
    for name, *_ in STAGES:
        assert f"<td>{name}</td>" in page, name
    # the stage row for quality: 1,180 in, 1,140 out, 40 dropped
    assert '<td>quality</td><td class="n">1,180</td><td class="n">1,140</td><td class="n">40</td>' in page
    assert page.count("<svg") >= 8  # funnel, 2 drop charts, category, length, language, toxicity, redactions
    assert "<script" not in page and "http" not in page  # no script, nothing fetched: it must open offline


def test_user_text_in_examples_is_escaped():
    report = full_report()
    report["examples"]["<b>reason</b>"] = [{"id": "<img src=x onerror=alert(1)>", "text": "</pre><script>x()</script>"}]
    report["histograms"]["category_after"]["<i>cat</i>"] = 3
    page = render_datasheet(report)
    assert "<script>" not in page and "<img" not in page and "<i>cat" not in page and "<b>reason" not in page
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_counts_that_do_not_add_up_are_flagged_loudly():
    report = full_report()
    report["dropped"]["total"] = 240
    report["stages"][3]["records_out"] = 1145  # quality: 1,180 − 40 ≠ 1,145, and language's input ≠ 1,145
    page = render_datasheet(report)
    assert "✗ THE COUNTS DO NOT ADD UP" in page
    assert "10 records unaccounted for" in page
    assert "stage quality: 1,180 in − 40 dropped ≠ 1,145 out" in page
    assert "stage language: 1,140 in ≠ 1,145 out of the stage before" in page
    assert page.count('<tr class=broken>') == 2


@pytest.mark.parametrize("drop", [
    ["histograms", "examples", "duplicates", "redactions"],
    ["histograms", "examples", "duplicates", "redactions", "stages", "inputs", "recipe", "split", "kept", "dropped"],
])
def test_a_report_with_missing_sections_renders_what_is_there(drop):
    report = full_report()
    for key in drop:
        del report[key]
    page = render_datasheet(report)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "could not be drawn" not in page
    assert "Duplicate clusters" not in page and "Examples of removed records" not in page
    assert ("<h2>Stages</h2>" in page) == ("stages" not in drop)
    if "kept" in drop:
        assert "? Not reconciled" in page


def test_disabled_stages_are_simply_absent():
    enabled = [stage for stage in STAGES if stage[0] not in ("pii", "toxicity")]
    report = full_report(enabled)
    report["kept"] = {"train": 918, "validation": 52, "total": 970}
    report["dropped"]["total"] = 230
    page = render_datasheet(report)
    assert "<td>toxicity</td>" not in page and "<td>pii</td>" not in page
    assert '<td>quality</td><td class="n">1,200</td><td class="n">1,160</td>' in page
    assert "✓ 1,200 in = 970 kept + 230 dropped" in page and "✗" not in page


@pytest.mark.parametrize("report", [
    {}, None, {"stages": "oops", "histograms": [1, 2], "kept": {"total": "many"}},
    {"stages": [None, {"name": "pii"}], "examples": {"x": None}, "duplicates": {"largest": [None, 3]},
     "histograms": {"length_chars": {"before": [1, 2, 3]}, "toxicity_max": {"counts": [1]}}},
])
def test_malformed_reports_never_crash(report):
    page = render_datasheet(copy.deepcopy(report))
    assert "</html>" in page


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """(width, height, filtered scanlines) of a PNG, read with zlib alone since PIL is not a dependency."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, idat, at = 0, 0, b"", 8
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        chunk = data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        at += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian chromium (apt install chromium) for the browser test")
def test_headless_chromium_draws_the_datasheet(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_datasheet(full_report()), encoding="utf-8")
    browser = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", "--hide-scrollbars"]
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=60, check=True)
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1200, 2000)
    # a blank page compresses to almost nothing and its scanlines hold a handful of distinct bytes
    assert shot.stat().st_size > 50_000
    assert len(set(pixels)) > 200

    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert "<th>records/s</th>" in dom and "<td>near_dedup</td>" in dom
    assert "✓ 1,200 in = 950 kept + 250 dropped" in dom
    assert "&lt;script&gt;alert" in dom  # still text after the browser parsed it, never a script element
