"""The job store: one SQLite table (stdlib sqlite3) in the studio's data directory, so jobs outlive the studio.

A job moves queued → running → done | failed | cancelled. The row holds what it takes to re-attach to it after a
restart: its process id and the directory its runner writes the log and exit status to.

    store = JobStore(data_dir / "studio.sqlite")
    job_id = store.add("finetune", "{...recipe fields...}", out="runs/ft-1")
    store.get(job_id).state  # 'queued'
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    verb TEXT NOT NULL,
    recipe TEXT NOT NULL,          -- the validated recipe section as JSON
    out TEXT,                      -- the directory the job writes (a model, prepared data, ...)
    state TEXT NOT NULL DEFAULT 'queued',
    pid INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    returncode INTEGER,
    reason TEXT                    -- why it failed or was cancelled, in words
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""


@dataclass(frozen=True)
class Job:
    id: int
    verb: str
    recipe: str
    out: str | None
    state: str
    pid: int | None
    created: float
    started: float | None
    finished: float | None
    returncode: int | None
    reason: str | None

    @property
    def finished_or_failed(self) -> bool:
        return self.state in FINISHED


class JobStore:
    """Jobs in SQLite; safe to share between the web handlers and the scheduler thread (one lock, short
    transactions; WAL so that readers in another studio process are not blocked)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def add(self, verb: str, recipe_json: str, out: str | None) -> int:
        with self.lock:
            cur = self.db.execute("INSERT INTO jobs (verb, recipe, out, created) VALUES (?, ?, ?, ?)",
                                  (verb, recipe_json, out, time.time()))
            return int(cur.lastrowid)

    def get(self, job_id: int) -> Job | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job(**row) if row else None

    def list(self, limit: int = 200, states: tuple[str, ...] = STATES) -> list[Job]:
        """The newest `limit` jobs in the given states, newest first."""
        marks = ",".join("?" * len(states))
        with self.lock:
            rows = self.db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id DESC LIMIT ?",
                                   (*states, limit)).fetchall()
        return [Job(**r) for r in rows]

    def next_queued(self) -> Job | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
        return Job(**row) if row else None

    def mark_running(self, job_id: int, pid: int) -> None:
        with self.lock:
            self.db.execute("UPDATE jobs SET state = 'running', pid = ?, started = ? WHERE id = ?",
                            (pid, time.time(), job_id))

    def mark_finished(self, job_id: int, state: str, returncode: int | None, reason: str | None = None) -> bool:
        """Record the end of a job that has not ended yet; False if it had (a cancel and an exit can race)."""
        assert state in FINISHED, state
        with self.lock:
            cur = self.db.execute(
                "UPDATE jobs SET state = ?, returncode = ?, reason = ?, finished = ? WHERE id = ? AND state IN "
                "('queued', 'running')", (state, returncode, reason, time.time(), job_id))
            return cur.rowcount == 1
