"""How long a fine-tuning job will take and what it will cost, shown before it starts, by `seedbed plan`'s rule and
hardware table (seedbed.plan): training costs 6·N·D FLOPs for N parameters and D tokens, at a FLOP/s rate that is

1. measured: the tokens/s of the last finished run on the same base in this studio (no FLOP arithmetic needed);
2. measured on another base: that run's 6·N·tokens/s (`plan.measured_rate`), applied to this base's N;
3. stated: `plan.HARDWARE`'s figure for this machine (its datasheet or the project's own measurement).

D comes from the data on disk (`plan.estimate_tokens`: ~4 characters a token) and the recipe (epochs, or max_steps
times the examples a step takes). The estimate covers the training steps; loading the model, evaluations and
saving add to it, which the page says.

    rows = estimate_finetune(recipe, data_dir, finished_runs)   # [("tokens to train", "12,300 (1 epoch)"), ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from seedbed.errors import SeedbedError
from seedbed.plan import FLOPS_PER_PARAMETER_TOKEN, HARDWARE, duration_text, estimate_tokens, measured_rate

DEFAULT_HARDWARE = "cpu-2core"  # the studio's own machine class (no GPU probe here: the web process never loads torch)
# Gemma 3 270M's count (Google's model card: 270M, 170M of them the embedding), used before any run measured it.
KNOWN_PARAMETERS = {"gemma-3-270m": 268_098_176}


@dataclass
class Estimate:
    tokens: int  # D: tokens the run trains on
    parameters: int | None  # N
    seconds: float | None
    usd: float | None
    basis: str  # where the rate came from, in words

    def rows(self) -> list[tuple[str, str]]:
        rows = [("tokens to train", f"{self.tokens:,}"),
                ("parameters", "unknown" if self.parameters is None else f"{self.parameters:,}")]
        if self.seconds is not None:
            rows.append(("training time", f"~{duration_text(self.seconds)} (loading and evaluation add to it)"))
        if self.usd is not None:
            rows.append(("cost", f"~${self.usd:,.4f}" if self.usd < 0.01 else f"~${self.usd:,.2f}"))
        rows.append(("basis", self.basis))
        return rows


def estimate_finetune(recipe, data_dir: Path, finished: list[dict], hardware: str = DEFAULT_HARDWARE) -> Estimate:
    """The estimate for a `FinetuneRecipe` run in `data_dir`; `finished` are metrics.json dicts of earlier
    finished training runs (newest first), each with its `base`.

    >>> estimate_finetune(FinetuneRecipe(data=["t.jsonl"], epochs=2), Path("."), []).rows()  # doctest: +SKIP
    [('tokens to train', '24,600'), ('parameters', '268,098,176'), ('training time', '~3.2 hours ...'), ...]
    """
    paths = [str(data_dir / p) for p in recipe.data]
    if not paths:
        raise SeedbedError("data: give the training data to estimate the run")
    data_tokens = estimate_tokens(paths)
    tokens = tokens_to_train(recipe, data_tokens, sum(records_in(Path(p)) for p in paths))
    parameters = parameters_of(recipe.base, data_dir, finished)
    same_base = next((m for m in finished if m.get("base") == recipe.base and m.get("tokens_per_s")), None)
    any_run = next((m for m in finished if m.get("tokens_per_s") and m.get("total_parameters")), None)
    per_hour = recipe.cost_per_hour if recipe.cost_per_hour is not None else HARDWARE[hardware]["usd_per_hour"]
    if same_base is not None:
        seconds = tokens / same_base["tokens_per_s"]
        basis = f"measured: {same_base['tokens_per_s']:,.0f} tokens/s in the last run on this base"
    elif parameters is None:
        return Estimate(tokens, None, None, None, "no time estimate: the base's size is unknown until it is loaded "
                        "(a hub id), and no run on it has finished here")
    elif any_run is not None:
        rate = measured_rate(any_run)
        seconds = FLOPS_PER_PARAMETER_TOKEN * parameters * tokens / rate
        basis = (f"measured on another base: {rate:.3g} FLOP/s (6·N·tokens/s of the last finished run), "
                 "applied to this base's size; smaller models reach a lower rate, so a larger base may run faster")
    else:
        spec = HARDWARE[hardware]
        rate = spec["flops_per_s"] * spec["mfu"]
        seconds = FLOPS_PER_PARAMETER_TOKEN * parameters * tokens / rate
        basis = f"stated: {rate:.3g} FLOP/s for {hardware} ({spec['source']}); no run has finished here yet"
    cost_basis = "the recipe's cost_per_hour" if recipe.cost_per_hour is not None else f"{hardware}'s ${per_hour}/hour"
    return Estimate(tokens, parameters, seconds, seconds / 3600 * per_hour, f"{basis}; cost at {cost_basis}")


def tokens_to_train(recipe, data_tokens: int, records: int) -> int:
    """D: every epoch's tokens, or with max_steps, the steps' examples at the data's mean example length (capped
    at max_length, where longer examples are truncated)."""
    if recipe.max_steps <= 0:
        return int(data_tokens * recipe.epochs)
    per_example = min(recipe.max_length, data_tokens / max(1, records))
    return int(recipe.max_steps * recipe.batch_size * recipe.grad_accum * per_example)


def records_in(path: Path) -> int:
    """Lines of JSONL/CSV files (a record a line), 1 for other files: enough for a mean length."""
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    return sum(f.read_bytes().count(b"\n") if f.suffix in (".jsonl", ".csv") else 1 for f in files)


def parameters_of(base: str, data_dir: Path, finished: list[dict]) -> int | None:
    """N: from a finished run on the base, the safetensors headers of a local model directory (shapes only, no
    weights read), or the known count of the embedded default; None for a hub id not seen yet."""
    measured = next((m["total_parameters"] for m in finished if m.get("base") == base and m.get("total_parameters")),
                    None)
    if measured:
        return measured
    directory = Path(base).expanduser()
    directory = directory if directory.is_absolute() else data_dir / directory
    shards = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
    if shards:
        from safetensors import safe_open

        total = 0
        for shard in shards:
            with safe_open(str(shard), framework="np") as f:
                for name in f.keys():
                    count = 1
                    for size in f.get_slice(name).get_shape():
                        count *= size
                    total += count
        return total
    return KNOWN_PARAMETERS.get(base)


def finished_training_runs(data_dir: Path, jobs) -> list[dict]:
    """metrics.json of the studio's finished fine-tuning jobs, newest first, each with the base it ran on."""
    runs = []
    for job in jobs:
        if job.verb != "finetune" or not job.out:
            continue
        metrics_file = data_dir / job.out / "metrics.json"
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        runs.append({**metrics, "base": json.loads(job.recipe)["base"]})
    return runs
