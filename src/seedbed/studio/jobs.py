"""The scheduler: jobs wait in a queue and run one at a time (one machine, one job: two trainings on 2 cores would
each run at half speed and both risk running out of memory), each as its own process in its own session, so
closing the tab or restarting the studio leaves it running; a restarted studio re-attaches through the store.

    jobs = Scheduler(data_dir)
    job_id = jobs.submit("finetune", recipe)   # validated recipe (seedbed.studio.verbs.build_recipe)
    jobs.tick()                                # reconcile running jobs, start the next queued one
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.recipe import Stage, save_recipe
from seedbed.studio import runner
from seedbed.studio.store import Job, JobStore
from seedbed.studio.verbs import verb_of

log = logging.getLogger("seedbed.studio")
KILLED = ("the job's process ended without an exit status (killed: SIGKILL, out of memory, or the machine "
          "restarted); its log is kept below")


def same_seedbed_env() -> dict[str, str]:
    """The environment for a job: this studio's seedbed first on the path, so a job runs the same code as the studio
    that launched it (a source checkout beside an installed copy, relative PYTHONPATHs, a changed cwd)."""
    import seedbed

    here = str(Path(seedbed.__file__).resolve().parents[1])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([here, *rest])}


class Scheduler:
    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir).resolve()
        self.store = JobStore(self.data_dir / "studio.sqlite")
        self.children: dict[int, subprocess.Popen] = {}  # runners this studio started: reaped here
        self.lock = threading.Lock()

    def job_dir(self, job_id: int) -> Path:
        return self.data_dir / "jobs" / str(job_id)

    def submit(self, verb: str, recipe: Stage) -> int:
        """Queue a job: its row, and a directory with the resolved recipe and what the runner needs."""
        out = getattr(recipe, "out", None)
        job_id = self.store.add(verb, recipe.model_dump_json(), out)
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, job_dir / runner.RECIPE_FILE, verb_of(verb).section)
        atomic_write_text(job_dir / runner.JOB_FILE, json.dumps({"verb": verb, "cwd": str(self.data_dir)}))
        return job_id

    def tick(self) -> None:
        """Record the end of jobs whose process ended; start the oldest queued job when none runs."""
        with self.lock:
            for job_id in [i for i, child in self.children.items() if child.poll() is not None]:
                if self.store.get(job_id).finished_or_failed:  # recorded (or cancelled): nothing left to do
                    self.children.pop(job_id)
            for job in self.store.list(states=("running",)):
                self.reconcile(job)
            for job in self.store.list(states=("queued",)):  # services (a server) start at once, beside the queue,
                # so the oldest queued job left is a queue job
                if verb_of(job.verb).service:
                    self.start(job)
            queue_busy = any(not verb_of(j.verb).service for j in self.store.list(states=("running",)))
            if not queue_busy and (job := self.store.next_queued()):
                self.start(job)

    def start(self, job: Job) -> None:
        job_dir = self.job_dir(job.id)
        log = open(job_dir / runner.LOG_FILE, "ab")
        child = subprocess.Popen([sys.executable, "-m", "seedbed.studio.runner", str(job_dir)], cwd=self.data_dir,
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=same_seedbed_env(), start_new_session=True)  # survives the studio, its terminal
        log.close()
        self.children[job.id] = child
        self.store.mark_running(job.id, child.pid)

    def reconcile(self, job: Job) -> None:
        """A running job whose runner wrote its exit status is done or failed; one whose process is gone without
        writing it was killed, and fails."""
        exit_file = self.job_dir(job.id) / runner.EXIT_FILE
        alive = self.alive(job)  # asked before the file: a runner found gone had written its status by then
        if exit_file.is_file():
            code = json.loads(exit_file.read_text())["returncode"]
            self.reap(job.id)
            if code == 0:
                self.store.mark_finished(job.id, "done", 0)
            else:
                reason = (f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}")
                self.store.mark_finished(job.id, "failed", code, reason)
        elif not alive:
            self.reap(job.id)
            self.store.mark_finished(job.id, "failed", None, KILLED)

    def reap(self, job_id: int) -> None:
        """Collect a runner's exit if it has exited; one still shutting down (it wrote exit.json and is tearing
        down its interpreter, seconds on a busy machine) is collected by a later tick, never waited for here."""
        child = self.children.get(job_id)
        if child is not None and child.poll() is not None:
            self.children.pop(job_id)

    def alive(self, job: Job) -> bool:
        """Whether the job's runner still runs: its pid exists, is not a zombie, and is this job's runner (a pid the
        system reused for another program after a restart does not count)."""
        child = self.children.get(job.id)
        if child is not None and child.poll() is not None:
            return False
        try:
            cmdline = Path(f"/proc/{job.pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{job.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z" and str(self.job_dir(job.id)).encode() in cmdline

    def cancel(self, job_id: int) -> bool:
        """Stop a queued or running job (SIGTERM to its process group); False if it had already ended."""
        with self.lock:
            job = self.store.get(job_id)
            if job is None or job.finished_or_failed:
                return False
            if job.state == "running" and self.alive(job):
                try:
                    os.killpg(job.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            return self.store.mark_finished(job_id, "cancelled", None, "cancelled from the studio")

    def run_in_background(self, stop: threading.Event, interval_s: float = 1.0) -> threading.Thread:
        """Tick every `interval_s` until `stop` is set (the studio's lifetime)."""

        def loop():
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # a bug of ours: say so, and keep the queue moving (never a silent stop)
                    log.exception("studio scheduler: a tick failed; retrying")
                stop.wait(interval_s)

        thread = threading.Thread(target=loop, name="studio-scheduler", daemon=True)
        thread.start()
        return thread
