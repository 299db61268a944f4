"""`seedbed plan`: how big a model, on how many tokens, for this much compute, and how long it will take.

    seedbed plan --hours 8 --hardware h100
    seedbed plan --flops 1e17 --tokens 2e8 --out plan.yaml   # then: seedbed pretrain --recipe plan.yaml ...

The rule is Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", Chinchilla): training a model of
N parameters on D tokens costs C ≈ 6·N·D FLOPs, and for a fixed C the loss is lowest near D ≈ 20·N, so
N = sqrt(C / 120) and D = 20·N. N counts every parameter, embeddings included, as Hoffmann et al. do (Pearce &
Song 2024 show that this, against Kaplan et al.'s non-embedding count, is most of the two papers' disagreement).

When the data has fewer tokens than the rule wants, repeating it helps up to about 4 epochs almost as much as new
data would (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"); past that the plan shrinks the
model to fit the data and says how much of the budget it leaves unspent. Pure arithmetic: no torch, no numpy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from seedbed.errors import RecipeError

TOKENS_PER_PARAMETER = 20  # Hoffmann et al. 2022, Table 3: ~20 tokens per parameter at every compute budget
FLOPS_PER_PARAMETER_TOKEN = 6  # forward (2) + backward (4) multiply-adds per parameter per token (Kaplan et al. 2020)
MAX_EPOCHS = 4  # Muennighoff et al. 2023: up to ~4 epochs of repeated data is nearly as good as unique data
SMALLEST_MODEL = 100_000  # parameters: below this a "language model" is a bigram table; nothing to plan
LARGEST_BUDGET = 1e27  # FLOPs: ~25x the largest published run (Llama 3 405B, 3.8e25; Dubey et al. 2024)
CHARS_PER_TOKEN = 4  # English text and a BPE vocabulary: about 4 characters a token (OpenAI's tokenizer guide)

# Named hardware: peak dense BF16 FLOP/s from the vendors' datasheets, and the model FLOP utilisation (MFU) a
# well-tuned run reaches: 0.4, between PaLM's 46% (Chowdhery et al. 2022) and Llama 3's 38-43% (Dubey et al. 2024).
# USD per hour are assumed on-demand prices (the $2.50/H100-hour of seedbed.train.lineage; the others scaled from
# typical 2025-26 cloud lists) - give --cost-per-hour for yours. "cpu-2core" is measured, not a datasheet number:
# `seedbed pretrain` on the demo recipe (recipes/pretrain-cpu.yaml) on the 2-core AMD EPYC this project is built on
# does 6·N·tokens per CPU-second of about 2.9e10 FLOP on one thread (BENCHMARKS.md, "Pretraining from scratch";
# CPU-seconds, as the machine is shared), so its MFU is 1. One core's rate, as two threads' gain on an idle machine
# is unmeasured: a plan for 2 cores is on the safe side. (The 3e9 once here was two threads' wall-clock rate on
# the loaded machine, where they spend most of their CPU waiting for each other.)
HARDWARE = {
    "h100": {"flops_per_s": 989e12, "mfu": 0.4, "usd_per_hour": 2.50, "source": "NVIDIA H100 SXM datasheet, dense BF16"},
    "h200": {"flops_per_s": 989e12, "mfu": 0.4, "usd_per_hour": 3.50, "source": "NVIDIA H200 datasheet, dense BF16 (the H100's compute)"},
    "a100": {"flops_per_s": 312e12, "mfu": 0.4, "usd_per_hour": 1.50, "source": "NVIDIA A100 datasheet, dense BF16"},
    "l4": {"flops_per_s": 121e12, "mfu": 0.4, "usd_per_hour": 0.80, "source": "NVIDIA L4 datasheet, dense BF16"},
    "rtx4090": {"flops_per_s": 165e12, "mfu": 0.4, "usd_per_hour": 0.40, "source": "NVIDIA Ada whitepaper, BF16 with FP32 accumulate"},
    "cpu-2core": {"flops_per_s": 2.9e10, "mfu": 1.0, "usd_per_hour": 0.10, "source": "measured: seedbed pretrain, 2-core AMD EPYC (BENCHMARKS.md)"},
}

# Vocabulary sizes tried, largest first: 32,000 as Llama 2, down to 512 for models of a few hundred thousand
# parameters. The largest whose embedding is at most EMBEDDING_SHARE of the model is chosen: a small model with a
# big vocabulary is mostly an embedding table (our own rule of thumb, no paper gives one).
VOCAB_SIZES = (32000, 16384, 8192, 4096, 2048, 1024, 512)
EMBEDDING_SHARE = 0.3


@dataclass(frozen=True)
class LlamaShape:
    """A Llama-style decoder: RMSNorm, SwiGLU MLP, rotary positions, tied input and output embeddings."""

    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    intermediate_size: int
    vocab_size: int

    @property
    def parameters(self) -> int:
        """Exactly what transformers' LlamaForCausalLM with tie_word_embeddings=True holds (a test checks it)."""
        d, head_dim = self.hidden_size, self.hidden_size // self.heads
        attention = 2 * d * d + 2 * d * self.kv_heads * head_dim  # q, o; k, v
        mlp = 3 * d * self.intermediate_size  # gate, up, down
        return self.vocab_size * d + self.layers * (attention + mlp + 2 * d) + d  # + the norms

    def as_dict(self) -> dict:
        return asdict(self)


def llama_shape(parameters: float, vocab_size: int | None = None) -> LlamaShape:
    """The Llama-style shape closest to `parameters` (all of them, embeddings included).

    Width is a multiple of the head size (`head_size`), depth puts width / layers near `target_aspect` (small
    models deep and thin, as MobileLLM, Liu et al. 2024, finds best for them; Kaplan et al. 2020 find the loss
    flat over a wide range of aspect ratios, so the size matters more than the exact shape), the MLP is 8/3 of the
    width rounded to 32 as in Llama, and there are as many key/value heads as heads (plain multi-head attention;
    grouped queries save inference memory, not training compute).

    >>> llama_shape(1.0e6).as_dict()
    {'layers': 4, 'hidden_size': 128, 'heads': 4, 'kv_heads': 4, 'intermediate_size': 352, 'vocab_size': 2048}
    """
    if not parameters >= SMALLEST_MODEL:
        raise RecipeError(f"parameters: {parameters:.3g} is below the smallest model Seedbed plans ({SMALLEST_MODEL:,})")
    vocabs = (vocab_size,) if vocab_size else VOCAB_SIZES
    best = None
    for vocab in vocabs:
        shape = _closest_shape(parameters, vocab)
        if vocab_size or shape.vocab_size * shape.hidden_size <= EMBEDDING_SHARE * shape.parameters:
            return shape
        best = shape
    return best


def head_size(hidden: int) -> int:
    """Attention head width: 32 for the tiniest models, 64 as GPT-2 and SmolLM, 128 from width 2048 as Llama."""
    return 32 if hidden < 256 else 64 if hidden < 2048 else 128


def target_aspect(parameters: float) -> float:
    """Width / layers a model of this size usually has: ~20 at a million parameters (MobileLLM, SmolLM-135M: 19)
    growing to ~130 at tens of billions (Llama 2 7B: 128, 70B: 102), as 32 · (N / 1e7)^(1/6)."""
    return 32 * (parameters / 1e7) ** (1 / 6)


def _closest_shape(parameters: float, vocab: int) -> LlamaShape:
    candidates = []
    aim = target_aspect(parameters)
    for hidden in range(64, 16385, 32):
        head = head_size(hidden)
        if hidden % head:
            continue
        mlp = max(32, round(8 * hidden / 3 / 32) * 32)
        no_layer = LlamaShape(0, hidden, hidden // head, hidden // head, mlp, vocab).parameters
        per_layer = LlamaShape(1, hidden, hidden // head, hidden // head, mlp, vocab).parameters - no_layer
        ideal = (parameters - no_layer) / per_layer  # layers that would hit the size exactly
        lowest, highest = max(1, hidden // 160), max(1, hidden // 16)  # width / layers between 16 and 160
        for layers in {min(max(math.floor(ideal), lowest), highest), min(max(math.ceil(ideal), lowest), highest)}:
            shape = LlamaShape(layers, hidden, hidden // head, hidden // head, mlp, vocab)
            # closest in log-size (to 5%); among near-equals, the aspect ratio nearest the usual one
            candidates.append((round(abs(math.log(shape.parameters / parameters)) / 0.05),
                               abs(math.log(hidden / layers / aim)), shape))
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


@dataclass
class Plan:
    budget_flops: float
    parameters: int  # the chosen shape's exact count
    tokens: int  # training tokens (D), repeats included
    flops: float  # 6·N·D of the plan (at most the budget)
    shape: LlamaShape
    data_tokens: int | None  # unique tokens the user has, if said
    epochs: float | None  # passes over that data
    hardware: str | None
    effective_flops_per_s: float | None
    wall_time_s: float | None
    usd: float | None
    notes: list[str]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = self.shape.as_dict()
        return d


def compute_optimal(flops: float) -> tuple[float, float]:
    """Hoffmann et al.'s compute-optimal (parameters, tokens) for a budget of `flops`: C = 6·N·20·N.

    >>> [f"{x:.3g}" for x in compute_optimal(5.76e23)]  # Chinchilla's budget: 70B parameters on 1.4T tokens
    ['6.93e+10', '1.39e+12']
    """
    n = math.sqrt(flops / (FLOPS_PER_PARAMETER_TOKEN * TOKENS_PER_PARAMETER))
    return n, TOKENS_PER_PARAMETER * n


def make_plan(*, flops: float | None = None, hours: float | None = None, hardware: str | None = None,
              flops_per_s: float | None = None, mfu: float | None = None, data_tokens: float | None = None,
              vocab_size: int | None = None, cost_per_hour: float | None = None) -> Plan:
    """The compute-optimal model for a budget given as FLOPs, or as hours on named (or described) hardware.

    >>> p = make_plan(hours=1, hardware="h100")
    >>> f"{p.parameters:.2g} parameters on {p.tokens:.2g} tokens"
    '3.4e+08 parameters on 6.9e+09 tokens'
    """
    notes: list[str] = []
    rate = _effective_rate(hardware, flops_per_s, mfu)
    if (flops is None) == (hours is None):
        raise RecipeError("budget: give the compute as --flops C, or as --hours H on --hardware NAME (one of them)")
    if hours is not None:
        if not (math.isfinite(hours) and hours > 0):
            raise RecipeError(f"hours: {hours} is not a positive number of hours")
        if rate is None:
            raise RecipeError(f"hardware: --hours needs the machine: --hardware ({', '.join(HARDWARE)}) or --flops-per-s")
        flops = hours * 3600 * rate
    if not (math.isfinite(flops) and flops > 0):
        raise RecipeError(f"flops: {flops} is not a positive number of FLOPs")
    if flops > LARGEST_BUDGET:
        raise RecipeError(f"flops: {flops:.3g} is beyond any training run ever published (Llama 3 405B used 3.8e25); "
                          "check the exponent")
    smallest = FLOPS_PER_PARAMETER_TOKEN * SMALLEST_MODEL * TOKENS_PER_PARAMETER * SMALLEST_MODEL
    if flops < smallest:
        raise RecipeError(f"flops: {flops:.3g} is too small to train any language model worth planning: the smallest "
                          f"({SMALLEST_MODEL:,} parameters on {TOKENS_PER_PARAMETER * SMALLEST_MODEL:,} tokens) needs "
                          f"{smallest:.2g} FLOPs")
    if data_tokens is not None and not (math.isfinite(data_tokens) and data_tokens >= 1):
        raise RecipeError(f"tokens: {data_tokens} is not a positive number of tokens")

    n, d = compute_optimal(flops)
    epochs = None
    if data_tokens is not None:
        epochs = d / data_tokens
        if epochs > MAX_EPOCHS:
            d = MAX_EPOCHS * data_tokens
            n = d / TOKENS_PER_PARAMETER
            notes.append(
                f"The data is too small for this budget: the compute-optimal model wants {epochs:.0f} epochs of "
                f"your {data_tokens:,.0f} tokens, and repeating data past ~{MAX_EPOCHS} epochs is worth little "
                f"(Muennighoff et al. 2023). Planned instead: a smaller model ({n:,.0f} parameters) for "
                f"{MAX_EPOCHS} epochs; it uses {FLOPS_PER_PARAMETER_TOKEN * n * d / flops:.1%} of the budget. "
                "More text would let a bigger model use the rest.")
            epochs = MAX_EPOCHS
            if n < SMALLEST_MODEL:
                raise RecipeError(
                    f"tokens: {data_tokens:,.0f} tokens of text are too few to pretrain even the smallest model "
                    f"({SMALLEST_MODEL:,} parameters want {TOKENS_PER_PARAMETER * SMALLEST_MODEL:,} tokens: at least "
                    f"{TOKENS_PER_PARAMETER * SMALLEST_MODEL // MAX_EPOCHS:,} of text seen {MAX_EPOCHS} times); "
                    "gather more text, or fine-tune a pretrained base instead")
        elif epochs > 1:
            notes.append(f"{epochs:.1f} epochs over your data: repeats up to ~{MAX_EPOCHS} cost little "
                         "(Muennighoff et al. 2023).")
    shape = llama_shape(n, vocab_size)
    tokens = int(round(d))
    used = FLOPS_PER_PARAMETER_TOKEN * shape.parameters * tokens
    wall = used / rate if rate else None
    usd = None
    if wall is not None:
        per_hour = cost_per_hour if cost_per_hour is not None else HARDWARE.get(hardware or "", {}).get("usd_per_hour")
        usd = wall / 3600 * per_hour if per_hour is not None else None
    if shape.vocab_size * shape.hidden_size > EMBEDDING_SHARE * shape.parameters:
        notes.append(f"The embedding is {shape.vocab_size * shape.hidden_size / shape.parameters:.0%} of the model: "
                     "a model this small learns more with a smaller vocabulary (--vocab-size).")
    return Plan(flops, shape.parameters, tokens, used, shape, None if data_tokens is None else int(data_tokens),
                None if epochs is None else round(epochs, 3), hardware, rate, wall, usd, notes)


def _effective_rate(hardware: str | None, flops_per_s: float | None, mfu: float | None) -> float | None:
    """FLOP/s a training run reaches: the stated rate, or the named hardware's peak, times the utilisation."""
    if hardware is not None and hardware not in HARDWARE:
        raise RecipeError(f"hardware: unknown {hardware!r}; known: {', '.join(HARDWARE)} (or give --flops-per-s)")
    if flops_per_s is not None and not (math.isfinite(flops_per_s) and flops_per_s > 0):
        raise RecipeError(f"flops_per_s: {flops_per_s} is not a positive rate")
    if mfu is not None and not 0 < mfu <= 1:
        raise RecipeError(f"mfu: {mfu} must be a fraction in (0, 1]")
    if flops_per_s is None and hardware is None:
        return None
    peak = flops_per_s if flops_per_s is not None else HARDWARE[hardware]["flops_per_s"]
    default_mfu = 1.0 if flops_per_s is not None else HARDWARE[hardware]["mfu"]  # a stated rate is what runs
    return peak * (mfu if mfu is not None else default_mfu)


def measured_rate(metrics: dict) -> float:
    """Effective FLOP/s of a finished Seedbed training run (its metrics.json): 6 · parameters · tokens/s."""
    params = metrics.get("total_parameters")
    if not params or not metrics.get("tokens_per_s"):
        raise RecipeError("measured: that metrics.json has no total_parameters and tokens_per_s (a pretrain or finetune run's)")
    return FLOPS_PER_PARAMETER_TOKEN * params * metrics["tokens_per_s"]


def estimate_tokens(paths: list[str]) -> int:
    """Tokens in text files, estimated from their size at ~4 characters a token (bytes stand in for characters)."""
    import os
    from pathlib import Path

    total = 0
    for p in paths:
        path = Path(p)
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
        if not path.exists():
            raise RecipeError(f"data: {p}: no such file or directory")
        total += sum(os.path.getsize(f) for f in files)
    return max(1, total // CHARS_PER_TOKEN)


def describe(plan: Plan) -> list[tuple[str, str]]:
    """The plan as (what, value) rows for a table."""
    s = plan.shape
    rows = [
        ("budget", f"{plan.budget_flops:.3g} FLOPs"),
        ("parameters", f"{plan.parameters:,} ({s.vocab_size * s.hidden_size:,} in the embedding)"),
        ("training tokens", f"{plan.tokens:,} ({plan.tokens / plan.parameters:.1f} per parameter)"),
        ("compute used", f"{plan.flops:.3g} FLOPs (6·N·D)"),
        ("shape", f"{s.layers} layers, width {s.hidden_size}, {s.heads} heads ({s.kv_heads} key/value), "
                  f"MLP {s.intermediate_size}, vocabulary {s.vocab_size:,}"),
    ]
    if plan.data_tokens is not None:
        rows.append(("data", f"{plan.data_tokens:,} tokens, {plan.epochs:g} epochs"))
    if plan.wall_time_s is not None:
        rows.append(("wall time", f"{duration_text(plan.wall_time_s)} at {plan.effective_flops_per_s:.3g} FLOP/s"
                     + (f" ({plan.hardware})" if plan.hardware else "")))
    if plan.usd is not None:
        rows.append(("cost", f"${plan.usd:,.2f}"))
    return rows


def duration_text(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


def pretrain_recipe(plan: Plan, data: list[str]):
    """A `seedbed pretrain` recipe that carries out `plan`: its shape, and steps for its tokens.

    Context, batch and learning rate follow the plan's size as published small models do: 256 tokens, 16 sequences
    and lr 1e-3 below 10M parameters (nanoGPT's small models); 1024 tokens, 64 sequences and 6e-4 below 100M, as
    GPT-3 Small (Brown et al. 2020: 6e-4, ~0.5M-token batches at 125M); 2048, 256 and 3e-4 above, as Llama.
    """
    from seedbed.recipe import PretrainRecipe

    n = plan.parameters
    context, batch, lr = (256, 16, 1e-3) if n < 1e7 else (1024, 64, 6e-4) if n < 1e8 else (2048, 256, 3e-4)
    s = plan.shape
    return PretrainRecipe(
        data=list(data), vocab_size=s.vocab_size, layers=s.layers, hidden_size=s.hidden_size, heads=s.heads,
        kv_heads=s.kv_heads, intermediate_size=s.intermediate_size, max_length=context, batch_size=batch, lr=lr,
        max_steps=max(1, math.ceil(plan.tokens / (batch * context))),
    )
