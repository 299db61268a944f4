"""Studio pages and their safety, fast (FastAPI's test client, no browser, no job process): the token, the
upload limit, the recipe preview, live curves from a run's progress log, the registry's lineage, the
leaderboard votes feed, and the refusal to listen beyond localhost without a token."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from seedbed.errors import SeedbedError
from seedbed.studio.app import Studio, build_app
from seedbed.studio.charts import loss_chart
from seedbed.studio.jobs import Scheduler
from seedbed.studio.playground import ABPairs
from seedbed.studio.server import check_exposure
from seedbed.studio.verbs import build_recipe

SRC = Path(__file__).parents[1] / "src"


def client(tmp_path, **kwargs) -> TestClient:
    return TestClient(build_app(Studio(tmp_path / "studio", **kwargs), schedule=False))


def test_without_a_token_off_localhost_the_studio_refuses_to_start(tmp_path):
    with pytest.raises(SeedbedError, match="host: 0.0.0.0 is reachable from other machines; give a token"):
        check_exposure("0.0.0.0", None)
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    check_exposure("0.0.0.0", "s3cret")
    done = subprocess.run([sys.executable, "-m", "seedbed.cli", "studio", "--data-dir", str(tmp_path), "--host",
                           "0.0.0.0", "--port", "1"], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    assert done.returncode == 2 and "give a token" in done.stderr, done.stderr
    assert not (tmp_path / "studio.sqlite").exists()  # refused before anything started


def test_with_a_token_every_request_needs_it(tmp_path):
    c = client(tmp_path, token="s3cret")
    assert c.get("/jobs").status_code == 401
    assert c.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.post("/api/jobs", json={"verb": "quantize", "fields": {}}).status_code == 401
    assert c.get("/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/jobs?token=s3cret").status_code == 200  # and sets the cookie the page's script rides on
    assert c.get("/datasets").status_code == 200
    stranger = client(tmp_path, token="s3cret")
    stranger.cookies.set("seedbed_studio_token", "nope")
    assert stranger.get("/jobs").status_code == 401


def test_uploads_are_limited_in_size_and_name(tmp_path):
    c = client(tmp_path, max_upload_bytes=1000)
    ok = c.put("/api/datasets/a.jsonl", content=b'{"text": "hello"}\n')
    assert ok.status_code == 200 and ok.json()["bytes"] == 18
    big = c.put("/api/datasets/b.jsonl", content=b"x" * 1001)
    assert big.status_code == 413 and "limit" in big.json()["error"]
    streamed = c.put("/api/datasets/c.jsonl", content=iter([b"x" * 600, b"x" * 600]))  # no length given up front
    assert streamed.status_code == 413
    assert c.put("/api/datasets/..%2Fescape.jsonl", content=b"{}").status_code in (404, 422)
    assert c.put("/api/datasets/run.sh", content=b"{}").status_code == 422
    assert sorted(p.name for p in (tmp_path / "studio" / "datasets").iterdir()) == ["a.jsonl"]  # no partial left


def test_the_form_is_the_recipe_and_a_bad_field_is_named(tmp_path):
    c = client(tmp_path)
    page = c.get("/jobs/new?verb=finetune&max_steps=7").text
    assert 'data-field="lora_r"' in page and 'value="7"' in page
    good = c.post("/api/recipe", json={"verb": "finetune", "fields": {"data": ["t.jsonl"], "lora_r": "8", "out": "runs/a"}})
    assert good.json()["command"] == "seedbed finetune --data t.jsonl --out runs/a --lora-r 8"
    assert good.json()["yaml"].startswith("finetune:\n")
    bad = c.post("/api/jobs", json={"verb": "finetune", "fields": {"lora_r": "eight"}})
    assert bad.status_code == 422 and "lora_r" in bad.json()["error"]
    assert c.post("/api/jobs", json={"verb": "shell", "fields": {}}).status_code == 422  # not a job verb
    assert not list((tmp_path / "studio").glob("jobs/*"))  # nothing queued


def test_a_jobs_page_draws_its_loss_curves_from_the_progress_log(tmp_path):
    studio = Studio(tmp_path / "studio")
    recipe = build_recipe("finetune", {"data": ["t.jsonl"], "out": "runs/ft"}, studio.data_dir)
    job_id = studio.scheduler.submit("finetune", recipe)
    studio.scheduler.store.mark_running(job_id, 0)
    log = studio.data_dir / "runs" / "ft" / "progress.jsonl"
    log.parent.mkdir(parents=True)
    events = [{"event": "begin", "step": 0, "max_steps": 10, "elapsed_s": 0},
              {"step": 0, "max_steps": 10, "eval_loss": 3.0, "elapsed_s": 1.0, "tokens_per_s": 100.0},
              {"step": 2, "max_steps": 10, "loss": 2.5, "elapsed_s": 4.0, "tokens_per_s": 120.0},
              {"step": 4, "max_steps": 10, "loss": 1.5, "elapsed_s": 8.0, "tokens_per_s": 125.0}]
    log.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"step": 5, "lo')  # a line being written
    c = TestClient(build_app(studio, schedule=False))
    page = c.get(f"/jobs/{job_id}").text
    assert "step 4 / 10" in page and "125 tokens/s" in page and "ETA 0m12s" in page
    assert re.search(r'data-name="train"[^>]*points="[\d., ]+"', page) and 'data-name="validation"' in page
    assert "seedbed finetune --data t.jsonl --out runs/ft" in page
    assert c.get(f"/api/jobs/{job_id}").json()["train"] == [[2, 2.5], [4, 1.5]]


def test_the_loss_chart_is_log_scale():
    svg = loss_chart({"train": [(0, 10.0), (1, 1.0), (2, 0.1)]})
    ys = [float(p.split(",")[1]) for p in re.search(r'points="([^"]+)"', svg).group(1).split()]
    assert ys[0] < ys[1] < ys[2] and abs((ys[1] - ys[0]) - (ys[2] - ys[1])) < 0.2  # equal steps per factor of 10
    assert "No loss logged yet" in loss_chart({"train": []})
    narrow = loss_chart({"train": [(0, 5.94), (24, 5.34)]})  # no round value in range: the ends are labelled
    assert ">5.34</text>" in narrow and ">5.94</text>" in narrow


def test_the_registry_traces_a_quantized_model_to_its_base_and_data(tmp_path):
    data_dir = tmp_path / "studio"
    ft, q = data_dir / "runs" / "ft", data_dir / "runs" / "ft-q8_0"
    for d in (ft, q):
        d.mkdir(parents=True)
    (ft / "recipe.yaml").write_text("finetune:\n  base: /models/tiny\n  method: lora\n")
    (ft / "config.json").write_text("{}")
    (ft / "metrics.json").write_text(json.dumps({"data_files": [{"path": "t.jsonl", "sha256": "ab" * 32, "records": 9}],
                                                 "val": [{"step": 0, "loss": 3.0}, {"step": 9, "loss": 1.25}]}))
    (q / "recipe.yaml").write_text("quantize:\n  model: runs/ft\n  method: q8_0\n")
    (q / "model.gguf").write_bytes(b"GGUF")
    c = client(tmp_path)
    listing = c.get("/models").text
    assert "runs/ft-q8_0" in listing and "1.2500" in listing and "abababababab" in listing
    page = c.get("/models/runs/ft-q8_0").text
    assert re.search(r"/models/tiny</code> ─▶ <code>runs/ft</code> ─▶ <code>runs/ft-q8_0", page)
    assert 'id="export-gguf"' not in page  # already a GGUF
    assert 'id="export-gguf"' in c.get("/models/runs/ft").text


def test_votes_feed_a_bradley_terry_leaderboard_and_the_evaluation_store(tmp_path):
    pairs = ABPairs(tmp_path)
    assert pairs.leaderboard() == []
    for _ in range(3):
        shown = pairs.new("2+2?", ("tuned", "base"), {"tuned": "4", "base": "22"})
        pairs.vote(shown["id"], "A" if shown["A"] == "4" else "B")
    board = pairs.leaderboard()
    assert [r["model"] for r in board] == ["tuned", "base"] and board[0]["rating"] > 1000 > board[1]["rating"]
    assert board[0]["low"] <= board[0]["rating"] <= board[0]["high"] and board[0]["votes"] == 3
    with pytest.raises(SeedbedError, match="no such pair"):
        pairs.vote(shown["id"], "A")  # voted already
    lines = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and {line["judge"] for line in lines} == {"human"}
    assert {line["winner"] for line in lines} <= {"A", "B"}
    after = ABPairs(tmp_path).leaderboard()  # votes persist
    assert [r["model"] for r in after] == ["tuned", "base"]


def test_the_progress_file_name_is_the_trainers(tmp_path):
    from seedbed.studio.progress import PROGRESS_FILE
    from seedbed.train.callbacks import PROGRESS_FILE as WRITTEN

    assert PROGRESS_FILE == WRITTEN
