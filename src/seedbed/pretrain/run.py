"""`seedbed pretrain`: a Llama-style model from scratch on your own text.

    seedbed pretrain --recipe recipes/pretrain-cpu.yaml                 # the CPU demo: ~1M parameters, minutes
    seedbed plan --hours 8 --hardware h100 --data corpus/ --out plan.yaml && seedbed pretrain --recipe plan.yaml
    seedbed pretrain --out runs/pretrain --resume                       # continue an interrupted run

A byte-level BPE tokenizer is learnt from the text (`seedbed.bpe`; with Seedbed's chat template, so the model can
be fine-tuned next), the text is packed into blocks (`seedbed.pretrain.text`), and a freshly initialised
transformers `LlamaForCausalLM` learns next-token prediction through the same plumbing as `finetune`
(`seedbed.train.trainer`: TRL's trainer, checkpoints and `--resume`, MLflow, the atomic save, metrics.json). The
output directory is a model like any other: `seedbed finetune --base`, `quantize`, `serve` and `eval` take it.
Under `--num-processes N` (or `accelerate launch`) the main process builds the tokenizer and blocks and writes
every file; the others wait for them and train.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from seedbed.atomic import atomic_dir, atomic_write_text, mark_output_dir
from seedbed.errors import RecipeError, SeedbedError
from seedbed.recipe import PretrainRecipe, save_recipe
from seedbed.pretrain import card
from seedbed.pretrain.text import TextData, TextFile, all_documents, packed_blocks, text_files
from seedbed.train import callbacks as cb
from seedbed.train import lineage
from seedbed.train.launch import process_state
from seedbed.train.tracking import mlflow_run
from seedbed.train.trainer import (
    CHECKPOINTS, answer_only_trainer_class, build_trainer, resolve_precision, run_metrics, save_model_dir, sft_config,
    start_or_resume,
)

TOKENIZER_DIR = "tokenizer"  # inside out/: the learnt tokenizer, kept so that a resumed run uses the same one
BLOCKS_DIR = "blocks"  # inside out/: the packed train/validation blocks (Arrow) and text.json (their lineage)


@dataclass
class PretrainResult:
    out: Path
    metrics: dict


def pretrain(recipe: PretrainRecipe, callbacks: list | None = None) -> PretrainResult:
    """Learn a tokenizer and a Llama-style model from `recipe.data`; write a complete model directory to `recipe.out`.

    >>> pretrain(PretrainRecipe(data=["shakespeare.txt"], out="runs/p", max_steps=200))  # doctest: +SKIP
    PretrainResult(out=PosixPath('runs/p'), metrics={...})
    """
    state = process_state()  # the process group `accelerate launch` set up, or this process alone
    # The main process checks `out`, learns the tokenizer and packs the blocks; the others then check what it left
    # (its own files, marked) and read what it wrote. Were they to go together, the first to write would make the
    # others refuse `out` as holding files Seedbed did not write, or race it to the same files.
    with state.main_process_first():
        recipe, resume_from = start_or_resume(recipe, "pretrain")
        check_shape(recipe)
        per_device = per_device_batch(recipe, state.num_processes)
        out = Path(recipe.out)
        if state.is_main_process:
            mark_output_dir(out)
            save_recipe(recipe.model_copy(update={"resume": False}), out / "recipe.yaml", "pretrain")
            prepare_tokenizer(recipe, out)
            prepare_blocks(recipe, out)
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / TOKENIZER_DIR)
    text = json.loads((out / BLOCKS_DIR / "text.json").read_text())
    blocks = load_from_disk(str(out / BLOCKS_DIR))
    train, val = blocks["train"], blocks["validation"]
    if len(train) == 0:
        raise RecipeError(f"data: {text['tokens']:,} tokens make no full block of max_length {recipe.max_length}; "
                          "give more text or a shorter max_length")

    torch.manual_seed(recipe.seed)
    model = new_model(recipe, tokenizer)
    dtype, precision_flags = resolve_precision(recipe.precision)
    config = sft_config(
        recipe.model_copy(update={"batch_size": per_device}), out, has_val=len(val) > 0,
        eval_batch_size=per_device_eval_batch(per_device, len(val), state.num_processes),
        resumed=resume_from is not None, precision_flags=precision_flags, save_total_limit=recipe.save_total_limit,
        dataset_kwargs={"skip_prepare_dataset": True},  # already tokenized and packed to max_length
        # The blocks were shuffled once, seeded, when packed: read in that order, step k sees the same blocks
        # under any process count (each process takes its slice of the global batch), so curves and resumes agree.
        train_sampling_strategy="sequential",
    )
    clock = cb.WallClock(resume_from)
    trainer = build_trainer(
        answer_only_trainer_class(), model=model, tokenizer=tokenizer, config=config, train_features=train,
        val_features=val, callbacks=[cb.RichProgress(disable=recipe.quiet or not state.is_main_process,
                                                     label="pretrain"), clock, cb.MLflowLogger(), *(callbacks or [])],
    )
    parameters = sum(p.numel() for p in model.parameters())
    tracking = mlflow_run(out, recipe) if state.is_main_process else nullcontext()  # one process logs
    with tracking as run:
        result = trainer.train(resume_from_checkpoint=resume_from)
        if trainer.state.global_step < trainer.state.max_steps:  # a callback stopped it: checkpoints stay to resume
            return PretrainResult(out, {"stopped_at_step": trainer.state.global_step})
        if not state.is_main_process:
            return PretrainResult(out, {})
        final = trainer.accelerator.unwrap_model(trainer.model)
        save_model_dir(final, tokenizer, out)
        data = TextData([TextFile(**f) for f in text["files"]], examples=range(text["documents"]))
        metrics = run_metrics(
            trainer, result, clock, data=data, not_sampled=0, features=(train, val),
            stats=({"truncated": 0, "dropped_no_answer": 0, "dropped_ids": []},) * 2, precision_flags=precision_flags,
            parameters={"trainable_parameters": parameters, "total_parameters": parameters},
        )
        metrics["text"] = text
        metrics["shape"] = shape_of(final.config)
        metrics["tokens_per_parameter"] = round(metrics["tokens_seen"] / parameters, 2)
        metrics["cost"] = lineage.estimated_cost(metrics["wall_time_s"], recipe.cost_per_hour)
        metrics["samples"] = write_samples(final, tokenizer, recipe, val_documents(recipe))
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
        atomic_write_text(out / "README.md", card.model_card(recipe, metrics, (out / "recipe.yaml").read_text()))
        if run is not None:
            import mlflow

            for name in ("recipe.yaml", "metrics.json", "README.md"):
                mlflow.log_artifact(str(out / name))
    for scratch in (CHECKPOINTS, BLOCKS_DIR, TOKENIZER_DIR):  # complete: the model directory holds the tokenizer
        shutil.rmtree(out / scratch, ignore_errors=True)  # and optimizer states and packed blocks are dead weight
    return PretrainResult(out, metrics)


def check_shape(recipe: PretrainRecipe) -> None:
    if recipe.mapping is not None:
        raise RecipeError("mapping: pretraining reads plain text (text_fields), not a chat mapping")
    if recipe.hidden_size % recipe.heads:
        raise RecipeError(f"heads: hidden_size {recipe.hidden_size} does not divide into {recipe.heads} heads")
    kv = recipe.kv_heads or recipe.heads
    if recipe.heads % kv:
        raise RecipeError(f"kv_heads: {recipe.heads} heads do not share {kv} key/value heads evenly")


def per_device_batch(recipe: PretrainRecipe, processes: int) -> int:
    """Sequences each process takes per micro-batch, so that a step sees `batch_size` whatever the process count
    (what lets a checkpoint resume under another count and gives the same loss curve)."""
    per_step = processes * recipe.grad_accum
    if recipe.batch_size % per_step:
        raise RecipeError(f"batch_size: {recipe.batch_size} sequences do not split evenly over {processes} processes "
                          f"x {recipe.grad_accum} accumulation steps")
    return recipe.batch_size // per_step


def per_device_eval_batch(per_device: int, validation_blocks: int, processes: int) -> int:
    """Validation blocks each process takes per batch: under several processes, a divisor of the block count.

    The Trainer averages each process's batch loss and weights it by the batch's size. When the blocks do not fill
    the last batch, accelerate pads it with blocks from the start (so that every process takes a batch) and later
    drops the padding's share of the gathered losses; a block padded into a batch with real ones is counted in
    that batch's mean anyway, so the validation loss would depend on the process count (5 blocks in batches of 4
    under 2 processes: 5.731 against 5.737 under 1). Batches that divide the blocks pad only with whole batches,
    which are dropped exactly.
    """
    if processes == 1 or validation_blocks == 0:
        return per_device
    return max(b for b in range(1, per_device + 1) if validation_blocks % b == 0)


def prepare_tokenizer(recipe: PretrainRecipe, out: Path):
    """The run's tokenizer, saved in out/tokenizer: learnt from the data (streamed), or the one named."""
    target = out / TOKENIZER_DIR
    if (target / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(target)  # resuming: the tokenizer the blocks were made with
    if recipe.tokenizer:
        from seedbed.models import load_tokenizer

        tokenizer = load_tokenizer(recipe.tokenizer)
    else:
        from seedbed.bpe import train_tokenizer

        tokenizer = train_tokenizer(all_documents(text_files(recipe.data), recipe.text_fields), recipe.vocab_size)
    with atomic_dir(target) as slot:
        tokenizer.save_pretrained(slot)
    return tokenizer


def prepare_blocks(recipe: PretrainRecipe, out: Path) -> dict:
    """Pack the data into out/blocks (train and validation splits) once; a resumed run reads them back."""
    target = out / BLOCKS_DIR
    if (target / "text.json").is_file():
        return json.loads((target / "text.json").read_text())
    from datasets import Dataset, DatasetDict, Features, Sequence, Value

    features = Features({"input_ids": Sequence(Value("int32"))})

    def pack(paths: list[str], counts: dict, cache: str):
        from datasets.exceptions import DatasetGenerationError

        try:
            # Tuples, not lists: `datasets` would take a list in gen_kwargs for shards to split between workers.
            return Dataset.from_generator(
                packed_blocks, features=features, cache_dir=cache, keep_in_memory=False,
                gen_kwargs={"paths": tuple(paths), "tokenizer_dir": str(out / TOKENIZER_DIR),
                            "max_length": recipe.max_length, "text_fields": tuple(recipe.text_fields), "counts": counts})
        except DatasetGenerationError as e:
            if isinstance(e.__cause__, SeedbedError):  # a bad line of the user's file: their error, not ours
                raise e.__cause__ from None
            raise

    counts, val_counts = {}, {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".blocks-") as cache:
        train = pack(recipe.data, counts, cache)
        if recipe.val_data:
            val = pack(recipe.val_data, val_counts, cache)
        elif recipe.val_fraction > 0 and len(train) >= 2:
            split = train.train_test_split(test_size=max(1, round(len(train) * recipe.val_fraction)), seed=recipe.seed)
            train, val = split["train"], split["test"]
        else:
            val = train.select([])
        train = train.shuffle(seed=recipe.seed).flatten_indices()  # one seeded shuffle, kept on disk (see above)
        files = counts.get("files", []) + val_counts.get("files", [])
        text = {
            "files": [f.__dict__ for f in files],
            "documents": sum(f.records for f in files), "characters": sum(f.characters for f in files),
            "tokens": sum(f.tokens for f in files), "train_blocks": len(train), "validation_blocks": len(val),
            "block_tokens": recipe.max_length,
            # Packing keeps whole blocks; the last partial block of each split is left out, and counted here.
            "left_over_tokens": counts.get("left_over_tokens", 0) + val_counts.get("left_over_tokens", 0),
        }
        with atomic_dir(target) as slot:
            DatasetDict({"train": train, "validation": val}).save_to_disk(slot)
            (Path(slot) / "text.json").write_text(json.dumps(text, indent=2))
    return text


def new_model(recipe: PretrainRecipe, tokenizer):
    """A freshly initialised Llama (transformers' own initialisation), embeddings tied as small models do."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads, num_key_value_heads=recipe.kv_heads or recipe.heads,
        intermediate_size=recipe.intermediate_size or max(32, round(8 * recipe.hidden_size / 3 / 32) * 32),
        max_position_embeddings=recipe.max_length, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def shape_of(config) -> dict:
    return {"layers": config.num_hidden_layers, "hidden_size": config.hidden_size, "heads": config.num_attention_heads,
            "kv_heads": config.num_key_value_heads, "intermediate_size": config.intermediate_size,
            "vocab_size": config.vocab_size, "context": config.max_position_embeddings}


def val_documents(recipe: PretrainRecipe, limit: int = 64) -> list[str]:
    """Documents to take sample prompts from: the validation files', else the last documents of the data."""
    import collections

    docs = collections.deque(maxlen=limit)
    for doc in all_documents(text_files(recipe.val_data or recipe.data), recipe.text_fields):
        docs.append(doc)
    return list(docs)


def write_samples(model, tokenizer, recipe: PretrainRecipe, docs: list[str]) -> list[dict]:
    """Continue a few prompts (the first words of held-out documents unless given), by the one decode path."""
    from seedbed.inference.generate import generate
    from seedbed.inference.hf import TorchBackend
    from seedbed.inference.stops import Sampling

    if recipe.samples == 0:
        return []
    prompts = recipe.sample_prompts or [" ".join(d.split()[:4]) for d in docs[-recipe.samples:]]
    model.eval()
    backend = TorchBackend(model, tokenizer)
    # Sampled at temperature 0.8 (greedy repeats itself in a model this small), seeded for a reproducible card.
    sampling = Sampling(max_new_tokens=recipe.sample_tokens, temperature=0.8, top_p=0.95, seed=recipe.seed)
    texts = [generate(backend, [tokenizer.bos_token + p], replace(sampling, seed=recipe.seed + i))[0]
             for i, p in enumerate(prompts)]  # a seed each: one shared seed draws the same noise for every prompt
    return [{"prompt": p, "continuation": t} for p, t in zip(prompts, texts)]
