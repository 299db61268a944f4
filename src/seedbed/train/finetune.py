"""Instruction fine-tuning (LoRA or full) of a causal LM, on TRL's SFTTrainer.

    seedbed finetune --base gemma-3-270m --data train.jsonl --method lora --out runs/my-model
    seedbed finetune --out runs/my-model --resume          # continue an interrupted run

What we add on top of TRL: our readers (every shape, errors with file:line:field), tokenization that puts labels
on assistant tokens only for any chat template, accounting of every example, a progress bar, MLflow, and an
output directory that is a complete, documented model: merged weights + tokenizer + recipe.yaml + metrics.json +
a model card with lineage. What distillation shares with it (data, tokenization, trainer, resuming, saving,
metrics) is in `seedbed.train.trainer`; this module holds the LoRA / full specifics.
"""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from seedbed.atomic import atomic_dir, atomic_write_text, mark_output_dir, strict_json
from seedbed.errors import RecipeError
from seedbed.models import checkpoint_dtype, load_model, resolve
from seedbed.recipe import FinetuneRecipe, save_recipe
from seedbed.train import callbacks as cb
from seedbed.train import lineage, truthfulness
from seedbed.train.tracking import mlflow_run
from seedbed.train.trainer import (
    CHECKPOINTS, add_checkpoint_writer, answer_only_trainer_class, build_features, build_trainer, prepare_template_tokens, read_splits,
    resolve_precision, run_metrics, save_model_dir, sft_config, start_or_resume,
)
from seedbed.train.trainable_rows import attach


@dataclass
class FinetuneResult:
    out: Path
    metrics: dict


def finetune(recipe: FinetuneRecipe, callbacks: list | None = None) -> FinetuneResult:
    """Fine-tune `recipe.base` on `recipe.data` and write a complete model directory to `recipe.out`.

    >>> finetune(FinetuneRecipe(base="tiny-llama/", data=["train.jsonl"], out="runs/t"))  # doctest: +SKIP
    FinetuneResult(out=PosixPath('runs/t'), metrics={...})
    """
    recipe, resume_from = start_or_resume(recipe, "finetune", model_fields=("base",))
    out = Path(recipe.out)
    torch.manual_seed(recipe.seed)
    data, train_examples, val_examples, not_sampled = read_splits(recipe)

    dtype, precision_flags = resolve_precision(recipe.precision, recipe.base)
    model, tokenizer = load_model(recipe.base, dtype=dtype)
    train_features, train_stats = build_features(tokenizer, train_examples, recipe.max_length)
    val_features, val_stats = build_features(tokenizer, val_examples, recipe.max_length)
    if not train_features:
        raise RecipeError("data: no training example has answer tokens left within max_length")
    lora = recipe.method == "lora"
    template = prepare_template_tokens(model, tokenizer, recipe, train_features, lora=lora)

    mark_output_dir(out)
    save_recipe(recipe.model_copy(update={"resume": False}), out / "recipe.yaml", "finetune")
    config = sft_config(
        recipe, out, has_val=bool(val_features), resumed=resume_from is not None, precision_flags=precision_flags,
        packing=recipe.packing,
        activation_checkpointing=recipe.gradient_checkpointing,  # transformers 5's name for it
        save_total_limit=recipe.save_total_limit,
    )
    peft_config = lora_config(recipe) if lora else None
    clock = cb.WallClock(resume_from)
    trainer = build_trainer(
        answer_only_trainer_class(), model=model, tokenizer=tokenizer, config=config, train_features=train_features,
        val_features=val_features, callbacks=[cb.RichProgress(disable=recipe.quiet), clock, cb.ProgressLog(out), cb.MLflowLogger(),
                                              *(callbacks or [])],
        peft_config=peft_config,
    )
    # LoRA freezes the embedding: the template tokens' rows train as small corrections attached to the wrapped
    # model (`seedbed.train.trainable_rows`; full fine-tuning trains every row already).
    rows = attach(trainer.model, template["trained_ids"]) if lora else None
    if rows is not None:
        trainer.row_params, trainer.row_lr = rows.parameters(), recipe.lr * recipe.template_tokens_lr_scale
        add_checkpoint_writer(trainer, cb.SaveRows(rows))
        if resume_from is not None:
            rows.load(resume_from)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    main = trainer.is_world_process_zero()  # under `accelerate launch` (seedbed.train.launch) one process writes
    with mlflow_run(out, recipe) if main else nullcontext() as run:
        result = trainer.train(resume_from_checkpoint=resume_from)
        state = trainer.state
        if state.global_step < state.max_steps:  # stopped early (a callback asked): leave checkpoints to resume
            return FinetuneResult(out, {"stopped_at_step": state.global_step})
        if not main:
            return FinetuneResult(out, {})
        if lora:
            # Keep the adapter too (small, mergeable elsewhere), saved before merging: merge_and_unload takes the
            # LoRA layers and trainable token rows out of the model, and an adapter saved after it is empty.
            with atomic_dir(out / "adapter", replace=True) as slot:
                trainer.model.save_pretrained(slot)
                if rows is not None:
                    rows.save(slot)  # the template tokens' rows, beside the LoRA weights
        if rows is not None:
            rows.merge()  # row + delta into the embedding (and the tied output head with it)
        final = trainer.model.merge_and_unload() if lora else trainer.model
        if lora and (native := checkpoint_dtype(resolve(recipe.base))) in (torch.bfloat16, torch.float16):
            # Merged LoRA goes back to the precision its base was released in (as PEFT's merge into a bf16 base
            # does): half the size, and it runs where and as fast as the base does (`models.inference_dtype`).
            final.to(native)
        save_model_dir(final, tokenizer, out)

        metrics = run_metrics(
            trainer, result, clock, data=data, not_sampled=not_sampled, features=(train_features, val_features),
            stats=(train_stats, val_stats), precision_flags=precision_flags,
            parameters={"trainable_parameters": trainable, "total_parameters": sum(p.numel() for p in final.parameters())},
        )
        metrics["template_tokens"] = template
        metrics["cost"] = lineage.estimated_cost(metrics["wall_time_s"], recipe.cost_per_hour)
        metrics["truthfulness"] = truthfulness.measure(out, recipe.base, recipe.truthfulness_questions)
        atomic_write_text(out / "metrics.json", strict_json(metrics, indent=2))
        card = lineage.model_card(
            base=recipe.base, method=recipe.method, files=data.files, metrics=metrics,
            recipe_yaml=(out / "recipe.yaml").read_text(),
        )
        atomic_write_text(out / "README.md", card)
        if run is not None:
            import mlflow

            for name in ("recipe.yaml", "metrics.json", "README.md"):
                mlflow.log_artifact(str(out / name))
            mlflow.log_metrics({"tokens_per_s": metrics["tokens_per_s"], "wall_time_s": metrics["wall_time_s"]})
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the run is complete; optimizer states are dead weight
    return FinetuneResult(out, metrics)


def lora_config(recipe: FinetuneRecipe):
    """PEFT's LoraConfig from the recipe's lora_* fields."""
    from peft import LoraConfig

    targets = recipe.lora_targets if recipe.lora_targets == "all-linear" else recipe.lora_targets.split(",")
    return LoraConfig(
        r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
        target_modules=targets, task_type="CAUSAL_LM",
    )
