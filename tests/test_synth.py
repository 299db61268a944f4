"""`seedbed data synth` against a scripted OpenAI-compatible teacher (each filter, rate limit, resume after a
kill, lineage) and against `seedbed serve` running a tiny model (end to end, through data prepare)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import running_server
from seedbed.data.synth import Filters, parse_tasks
from seedbed.data.teacher import RateLimiter
from seedbed.recipe import SynthRecipe

SEED_TASK = "Is there anything I can eat for a breakfast that doesn't include eggs, yet includes protein, and has roughly 700-1000 calories?"


def scripted_teacher(delay_s: float = 0.0):
    """A FastAPI app that answers like a teacher: each list of new tasks has one novel task and one of each kind
    the filters must drop; each answer names its task. Counts the requests it got."""
    from fastapi import FastAPI

    app = FastAPI()
    app.state.calls = itertools.count()
    app.state.lists = itertools.count()
    novel = ["Explain how tides are caused by the moon and the sun.",
             "Suggest three names for a bakery that sells only bread.",
             "Convert the temperature of a warm spring day from Celsius to Fahrenheit.",
             "Give a short argument for planting trees along city streets.",
             "Rewrite a formal complaint letter so that it sounds friendly.",
             "Classify these fruits by colour: banana, cherry, lime, plum.",
             "Outline the steps to change a flat bicycle tyre.",
             "Compose a limerick about a forgetful wizard.",
             "Estimate how many footballs would fit inside a school bus.",
             "Recommend a beginner workout routine that takes twenty minutes.",
             "Summarise the plot of Romeo and Juliet for a child.",
             "Translate the phrase good morning into Spanish and German."]
    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "scripted", "object": "model"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        time.sleep(delay_s)
        n = next(app.state.calls)
        asked = body["messages"][-1]["content"]
        if asked.startswith("Come up with a series of tasks:"):
            text = "\n".join([
                novel[next(app.state.lists) % len(novel)],
                "Task 10: Say hello.",  # too short
                "Task 11: Draw a picture of a lighthouse at dusk with soft colours.",  # keyword
                f"Task 12: {SEED_TASK}",  # a seed, word for word: ROUGE-L 1.0
                "Task 13: Write a program that sorts a list of numbers quickly.",  # Alpaca's program filter
                "Task 14: " + "word " * 200,  # too long
                "Task 15: ...and then list three rivers of Europe please.",  # leading punctuation
            ])
        else:
            text = f"An answer to: {asked}"
        return {"id": f"c{n}", "object": "chat.completion", "created": 0, "model": "scripted",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


def test_parse_numbered_tasks():
    assert parse_tasks("  Summarise the text.\n\nTask 10: Name\nthree cities.\n11) Count to ten.\nTask 12:") == [
        "Summarise the text.", "Name three cities.", "Count to ten."]


@pytest.mark.parametrize("task,reason", [
    ("Say hello.", "too_short"),
    ("word " * 151, "too_long"),
    ("Draw a map of the city centre for tourists.", "keyword"),
    ("Describe this video of a cat chasing a laser.", "keyword"),
    ("...then describe the weather in three sentences.", "starts_with_punctuation"),
    ("Élaborez une liste de trois fleuves européens.", "starts_non_ascii"),
    ("Write a program to add two large integers together.", "program"),
    (SEED_TASK, "similar"),
    (SEED_TASK.replace("eggs", "milk"), "similar"),  # one word changed: ROUGE-L still ~0.96
    ("Suggest a protein-rich breakfast without eggs, around 800 calories.", None),  # same topic, new words
])
def test_each_filter(task, reason):
    filters = Filters(SynthRecipe(), [SEED_TASK, "Name three colours of the rainbow."])
    got, detail = filters.reason(" ".join(task.split()) if reason != "too_long" else task.strip())
    assert got == reason, detail
    if reason == "similar":
        assert detail["similar_to"] == SEED_TASK and detail["rouge_l"] >= 0.7
    if reason is None:
        assert detail["rouge_l"] < 0.7


def test_a_kept_task_joins_the_pool():
    filters = Filters(SynthRecipe(), ["Name three colours of the rainbow."])
    task = "List four mammals that live in the Arctic tundra."
    assert filters.reason(task)[0] is None
    filters.add(task)
    assert filters.reason(task)[0] == "similar"


def test_rate_limiter_spaces_requests():
    now = [0.0]
    slept = []
    limiter = RateLimiter(4, clock=lambda: now[0], sleep=slept.append)
    for _ in range(5):
        limiter.wait()
    assert slept == pytest.approx([0.25, 0.5, 0.75, 1.0])  # all asked at t=0: slots 0.25 s apart
    real = RateLimiter(20)
    start = time.perf_counter()
    for _ in range(5):
        real.wait()
    assert time.perf_counter() - start >= 0.19


def test_synth_filters_keeps_and_records_lineage(tmp_path):
    from seedbed.data.synth import synth

    app = scripted_teacher()
    with running_server(app) as url:
        result = synth(SynthRecipe(teacher_url=url + "/v1", target=3, out=str(tmp_path / "s"), licence="CC-BY-4.0",
                                   requests_per_s=0, quiet=True))
    r = result.report
    assert r["kept"] == 3 and r["rounds"] == 3 and r["reached_target"]
    assert r["candidates"] == r["kept"] + r["rejected"] == 21
    # rounds 1 and 2: one keeper and one of each filtered kind; round 3's keeper reaches the target, and the
    # candidates after it are counted as over_target, not silently skipped
    assert r["rejected_by_reason"] == {"too_short": 2, "keyword": 2, "similar": 2, "program": 2, "too_long": 2,
                                       "starts_with_punctuation": 2, "over_target": 6}
    kept = [json.loads(line) for line in (tmp_path / "s" / "synth.jsonl").read_text().splitlines()]
    rejected = (tmp_path / "s" / "rejected.jsonl").read_text().splitlines()
    assert len(kept) == 3 and len(rejected) == 18 and len({k["instruction"] for k in kept}) == 3
    for record in kept:
        lineage = record["lineage"]
        assert lineage["teacher_model"] == "scripted" and lineage["teacher_url"] == url + "/v1"
        assert lineage["licence"] == "CC-BY-4.0" and lineage["prompt"].startswith("Come up with a series of tasks:")
        assert record["output"] == f"An answer to: {record['instruction']}"
    assert r["prepared"]["kept"]["total"] + r["prepared"]["dropped"] == 3
    assert (tmp_path / "s" / "prepared" / "train.jsonl").is_file()


def test_resume_after_kill(tmp_path):
    """Killed mid-run, synth resumes: the finished rounds stay, the cut one is asked again, nothing is doubled."""
    app = scripted_teacher(delay_s=0.15)
    out = tmp_path / "s"
    argv = [sys.executable, "-m", "seedbed.cli", "data", "synth", "--target", "6", "--out", str(out),
            "--requests-per-s", "0", "--no-prepare", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    with running_server(app) as url:
        proc = subprocess.Popen(argv + ["--teacher-url", url + "/v1"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "rounds.jsonl").is_file():
            time.sleep(0.1)
        time.sleep(0.5)  # into the next round
        proc.kill()
        proc.wait()
        done_before = len((out / "rounds.jsonl").read_text().splitlines())
        assert 1 <= done_before < 6
        finished = subprocess.run(argv + ["--teacher-url", url + "/v1"], env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    kept = [json.loads(line) for line in (out / "synth.jsonl").read_text().splitlines()]
    assert len(kept) == 6 and len({k["instruction"] for k in kept}) == 6
    assert sorted(k["lineage"]["round"] for k in kept) == list(range(6))
    report = json.loads((out / "synth_report.json").read_text())
    assert report["candidates"] == report["kept"] + report["rejected"] == 6 * 7


def test_refuses_without_a_teacher(tmp_path):
    from seedbed.data.synth import synth
    from seedbed.errors import RecipeError

    with pytest.raises(RecipeError, match="teacher_url"):
        synth(SynthRecipe(out=str(tmp_path / "s")))


def test_seedbed_serve_as_the_teacher(tiny_model, tmp_path):
    """End to end with Seedbed's own server running the tiny (untrained) model as the teacher: whatever it
    writes is parsed, filtered and accounted for, and kept records name it."""
    from seedbed.data.synth import synth
    from seedbed.inference import load
    from seedbed.serve.app import ServerConfig, create_app
    from seedbed.serve.engine import Engine

    config = ServerConfig({"tiny": Engine("tiny", load(str(tiny_model)))})
    with running_server(create_app(config)) as url:
        # 3 tasks in the prompt: the tiny model reads 2,048 tokens, and its small BPE spends many on each task
        result = synth(SynthRecipe(teacher_url=url, target=2, max_rounds=3, min_words=1, max_tokens=48, prompt_tasks=3,
                                   prompt_machine_tasks=1,
                                   answer_max_tokens=16, out=str(tmp_path / "s"), requests_per_s=0, quiet=True))
    r = result.report
    assert r["teacher"]["model"] == "tiny" and r["rounds"] >= 1
    assert r["candidates"] == r["kept"] + r["rejected"]
    assert sum(r["rejected_by_reason"].values()) == r["rejected"]
    for line in (tmp_path / "s" / "synth.jsonl").read_text().splitlines():
        assert json.loads(line)["lineage"]["teacher_model"] == "tiny"
