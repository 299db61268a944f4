"""A job's own process: `python -m seedbed.studio.runner JOB_DIR`. It runs the job's one CLI command with its output
in JOB_DIR/log.txt and records the exit status in JOB_DIR/exit.json, so the status survives the studio that
started it (a studio that restarts reads it back). Killed itself (SIGKILL), it leaves no exit.json: the scheduler
then records the job as failed, its log kept, never as running forever.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.studio.verbs import process_command

LOG_FILE, EXIT_FILE, JOB_FILE, RECIPE_FILE = "log.txt", "exit.json", "job.json", "recipe.yaml"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """In the child: receive SIGTERM when the runner dies (even by SIGKILL), so no job outlives its record."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a killed runner may leave its child running
        pass


def run(job_dir: Path) -> int:
    job = json.loads((job_dir / JOB_FILE).read_text())
    argv = process_command(job["verb"], job_dir / RECIPE_FILE)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    with open(job_dir / LOG_FILE, "ab", buffering=0) as log:
        log.write(f"$ seedbed {' '.join(argv[3:])}\n".encode())
        child = subprocess.Popen(argv, cwd=job["cwd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, preexec_fn=die_with_parent)
        # Cancel sends SIGTERM to the runner's process group, the child included; pass a lone one on too.
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        code = child.wait()
    atomic_write_text(job_dir / EXIT_FILE, json.dumps({"returncode": code}))
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
