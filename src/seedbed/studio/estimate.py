"""How long a fine-tuning or distillation job will take and what it will cost, shown before it starts, by
`seedbed plan`'s rule and hardware table (seedbed.plan): training costs 6·N·D FLOPs for N parameters and D tokens
(a forward pass 2·N a token, the backward pass twice that), at a FLOP/s rate that is

1. measured: the tokens/s of the last finished run on the same base in this studio (no FLOP arithmetic needed);
2. measured on another base: that run's 6·N·tokens/s (`plan.measured_rate`), applied to this base's N;
3. stated: `plan.HARDWARE`'s figure for this machine (its datasheet or the project's own measurement).

D comes from the data on disk (`plan.estimate_tokens`: ~4 characters a token) and the recipe (epochs, or max_steps
times the examples a step takes). The estimate covers the training steps; loading the model, evaluations and
saving add to it, which the page says.

Distillation trains the student (6·N_student·D) and, in logit mode, runs the frozen teacher forward on the same
tokens (2·N_teacher·D, no backward pass): (6·N_student + 2·N_teacher)·D. Before a preset student is built its size
is unknown here (the web process never loads torch), so it is counted at the teacher's size: the time is then an
upper bound, and the page says so. In sequence mode the teacher's answers are generated first, at its decode
speed (seedbed serve's, or the teacher's own server's), which a FLOP count does not predict: that part is left
out, and the page says so too. A finished distillation with the same teacher, student and mode gives its measured
tokens/s, and its sizes.

    rows = estimate_finetune(recipe, data_dir, finished_runs)   # [("tokens to train", "12,300 (1 epoch)"), ...]
    rows = estimate_distill(recipe, data_dir, finished_runs)    # [..., ("teacher parameters", "268,098,176"), ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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
    more: list[tuple[str, str]] = field(default_factory=list)  # rows of the method's own (distill: the teacher)

    def rows(self) -> list[tuple[str, str]]:
        rows = [("tokens to train", f"{self.tokens:,}"),
                ("parameters", "unknown" if self.parameters is None else f"{self.parameters:,}"), *self.more]
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
    tokens = training_tokens(recipe, data_dir)
    parameters = parameters_of(recipe.base, data_dir, finished)
    same_base = next((m for m in finished if m.get("base") == recipe.base and m.get("tokens_per_s")), None)
    if same_base is None and parameters is None:
        return Estimate(tokens, None, None, None, "no time estimate: the base's size is unknown until it is loaded "
                        "(a hub id), and no run on it has finished here")
    return timed(tokens, parameters, FLOPS_PER_PARAMETER_TOKEN * (parameters or 0), same_base,
                 "the last run on this base", finished, recipe.cost_per_hour, hardware)


def estimate_distill(recipe, data_dir: Path, finished: list[dict], hardware: str = DEFAULT_HARDWARE) -> Estimate:
    """The estimate for a `DistillRecipe` run: the student's training plus, in logit mode, the teacher's forward
    pass on every token (see the module's docstring for how each is counted).

    >>> estimate_distill(DistillRecipe(teacher="gemma-3-270m", data=["t.jsonl"]), Path("."), []).rows()  # doctest: +SKIP
    [('tokens to train', '12,300'), ('parameters', '268,098,176'), ('teacher parameters', '268,098,176'), ...]
    """
    tokens = training_tokens(recipe, data_dir)
    distills = [m for m in finished if m.get("teacher") == recipe.teacher and m.get("teacher_parameters")]
    same = next((m for m in distills if m.get("student") == recipe.student and m.get("mode") == recipe.mode
                 and m.get("tokens_per_s") and m.get("student_parameters")), None)
    teacher = (distills[0]["teacher_parameters"] if distills else None) or parameters_of(recipe.teacher or "",
                                                                                          data_dir, finished)
    student = same["student_parameters"] if same else parameters_of(recipe.student, data_dir, finished)
    more = [("teacher parameters", "unknown" if teacher is None else f"{teacher:,}")]
    notes = []
    if student is None and teacher is not None:
        student = teacher
        notes.append(f"the student ({recipe.student}) is counted at the teacher's size until a run builds it, so "
                     "this is an upper bound")
    logit = recipe.mode == "logit"
    more.append(("FLOPs counted", "6·N_student·D for the student's training" +
                 (" + 2·N_teacher·D for the teacher's forward pass" if logit else
                  "; the teacher's answers are generated first, at its decode speed, which is not counted")))
    if same is None and (student is None or (logit and teacher is None)):
        return Estimate(tokens, student, None, None, "no time estimate: the teacher's or student's size is unknown "
                        "until it is loaded (a hub id), and no distillation from it has finished here", more)
    flops = FLOPS_PER_PARAMETER_TOKEN * (student or 0) + (2 * (teacher or 0) if logit else 0)
    # getattr: a DistillRecipe has no cost_per_hour field (finetune and pretrain take it from RunArgs)
    return timed(tokens, student, flops, same, "the last distillation with this teacher, student and mode",
                 finished, getattr(recipe, "cost_per_hour", None), hardware, notes, more)


def training_tokens(recipe, data_dir: Path) -> int:
    """D for a training recipe: its data's tokens on disk, by epochs or steps (`tokens_to_train`)."""
    paths = [str(data_dir / p) for p in recipe.data]
    if not paths:
        raise SeedbedError("data: give the training data to estimate the run")
    return tokens_to_train(recipe, estimate_tokens(paths), sum(records_in(Path(p)) for p in paths))


def flops_rate(metrics: dict) -> float | None:
    """A finished run's effective FLOP/s: a fine-tune's 6·N·tokens/s (`plan.measured_rate`), a logit distillation's
    (6·N_student + 2·N_teacher)·tokens/s; None when its metrics lack the counts."""
    if not metrics.get("tokens_per_s"):
        return None
    if metrics.get("total_parameters"):
        return measured_rate(metrics)
    if metrics.get("student_parameters") and metrics.get("teacher_parameters"):
        teacher = 2 * metrics["teacher_parameters"] if metrics.get("mode", "logit") == "logit" else 0
        return (FLOPS_PER_PARAMETER_TOKEN * metrics["student_parameters"] + teacher) * metrics["tokens_per_s"]
    return None


def timed(tokens: int, parameters: int | None, flops_per_token: float, same: dict | None, same_what: str,
          finished: list[dict], cost_per_hour: float | None, hardware: str, notes: list[str] = (),
          more: list[tuple[str, str]] = ()) -> Estimate:
    """Time and cost of `tokens` at the first rate there is: `same` run's tokens/s, another run's FLOP/s, or the
    hardware's stated FLOP/s."""
    per_hour = cost_per_hour if cost_per_hour is not None else HARDWARE[hardware]["usd_per_hour"]
    other = next(((m, r) for m in finished if (r := flops_rate(m))), None)
    if same is not None:
        seconds = tokens / same["tokens_per_s"]
        basis = f"measured: {same['tokens_per_s']:,.0f} tokens/s in {same_what}"
    elif other is not None:
        seconds = flops_per_token * tokens / other[1]
        basis = (f"measured on another run: {other[1]:.3g} FLOP/s (the FLOPs a token of the last finished run "
                 "cost, times its tokens/s), applied to this run's FLOPs a token; smaller models reach a lower rate, "
                 "so a larger one may run faster")
    else:
        spec = HARDWARE[hardware]
        rate = spec["flops_per_s"] * spec["mfu"]
        seconds = flops_per_token * tokens / rate
        basis = f"stated: {rate:.3g} FLOP/s for {hardware} ({spec['source']}); no run has finished here yet"
    cost_basis = "the recipe's cost_per_hour" if cost_per_hour is not None else f"{hardware}'s ${per_hour}/hour"
    return Estimate(tokens, parameters, seconds, seconds / 3600 * per_hour,
                    "; ".join([*notes, f"{basis}; cost at {cost_basis}"]), list(more))


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
    """metrics.json of the studio's finished fine-tuning and distillation jobs, newest first, a fine-tune's with
    the base it ran on (a distillation's names its teacher and student itself)."""
    runs = []
    for job in jobs:
        if job.verb not in ("finetune", "distill") or not job.out:
            continue
        metrics_file = data_dir / job.out / "metrics.json"
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        runs.append({**metrics, "base": json.loads(job.recipe)["base"]} if job.verb == "finetune" else metrics)
    return runs
