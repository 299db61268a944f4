"""The Models page: one click serves a model (a `seedbed serve` job beside the queue, its URL shown, answered by the
official openai SDK), the model card with its eval table as HTML, and a prepare job's datasheet in its page."""

from __future__ import annotations

import json

import openai
import pytest
from fastapi.testclient import TestClient

from conftest import wait_for

from seedbed.studio.app import Studio, build_app
from seedbed.studio.verbs import build_recipe



def answers(url: str):
    try:
        return openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=5).models.list().data
    except openai.APIConnectionError:
        return None


def test_one_click_serves_a_model_beside_the_queue(tmp_path, tiny_model):
    studio = Studio(tmp_path / "studio")
    model_dir = studio.data_dir / "runs" / "tiny"
    model_dir.mkdir(parents=True)
    for f in tiny_model.iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    (model_dir / "recipe.yaml").write_text(f"finetune:\n  base: {tiny_model}\n")
    c = TestClient(build_app(studio, schedule=False))
    page = c.get("/models/runs/tiny").text
    assert 'id="serve-model"' in page and 'data-name="tiny"' in page
    # What the button posts: the studio picks a free port, not serve's default 8000.
    serve = c.post("/api/jobs", json={"verb": "serve", "fields": {"model": ["tiny=runs/tiny"]}}).json()
    served = studio.scheduler.store.get(serve["id"])
    port = json.loads(served.recipe)["port"]
    assert port != 8000
    queued = studio.scheduler.submit("quantize", build_recipe("quantize", {"model": "runs/tiny", "method": "int8",
                                                                          "out": "runs/q"}, studio.data_dir))
    try:
        studio.scheduler.tick()
        # The server runs until cancelled, so it does not hold the queue: the quantize job starts beside it.
        assert [studio.scheduler.store.get(i).state for i in (serve["id"], queued)] == ["running", "running"]
        url = f"http://127.0.0.1:{port}/v1"
        assert f'id="served-url" href="{url}/models"' in c.get(f"/jobs/{serve['id']}").text
        assert f'class="served-url" href="{url}/models"' in c.get("/models/runs/tiny").text
        models = wait_for(lambda: answers(url), timeout=180)
        assert [m.id for m in models] == ["tiny"]
        reply = openai.OpenAI(base_url=url, api_key="none", max_retries=0).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "What is 2 plus 2?"}], max_tokens=4)
        assert reply.choices[0].finish_reason in ("stop", "length")
        wait_for(lambda: studio.scheduler.tick() or studio.scheduler.store.get(queued).finished_or_failed)
        assert studio.scheduler.store.get(serve["id"]).state == "running"  # a finished queue leaves it serving
    finally:
        assert c.post(f"/api/jobs/{serve['id']}/cancel").json() == {"cancelled": True}
    wait_for(lambda: answers(url) is None, timeout=60)  # the server process is gone
    assert studio.scheduler.store.get(serve["id"]).state == "cancelled"


def test_the_model_card_is_html_with_its_eval_table_as_a_table(tmp_path):
    data_dir = tmp_path / "studio"
    ft = data_dir / "runs" / "ft"
    ft.mkdir(parents=True)
    (ft / "recipe.yaml").write_text("finetune:\n  base: /models/tiny\n")
    (ft / "config.json").write_text("{}")
    (ft / "README.md").write_text("# ft\n\n## Evaluation\n\n| model | shots | accuracy |\n|---|---|---|\n"
                                  "| tuned | 0 | 0.42 |\n\n<script>alert(1)</script>\n")
    page = TestClient(build_app(Studio(data_dir), schedule=False)).get("/models/runs/ft").text
    card = page.split('id="model-card">', 1)[1]
    assert "<table>" in card and "<td>0.42</td>" in card and "<th>accuracy</th>" in card
    assert "<script>alert" not in page and "&lt;script&gt;" in card  # a card's HTML is shown, never run


@pytest.mark.parametrize("state, shown", [("done", True), ("failed", False)])
def test_a_prepare_jobs_page_shows_its_datasheet(tmp_path, state, shown):
    studio = Studio(tmp_path / "studio")
    recipe = build_recipe("prepare", {"inputs": ["datasets/a.jsonl"], "out": "runs/data-a"}, studio.data_dir)
    job_id = studio.scheduler.submit("prepare", recipe)
    studio.scheduler.store.mark_running(job_id, 0)
    studio.scheduler.store.mark_finished(job_id, state, 0 if state == "done" else 1)
    page = TestClient(build_app(studio, schedule=False)).get(f"/jobs/{job_id}").text
    assert ('<iframe id="datasheet" src="/files/runs/data-a/report.html"' in page) == shown
