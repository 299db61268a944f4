"""What every training stage (finetune, distill) shares: reading and splitting data, tokenizing with labels on
answers only, TRL's config and trainer, resuming, the atomic save of the model directory, and metrics.json.

    recipe, resume_from = start_or_resume(recipe, "finetune")
    data, train_examples, val_examples, not_sampled = read_splits(recipe)
    ...
    trainer = build_trainer(answer_only_trainer_class(), model=model, tokenizer=tokenizer, config=sft_config(...), ...)

Every function here reads only the fields of `seedbed.recipe.TrainArgs`, which both stages' recipes extend.
"""

from __future__ import annotations

import random
import resource
import shutil
import tempfile
from pathlib import Path

import torch

from seedbed.atomic import OWNER_MARKER, atomic_path, check_output_dir
from seedbed.chat import tokenize_example
from seedbed.data.readers import read_examples
from seedbed.errors import RecipeError, TrainingDiverged
from seedbed.models import default_device, inference_dtype, resolve, save_model
from seedbed.recipe import TrainArgs, load_recipe
from seedbed.train import callbacks as cb
from seedbed.train import lineage
from seedbed.train.callbacks import CHECKPOINT_SEAL
from seedbed.train import template_tokens as tt

CHECKPOINTS = "checkpoints"


def answer_only_loss(model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled (answer) tokens, computing logits only where it is needed.

    The output layer is most of the cost of a small model with a large vocabulary (Gemma 3 270M: 640 x 262,144),
    and prompt tokens carry no loss, so the output layer sees only the hidden states of positions whose next token
    is labelled. `logits_to_keep` alone can only keep the same positions in every row, and in a packed batch some
    row has an answer at almost every position; a pre-hook on the output layer picks each row's own positions
    (a third fewer logits on packed SNIPS), while the model's own logit post-processing (Gemma's soft-capping,
    scaling) still applies after it.
    """
    labels = inputs.pop("labels")
    next_labels = labels[:, 1:]  # (batch, seq - 1): the token each position must predict
    keep = (next_labels != -100).any(dim=0).nonzero().flatten()  # positions labelled in any row
    targets = next_labels[:, keep]  # (batch, kept)
    scored = targets != -100

    def only_scored(module, args):
        return (args[0][scored][None],)  # (batch, kept, hidden) -> (1, scored, hidden)

    inner = getattr(model, "module", model)  # under DDP the wrapper runs the forward, the module holds the head
    hook = inner.get_output_embeddings().register_forward_pre_hook(only_scored)
    try:
        logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (1, scored, vocab)
    finally:
        hook.remove()
    loss = torch.nn.functional.cross_entropy(logits[0].float(), targets[scored], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else scored.sum()
    return loss / torch.as_tensor(count, device=loss.device).clamp(min=1)


def build_features(tokenizer, examples, max_length: int) -> tuple[list[dict], dict]:
    """Tokenize examples for training; count what truncation cut and what it left without an answer."""
    features, truncated, no_answer = [], 0, []
    for example in examples:
        full = tokenize_example(tokenizer, example)
        if len(full["input_ids"]) > max_length:
            truncated += 1
            full = {k: v[:max_length] for k, v in full.items()}
        if not any(full["assistant_masks"]):
            no_answer.append(example.id)  # nothing left to learn from: counted and named, not silently lost
            continue
        features.append(full)
    return features, {"truncated": truncated, "dropped_no_answer": len(no_answer), "dropped_ids": no_answer[:100]}


def prepare_template_tokens(model, tokenizer, recipe: TrainArgs, train_features: list[dict], *, lora: bool) -> dict:
    """Check the rows of the chat template's tokens before training and make the under-trained ones learnable.

    auto: the under-trained ones; always: every template token; off: nothing, as before. Only tokens the training
    data contains are trained (a row with no example to learn from would only be pushed down). With `lora` the
    caller attaches `report["trained_ids"]` as trainable rows (`seedbed.train.trainable_rows`); in full
    fine-tuning every row trains already. With `template_tokens_init: mean`, under-trained rows start from the mean
    ordinary row (`tt.init_from_mean`). Prints one line when a token is under-trained; returns the report that
    metrics.json and the model card carry.
    """
    if recipe.template_tokens == "off":
        return {"mode": "off", "checked": [], "under_trained": [], "trained": [], "trained_ids": []}
    verdicts = tt.check_model(model, tokenizer)
    present = {t for f in train_features for t in f["input_ids"]}
    flagged = [v for v in verdicts if v.under_trained]
    chosen = [v for v in (verdicts if recipe.template_tokens == "always" else flagged) if v.id in present]
    initialised = [v for v in flagged if v.id in present] if recipe.template_tokens_init == "mean" else []
    if initialised:
        tt.init_from_mean(model, tokenizer, [v.id for v in initialised], recipe.seed)
    how = ("LoRA: their rows train as small corrections beside the adapters" if lora
           else "full fine-tuning: their rows train with the rest")
    report = {
        "mode": recipe.template_tokens, "init": recipe.template_tokens_init,
        "checked": [v.as_dict() for v in verdicts],
        "under_trained": [v.text for v in flagged],
        "trained": [v.text for v in chosen], "trained_ids": [v.id for v in chosen],
        "initialised_from_mean": [v.text for v in initialised],
        "how": how if chosen else "none trained",
    }
    if flagged or chosen:
        from rich.console import Console

        line = (f"Template tokens under-trained: {'; '.join(v.describe() for v in flagged)}." if flagged
                else "Template tokens: none under-trained.")
        if chosen:
            line += f" Training {', '.join(v.text for v in chosen)} ({how})"
            line += ", re-initialised from the mean row." if initialised else "."
        else:
            line += " Not in the training data, so not trained."
        Console(stderr=True).print(line, markup=False, highlight=False, soft_wrap=True)
    return report


def split_validation(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded random split; at least one validation example whenever there are two or more."""
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(examples) * fraction))
    held = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def resolve_precision(precision: str, base: str | None = None) -> tuple[torch.dtype, dict]:
    """Model dtype and trainer flags. auto: bf16 autocast where the model would run in bf16 anyway
    (`models.inference_dtype`: a GPU that has bf16, or for `base`, a half-precision model on a CPU with native bf16,
    where a LoRA step is ~1.4x faster than fp32, BENCHMARKS.md); fp32 elsewhere (emulated bf16 is slow)."""
    if precision == "auto":
        if torch.cuda.is_available():
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            precision = "bf16" if base and inference_dtype(resolve(base), "cpu") == torch.bfloat16 else "fp32"
    if precision == "bf16":
        return torch.float32, {"bf16": True, "fp16": False}  # fp32 master weights, bf16 autocast
    if precision == "fp16":
        return torch.float32, {"bf16": False, "fp16": True}
    # Said explicitly: TRL's SFTConfig turns bf16 autocast on by default, on the CPU too, where it is slower.
    return torch.float32, {"bf16": False, "fp16": False}


def last_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint of the run in `out`, or None.

    A checkpoint is complete once `callbacks.SealCheckpoint` has written its seal, after the trainer and every callback
    have saved into it; one a kill cut short has none and is passed over (`incomplete_checkpoints`). A run from
    before seals were written has none at all: there a checkpoint counts as complete when it holds the trainer
    state, which transformers writes last.
    """
    complete = sorted_checkpoints(out)
    complete = [c for c in complete if c not in incomplete_checkpoints(out)]
    return str(complete[-1]) if complete else None


def sorted_checkpoints(out: Path) -> list[Path]:
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")
             and p.name.removeprefix("checkpoint-").isdigit()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def incomplete_checkpoints(out: Path) -> list[Path]:
    """The checkpoints of `out` that a kill cut short while they were being saved."""
    found = sorted_checkpoints(out)
    sealed = any((c / CHECKPOINT_SEAL).is_file() for c in found)
    name = CHECKPOINT_SEAL if sealed else "trainer_state.json"
    return [c for c in found if not (c / name).is_file()]


def answer_only_trainer_class():
    from trl import SFTTrainer

    class SeedbedSFTTrainer(SFTTrainer):
        """SFTTrainer with `answer_only_loss` off the GPU.

        TRL's fused log-prob head runs a Triton kernel on GPUs; elsewhere its pure-torch fallback scores every
        position and computes entropy over the whole vocabulary, which measured 57 tokens/s against about 100 for
        `answer_only_loss` on Gemma 3 270M with 2 CPU cores (BENCHMARKS.md). On GPUs TRL's path stays.
        """

        row_params: list = []  # the template rows' corrections (`trainable_rows`), set after `attach`
        row_lr: float | None = None

        def create_optimizer(self, model=None):
            """The default optimizer, with the template rows in a group of their own at `row_lr`."""
            optimizer = super().create_optimizer(model)
            if self.row_params and self.row_lr and not any(g.get("template_rows") for g in optimizer.param_groups):
                mine = {id(p) for p in self.row_params}
                for group in optimizer.param_groups:
                    group["params"] = [p for p in group["params"] if id(p) not in mine]
                optimizer.add_param_group({"params": list(self.row_params), "lr": self.row_lr, "weight_decay": 0.0,
                                           "template_rows": True})
            return optimizer

        def training_step(self, model, inputs, num_items_in_batch=None):
            """One forward and backward pass; a loss or gradient that is not a finite number stops the run.

            transformers' own guard (`logging_nan_inf_filter`) hides a NaN loss behind the previous average, and
            gradient clipping turns an infinite gradient norm into zero gradients, so a diverged run would
            otherwise finish "successfully" with NaN or frozen weights. The check syncs with the device once
            per micro-batch, which the logging filter did too. Under fp16 an infinite gradient is the loss
            scaler's business (it skips the step), so only the loss is checked there.
            """
            loss = super().training_step(model, inputs, num_items_in_batch)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            checks = {"loss": loss.detach()}
            if grads and not self.args.fp16:
                checks["gradient norm"] = torch.nn.utils.get_total_norm(grads)
            for what, value in checks.items():
                if not torch.isfinite(value):
                    raise TrainingDiverged(
                        f"training diverged at step {self.state.global_step + 1}: the {what} is {value.item()}; "
                        f"lower the learning rate (--lr {self.args.learning_rate:g}) or check the data. The model "
                        f"was not saved; checkpoints of earlier steps, if any, are in {self.args.output_dir}")
            return loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or self.args.device.type == "cuda":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = answer_only_loss(model, inputs, num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                # As Trainer.compute_loss does: num_items_in_batch counts every process's tokens and DDP averages
                # gradients over processes, so each process's share is scaled back up (else N processes learn 1/N).
                loss = loss * self.accelerator.num_processes
            return loss

    return SeedbedSFTTrainer


def start_or_resume(recipe: TrainArgs, section: str, model_fields: tuple[str, ...] = ()):
    """The recipe to run and the checkpoint to resume from, for a training stage whose output is `recipe.out`.

    With `resume`, the recipe saved in `out` is the one that runs (only `quiet` is taken from the caller), from its
    newest complete checkpoint; a finished run is refused, and checkpoints a kill cut short are removed. Without,
    an `out` that already holds a run is refused, never silently overwritten, and so is one that is, holds or sits
    inside an input (its data, and the models its `model_fields` name: base, teacher, student) or holds files Seedbed did not
    write (`seedbed.atomic.check_output_dir`).
    """
    out = Path(recipe.out)
    resume_from = None
    if recipe.resume:
        saved = out / "recipe.yaml"
        if not saved.is_file():
            raise RecipeError(f"{out}: nothing to resume (no recipe.yaml); start the run without --resume")
        if (out / "metrics.json").is_file():
            raise RecipeError(f"{out}: this run finished (metrics.json is written); nothing to resume. To train "
                              "again, start a new run with another --out")
        recipe = getattr(load_recipe(saved), section).model_copy(update={"resume": True, "quiet": recipe.quiet})
        (out / OWNER_MARKER).touch()  # its recipe.yaml says this run is ours, also if it predates the marker
        for broken in incomplete_checkpoints(out):
            from rich.console import Console

            Console(stderr=True).print(f"Removing {broken}: its save was cut short (no {CHECKPOINT_SEAL}).",
                                       markup=False, highlight=False)
            shutil.rmtree(broken)
        resume_from = last_checkpoint(out)
    elif sorted_checkpoints(out) or (out / "metrics.json").exists():
        raise RecipeError(f"out: {out} already holds a run; pass --resume to continue it, or choose another --out")
    if not recipe.data:
        raise RecipeError("data: give at least one training file (--data FILE)")
    models = [getattr(recipe, name) for name in model_fields]
    inputs = [*recipe.data, *(recipe.val_data or []), *(m for m in models if m and Path(m).exists())]
    check_output_dir(out, inputs)  # the caller marks it (`atomic.mark_output_dir`) once its inputs have read well
    return recipe, resume_from


def read_splits(recipe: TrainArgs):
    """Read `recipe.data` and split it: (read data, train examples, validation examples, left out by max_records)."""
    data = read_examples(recipe.data, recipe.mapping)
    train_examples, val_examples = (
        (data.examples, read_examples(recipe.val_data, recipe.mapping).examples)
        if recipe.val_data
        else split_validation(data.examples, recipe.val_fraction, recipe.seed)
    )
    not_sampled = 0
    if recipe.max_records and recipe.max_records < len(train_examples):
        not_sampled = len(train_examples) - recipe.max_records
        # A seeded random subset in file order, so that a mix of files stays a mix.
        keep = sorted(random.Random(recipe.seed).sample(range(len(train_examples)), recipe.max_records))
        train_examples = [train_examples[i] for i in keep]
    return data, train_examples, val_examples, not_sampled


def sft_config(recipe: TrainArgs, out: Path, *, has_val: bool, resumed: bool, precision_flags: dict,
               eval_batch_size: int | None = None, **extra):
    """TRL's SFTConfig from the fields every training recipe has; `extra` adds stage-specific settings."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=eval_batch_size or recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.lr,
        lr_scheduler_type=recipe.scheduler,
        warmup_steps=recipe.warmup,
        weight_decay=recipe.weight_decay,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        max_length=recipe.max_length,
        logging_steps=recipe.logging_steps,
        eval_strategy="steps" if has_val else "no",
        eval_steps=recipe.eval_steps,
        eval_on_start=has_val and not resumed,  # the step-0 point of the validation curve
        save_steps=recipe.save_steps,
        seed=recipe.seed,
        data_seed=recipe.seed,
        use_cpu=default_device() == "cpu",
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        prediction_loss_only=True,  # validation needs the loss only, not the logits
        logging_nan_inf_filter=False,  # a NaN loss stops the run (`training_step`), never hidden by an average
        dataset_num_proc=None,
        **precision_flags,
        **extra,
    )


def build_trainer(trainer_class, *, model, tokenizer, config, train_features, val_features, callbacks, **kwargs):
    """A trainer on tokenized features, with our callbacks in place of the printer's dict dumps."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_features),
        eval_dataset=Dataset.from_list(val_features) if val_features else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        **kwargs,
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar shows the same, without dict dumps
    trainer.add_callback(cb.SealCheckpoint())
    return trainer


def add_checkpoint_writer(trainer, callback) -> None:
    """Add a callback that saves into each checkpoint, ahead of the seal that says the checkpoint is complete."""
    seal = trainer.pop_callback(cb.SealCheckpoint)
    trainer.add_callback(callback)
    trainer.add_callback(seal)


def run_metrics(trainer, result, clock, *, data, not_sampled: int, features: tuple, stats: tuple,
                precision_flags: dict, parameters: dict) -> dict:
    """metrics.json of a finished training run: curves, throughput, memory, example accounting, machine."""
    state = trainer.state
    (train_features, val_features), (train_stats, val_stats) = features, stats
    session_tokens = state.num_input_tokens_seen - (clock.tokens_at_start or 0)
    session_time = result.metrics.get("train_runtime", 1e-9)
    train = [
        {"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"], "lr": h.get("learning_rate"),
         "tokens": h.get("num_input_tokens_seen")}
        for h in state.log_history if "loss" in h
    ]
    return {
        "train": train,
        "diverged": loss_spike(train),
        "val": [{"step": h["step"], "loss": h["eval_loss"]} for h in state.log_history if "eval_loss" in h],
        "steps": state.global_step,
        "tokens_seen": int(state.num_input_tokens_seen),
        "wall_time_s": round(clock.total, 2),
        "tokens_per_s": round(session_tokens / session_time, 2),
        **peak_memory(),
        **parameters,
        "examples": {
            "records_read": sum(f.records for f in data.files), "examples_read": len(data.examples),
            "train": len(train_features),
            "val": len(val_features), "not_sampled": not_sampled,
            "truncated": train_stats["truncated"] + val_stats["truncated"],
            "dropped_no_answer": train_stats["dropped_no_answer"] + val_stats["dropped_no_answer"],
            "dropped_ids": train_stats["dropped_ids"] + val_stats["dropped_ids"],
        },
        "device": default_device(),
        "processes": trainer.accelerator.num_processes,
        "precision": next((p for p in ("bf16", "fp16") if precision_flags[p]), "fp32"),
        "hardware": lineage.hardware(),
        "packages": lineage.package_versions(),
        "data_files": [f.__dict__ for f in data.files],
    }


SPIKE_FACTOR = 3.0  # a training loss 3x the first one: far worse than the untrained model's guesses


def loss_spike(train: list[dict]) -> dict | None:
    """The first logged training loss above SPIKE_FACTOR times the first one, or None.

    A learning rate far too high can blow the loss up by orders of magnitude and then leave the model predicting
    a uniform distribution, whose loss (ln of the vocabulary size) is about where an untrained model starts: the
    end of the curve then looks like a small improvement. A spike this large, even if followed by a recovery, says
    the run was unstable; metrics.json and the CLI say so.

    >>> loss_spike([{"step": 1, "loss": 5.9}, {"step": 2, "loss": 1.8e7}, {"step": 3, "loss": 5.93}])
    {'step': 2, 'loss': 18000000.0, 'first_loss': 5.9}
    """
    if not train:
        return None
    first = train[0]["loss"]
    spike = next((h for h in train if h["loss"] > SPIKE_FACTOR * first), None)
    return None if spike is None else {"step": spike["step"], "loss": spike["loss"], "first_loss": first}


def save_model_dir(model, tokenizer, out: Path) -> None:
    """Save the model and tokenizer into `out`, which already holds the run (recipe.yaml, checkpoints, ...).

    The model is written to a staging directory inside `out` first; then each finished file takes its place
    atomically, so `out` never holds a half-written file.
    """
    with tempfile.TemporaryDirectory(dir=out, prefix=".model-") as staging:
        save_model(model, tokenizer, Path(staging))
        for f in sorted(Path(staging).iterdir()):
            with atomic_path(out / f.name) as slot:
                shutil.move(f, slot)  # same file system: a rename; atomic_path then puts it in place


def peak_memory() -> dict:
    """The run's peak memory: CUDA's max allocated on a GPU, else the process's peak resident set."""
    if torch.cuda.is_available():
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "peak_memory_kind": "cuda max allocated"}
    # ru_maxrss is in KiB on Linux: the process's peak resident memory, model load included.
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_memory_kind": "peak RSS"}
