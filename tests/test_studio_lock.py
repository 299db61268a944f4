"""One studio per data directory, with real processes: a second `seedbed studio` on the same directory refuses to
start and names the running one (pid and URL); after the first is killed with SIGKILL, its lock left behind blocks
nothing and a new studio starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import wait_for

SRC = Path(__file__).parents[1] / "src"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def studio_command(data_dir: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "seedbed.cli", "studio", "--data-dir", str(data_dir), "--port", str(port)]


ENV = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "300"}


def answers(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs", timeout=2).status == 200
    except OSError:
        return False


def test_a_second_studio_on_the_same_data_dir_refuses_and_a_killed_ones_lock_blocks_nothing(tmp_path):
    data_dir, first_port = tmp_path / "studio", free_port()
    first = subprocess.Popen(studio_command(data_dir, first_port), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    third = None
    try:
        wait_for(lambda: answers(first_port), timeout=90)
        second_port = free_port()
        second = subprocess.run(studio_command(data_dir, second_port), env=ENV, capture_output=True, text=True,
                                timeout=90)
        assert second.returncode == 2, second.stderr
        assert "a studio already runs on" in second.stderr, second.stderr
        assert f"pid {first.pid}, http://127.0.0.1:{first_port}/" in second.stderr, second.stderr
        assert not answers(second_port) and answers(first_port)  # the first one goes on serving

        first.send_signal(signal.SIGKILL)  # no clean-up runs: the lock file stays, its OS lock goes with the process
        first.wait(timeout=30)
        assert (data_dir / "studio.lock").exists()  # stale: left behind, as after a crash or power loss
        assert json.loads((data_dir / "studio.owner.json").read_text())["pid"] == first.pid
        third_port = free_port()
        third = subprocess.Popen(studio_command(data_dir, third_port), env=ENV, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        wait_for(lambda: answers(third_port) or third.poll() is not None, timeout=90)
        assert third.poll() is None, third.stderr.read()
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
