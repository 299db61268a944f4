"""Studio jobs: each its own process, recorded in SQLite, outliving the scheduler that started it; one at a time;
a job killed with SIGKILL fails with its log, never runs forever; only known verbs with validated recipes run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from seedbed.errors import RecipeError
from seedbed.studio.jobs import KILLED, Scheduler
from seedbed.studio.verbs import build_recipe, process_command, shell_command

from conftest import qa_records, wait_for, write_jsonl



def finished(scheduler: Scheduler, job_id: int):
    scheduler.tick()
    job = scheduler.store.get(job_id)
    return job if job.finished_or_failed else None


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text.encode() in cmdline and state != "Z":
                found.append(int(proc.name))
    return found


def test_a_job_outlives_the_scheduler_that_started_it(tmp_path, tiny_model):
    first = Scheduler(tmp_path)
    recipe = build_recipe("quantize", {"model": str(tiny_model), "method": "int8", "out": "runs/q8"}, tmp_path)
    job_id = first.submit("quantize", recipe)
    first.tick()
    assert first.store.get(job_id).state == "running"
    del first  # the studio goes away; the job's process does not
    second = Scheduler(tmp_path)  # a restarted studio: same store, no child handles
    job = wait_for(lambda: finished(second, job_id))
    assert job.state == "done", (job, (tmp_path / "jobs" / str(job_id) / "log.txt").read_text())
    assert (tmp_path / "runs" / "q8" / "quantize.json").is_file()
    assert "seedbed quantize --recipe" in (tmp_path / "jobs" / str(job_id) / "log.txt").read_text()


def test_a_job_killed_with_sigkill_fails_with_its_log(tmp_path, tiny_model):
    write_jsonl(tmp_path / "train.jsonl", qa_records(40))
    jobs = Scheduler(tmp_path)
    recipe = build_recipe("finetune", {"base": str(tiny_model), "data": ["train.jsonl"], "max_steps": 100000,
                                       "batch_size": 2, "out": "runs/ft", "truthfulness_questions": 0}, tmp_path)
    job_id = jobs.submit("finetune", recipe)
    jobs.tick()
    job = jobs.store.get(job_id)
    progress = tmp_path / "runs" / "ft" / "progress.jsonl"
    wait_for(lambda: progress.is_file())  # training has begun: the CLI child is busy
    job_dir = str(tmp_path / "jobs" / str(job_id))
    assert processes_mentioning(job_dir)  # the runner and its CLI child
    os.kill(job.pid, signal.SIGKILL)  # the job's process, as the OOM killer would
    job = wait_for(lambda: finished(Scheduler(tmp_path), job_id), timeout=30)
    assert (job.state, job.reason) == ("failed", KILLED)
    assert "seedbed finetune --recipe" in (Path(job_dir) / "log.txt").read_text()
    wait_for(lambda: not processes_mentioning(job_dir), timeout=30)  # the CLI child died with its runner


def test_a_bad_recipe_fails_with_the_cli_error_in_the_log_and_the_queue_moves_on(tmp_path, tiny_model):
    jobs = Scheduler(tmp_path)
    bad = jobs.submit("finetune", build_recipe("finetune", {"base": str(tiny_model), "data": ["missing.jsonl"],
                                                             "out": "runs/bad"}, tmp_path))
    good = jobs.submit("quantize", build_recipe("quantize", {"model": str(tiny_model), "out": "runs/q"}, tmp_path))
    jobs.tick()
    assert [jobs.store.get(bad).state, jobs.store.get(good).state] == ["running", "queued"]  # one at a time
    job = wait_for(lambda: finished(jobs, bad))
    assert (job.state, job.returncode, job.reason) == ("failed", 2, "exit status 2")
    assert "missing.jsonl" in (tmp_path / "jobs" / str(bad) / "log.txt").read_text()
    assert wait_for(lambda: finished(jobs, good)).state == "done"


def test_cancel_stops_a_running_job_and_a_queued_one(tmp_path, tiny_model):
    write_jsonl(tmp_path / "train.jsonl", qa_records(40))
    jobs = Scheduler(tmp_path)
    fields = {"base": str(tiny_model), "data": ["train.jsonl"], "max_steps": 100000, "truthfulness_questions": 0}
    running = jobs.submit("finetune", build_recipe("finetune", {**fields, "out": "runs/a"}, tmp_path))
    queued = jobs.submit("finetune", build_recipe("finetune", {**fields, "out": "runs/b"}, tmp_path))
    jobs.tick()
    wait_for(lambda: (tmp_path / "runs" / "a" / "progress.jsonl").is_file())
    assert jobs.cancel(queued) and jobs.cancel(running)
    assert not jobs.cancel(running)  # already ended
    wait_for(lambda: not processes_mentioning(str(tmp_path / "jobs" / str(running))), timeout=30)
    jobs.tick()
    assert [jobs.store.get(i).state for i in (running, queued)] == ["cancelled", "cancelled"]
    assert not (tmp_path / "runs" / "b").exists()  # the queued one never started


def test_only_known_verbs_with_valid_recipes_inside_the_data_dir(tmp_path):
    with pytest.raises(RecipeError, match="verb: 'bash' is not a studio job"):
        build_recipe("bash", {}, tmp_path)
    with pytest.raises(RecipeError, match="lora_r"):
        build_recipe("finetune", {"lora_r": "many"}, tmp_path)
    with pytest.raises(RecipeError, match="out: '../elsewhere' is outside"):
        build_recipe("finetune", {"out": "../elsewhere"}, tmp_path)
    with pytest.raises(RecipeError, match="outside"):
        build_recipe("quantize", {"out": "/tmp/x"}, tmp_path)
    recipe = build_recipe("finetune", {"data": ["a.jsonl"], "max_steps": 5, "out": "runs/x"}, tmp_path)
    assert shell_command("finetune", recipe) == "seedbed finetune --data a.jsonl --out runs/x --max-steps 5"
    assert process_command("prepare", "r.yaml")[2:] == ["seedbed.cli", "data", "prepare", "--recipe", "r.yaml"]


def test_the_job_store_lists_newest_first_and_records_an_end_once(tmp_path):
    jobs = Scheduler(tmp_path)
    ids = [jobs.store.add("quantize", json.dumps({}), f"runs/{i}") for i in range(3)]
    assert [j.id for j in jobs.store.list()] == ids[::-1]
    assert jobs.store.mark_finished(ids[0], "failed", 1, "x")
    assert not jobs.store.mark_finished(ids[0], "done", 0)  # an end is recorded once
    assert jobs.store.get(ids[0]).state == "failed"


def test_a_runner_still_shutting_down_after_writing_its_status_does_not_stall_the_scheduler(tmp_path):
    """Regression: the scheduler waited (5 s, then raised) for a runner that had written exit.json but was still
    tearing down its interpreter on a busy machine, and the exception stopped the queue for good."""
    import subprocess
    import sys

    from seedbed.studio.runner import EXIT_FILE

    jobs = Scheduler(tmp_path)
    job_id = jobs.submit("quantize", build_recipe("quantize", {"out": "runs/q"}, tmp_path))
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(jobs.job_dir(job_id))])
    try:
        jobs.children[job_id] = slow
        jobs.store.mark_running(job_id, slow.pid)
        (jobs.job_dir(job_id) / EXIT_FILE).write_text('{"returncode": 0}')
        started = time.monotonic()
        jobs.tick()
        assert time.monotonic() - started < 2
        assert jobs.store.get(job_id).state == "done"
        assert job_id in jobs.children  # collected by a later tick, once it has exited
        slow.kill()
        slow.wait()
        jobs.tick()
        assert job_id not in jobs.children
    finally:
        slow.kill()
