"""Training past one process: `--num-processes N` runs the same command under `accelerate launch` (DDP: one process
per GPU with NCCL, or N CPU processes with gloo), so a recipe needs no change to use more devices.

    seedbed pretrain --recipe recipes/pretrain-tinystories-gpu.yaml --num-processes 4
    accelerate launch --num_processes 4 -m seedbed.cli finetune --recipe my.yaml   # your own accelerate config

Inside the launched processes the Trainer (through accelerate) shards each global batch across them and averages
gradients; only the main process writes the model directory. Checkpoints hold whole (unsharded) weights and
optimizer state, so a run resumes under another process count; pretraining keeps its global batch (batch_size is
per step, not per process), so the resumed run continues the same curve.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys


LAUNCHED = "SEEDBED_LAUNCHED"  # set for the launched processes: they never launch again, whatever the launcher set


def launched() -> bool:
    """Whether this process is one of a group `accelerate launch` (or torchrun) started."""
    return LAUNCHED in os.environ or "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_state():
    """This process's place in the group `accelerate launch` started (accelerate's `PartialState`), or alone.

    On a machine without a GPU, a bare `PartialState()` reports one process (DistributedType.NO) even under the
    launcher: only `cpu=True` makes it join the gloo group, as the Trainer does with `use_cpu`. Without it each
    process took itself for the main one and the whole batch for its own (issue 16: two processes trained on twice
    the global batch, and both wrote the tokenizer and blocks).
    """
    from accelerate import PartialState  # here, not at the top: `seedbed --help` imports this module, not torch

    from seedbed.models import default_device

    return PartialState(cpu=default_device() == "cpu")


def launch_command(num_processes: int, argv: list[str]) -> list[str]:
    """`accelerate launch` running `seedbed ARGV` in `num_processes` processes on this machine."""
    with socket.socket() as s:  # a free port for the processes' rendezvous: never a fixed one others may hold
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --multi_gpu is accelerate's torchrun launcher, which starts N processes on CPUs too (the Trainer then runs
    # them as MULTI_CPU with gloo); --cpu would pick its single-process launcher.
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(port), "-m", "seedbed.cli", *argv]


def relaunch(num_processes: int, argv: list[str]) -> int:
    """Run `seedbed ARGV` under `accelerate launch` with `num_processes` processes; its exit status."""
    return subprocess.call(launch_command(num_processes, argv), env={**os.environ, LAUNCHED: "1"})
