"""`--num-processes` relaunches under accelerate exactly once: a launched process never launches again."""

from __future__ import annotations

from seedbed.train import launch


def test_a_launched_process_does_not_launch_again(monkeypatch):
    for name in ("SEEDBED_LAUNCHED", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not launch.launched()
    monkeypatch.setenv("SEEDBED_LAUNCHED", "1")  # what relaunch gives its children, whatever the launcher sets
    assert launch.launched()


def test_launch_command_runs_n_processes_of_the_same_verb():
    cmd = launch.launch_command(2, ["pretrain", "--out", "x"])
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[-3:] == ["pretrain", "--out", "x"]
    assert "--cpu" not in cmd  # accelerate's --cpu launcher would start one process, not two
