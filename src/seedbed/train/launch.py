"""Training past one process: `--num-processes N` runs the same command under `accelerate launch` (DDP: one process
per GPU with NCCL, or N CPU processes with gloo), so a recipe needs no change to use more devices. With
`--launcher ray` the N processes are Ray Train workers instead (`TorchTrainer`), on the Ray cluster `RAY_ADDRESS`
names or a local one, for clusters that already run Ray.

    seedbed pretrain --recipe recipes/pretrain-tinystories-gpu.yaml --num-processes 4
    RAY_ADDRESS=auto seedbed finetune --recipe my.yaml --num-processes 8 --launcher ray
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


def ray_relaunch(num_processes: int, argv: list[str]) -> int:
    """Run `seedbed ARGV` in `num_processes` Ray Train workers; 0, or 1 after printing why the run failed.

    Ray Train's torch backend starts the process group (gloo, or NCCL with GPUs) and sets the RANK / WORLD_SIZE /
    LOCAL_RANK variables `accelerate` reads, so inside each worker the command runs exactly as under `accelerate
    launch`: the Trainer shards each global batch and averages gradients, the main process writes `out`. Ray keeps
    its own run records under `$SEEDBED_HOME/ray_results`, out of the model directory.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from seedbed.models import seedbed_home

    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True, configure_logging=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0) >= num_processes
        trainer = TorchTrainer(
            run_in_worker, train_loop_config={"argv": argv, "cwd": os.getcwd()},
            scaling_config=ScalingConfig(num_workers=num_processes, use_gpu=gpus),
            run_config=RunConfig(storage_path=str(seedbed_home() / "ray_results")))
        try:
            trainer.fit()
        except Exception as e:  # Ray wraps the worker's error; its message names it (the traceback was printed)
            print(f"Ray Train run failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            return 1
        return 0
    finally:
        ray.shutdown()


def run_in_worker(config: dict) -> None:
    """One Ray Train worker: `python -m seedbed.cli ARGV` in this process (as `accelerate launch -m seedbed.cli`
    runs it), from the directory it was started in (Ray moves workers to a run directory of its own, where a
    relative `--out` would land). A command that fails raises, so that Ray reports the run as failed."""
    import runpy

    os.environ[LAUNCHED] = "1"
    os.chdir(config["cwd"])
    sys.argv = ["seedbed", *config["argv"]]
    try:
        runpy.run_module("seedbed.cli", run_name="__main__", alter_sys=True)
    except SystemExit as e:  # the CLI ends by exiting, 0 when the command succeeded
        if e.code not in (None, 0):
            raise RuntimeError(f"seedbed {config['argv'][0]} exited with status {e.code} (its error is printed "
                               "above)") from None
