"""Knowledge distillation: train a smaller student to imitate a teacher, on TRL's SFTTrainer.

    seedbed distill --teacher runs/tuned --student narrow-half --data train.jsonl --out runs/student
    seedbed distill --teacher runs/tuned --student keep-every-2 --mode sequence --teacher-url http://127.0.0.1:8000 \\
        --data train.jsonl --out runs/student-seq
    seedbed distill --out runs/student --resume          # continue an interrupted run

Two methods:
- **logit** (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"): the student matches
  the teacher's next-token distribution on every answer token, softened by a temperature, mixed with the usual
  cross-entropy on the reference answer. Needs the teacher loaded here, with the same tokenizer.
- **sequence** (Kim & Rush 2016, "Sequence-Level Knowledge Distillation"): the teacher answers every training
  prompt (greedy), locally or through an OpenAI-compatible server such as `seedbed serve`, and the student is
  fine-tuned on those answers. Answers are saved to `teacher_answers.jsonl` as they come, so a re-run skips them.

The output directory is finetune's: the student model + tokenizer + recipe.yaml + metrics.json (with the KL curve)
+ a model card naming teacher and student, plus teacher_answers.jsonl in sequence mode.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from seedbed.atomic import atomic_write_text, mark_output_dir, strict_json
from seedbed.chat import Example, render_prompt
from seedbed.errors import RecipeError
from seedbed.licences import licence_of
from seedbed.models import load_model, load_tokenizer
from seedbed.recipe import DistillRecipe, save_recipe
from seedbed.train import callbacks as cb
from seedbed.train import lineage, truthfulness
from seedbed.train.launch import process_state
from seedbed.train.student import build_student, count_parameters, parse_preset
from seedbed.train.trainer import (
    CHECKPOINTS, answer_only_trainer_class, build_features, build_trainer, prepare_template_tokens, read_splits,
    resolve_precision, run_metrics, save_model_dir, sft_config, start_or_resume,
)

TEACHER_ANSWERS = "teacher_answers.jsonl"


@dataclass
class DistillResult:
    out: Path
    metrics: dict


def distillation_loss(student, teacher, inputs: dict, temperature: float, alpha: float,
                      num_items_in_batch=None) -> tuple[torch.Tensor, dict]:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels), over answer tokens; and its parts.

    Hinton, Vinyals & Dean 2015: both distributions are softened by temperature T; the soft-target gradients scale
    as 1/T^2, so the KL is multiplied by T^2 to keep its weight relative to the hard-label term when T changes.
    As in `answer_only_loss`, logits are computed only at positions whose next token is labelled: the output
    layer dominates the cost of a small model with a large vocabulary, for the teacher as for the student.
    """
    labels = inputs.pop("labels")
    next_labels = labels[:, 1:]  # (batch, seq - 1): the token each position must predict
    keep = (next_labels != -100).any(dim=0).nonzero().flatten()  # positions labelled in any row
    targets = next_labels[:, keep]  # (batch, kept)
    scored = targets != -100  # (batch, kept): rows padded or unlabelled at a kept position carry no loss
    logits = student(**inputs, use_cache=False, logits_to_keep=keep).logits[scored].float()  # (scored, vocab)
    with torch.no_grad():
        teacher_logits = teacher(**inputs, use_cache=False, logits_to_keep=keep).logits[scored].float()
    if teacher_logits.shape[-1] != logits.shape[-1]:
        raise RecipeError(f"teacher and student output layers differ: {teacher_logits.shape[-1]} against "
                          f"{logits.shape[-1]} tokens")
    count = num_items_in_batch if num_items_in_batch is not None else scored.sum()
    count = torch.as_tensor(count, device=logits.device).clamp(min=1)
    ce = torch.nn.functional.cross_entropy(logits, targets[scored], reduction="sum") / count
    t = temperature
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(logits / t, dim=-1), torch.log_softmax(teacher_logits / t, dim=-1),
        reduction="sum", log_target=True,
    ) / count  # KL(teacher || student) per answer token
    loss = alpha * t * t * kl + (1 - alpha) * ce
    return loss, {"kl": kl.detach(), "ce": ce.detach(), "logits": logits}


def distill_trainer_class():
    from trl import SFTTrainer

    class DistillTrainer(SFTTrainer):
        """SFTTrainer whose loss is `distillation_loss` against a frozen teacher; logs its KL and CE parts."""

        def __init__(self, *args, teacher, temperature: float, alpha: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
            self.temperature, self.alpha = temperature, alpha

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, parts = distillation_loss(model, self.teacher, inputs, self.temperature, self.alpha,
                                            num_items_in_batch)
            mode = "train" if model.training else "eval"
            processes = self.accelerator.num_processes
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                # As answer_only_trainer_class: num_items_in_batch counts every process's answer tokens and DDP
                # averages the gradients over processes, so each process's share is scaled back up.
                loss = loss * processes
            # SFTTrainer.log averages these over the logging (or eval) window: `kl`/`ce` and `eval_kl`/`eval_ce`.
            # Scaled by the accumulation count (and process count) like the loss, so each step's value is a
            # per-token mean (under several processes, the main process's tokens').
            scale = (self.args.gradient_accumulation_steps * processes
                     if mode == "train" and num_items_in_batch is not None else 1)
            self._metrics[mode]["kl"].append(parts["kl"].item() * scale)
            self._metrics[mode]["ce"].append(parts["ce"].item() * scale)
            return (loss, {"logits": parts["logits"]}) if return_outputs else loss

    return DistillTrainer


def check_same_tokenizer(teacher_tokenizer, student_tokenizer) -> None:
    """Raise RecipeError, naming the first difference, unless the two tokenizers map text to the same ids."""
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if len(t_vocab) != len(s_vocab):
        raise RecipeError(f"student: its tokenizer differs from the teacher's: vocab sizes {len(s_vocab)} (student) "
                          f"and {len(t_vocab)} (teacher); distillation needs a shared tokenizer")
    if t_vocab != s_vocab:
        t_by_id, s_by_id = {i: w for w, i in t_vocab.items()}, {i: w for w, i in s_vocab.items()}
        first = min(i for i in set(t_by_id) | set(s_by_id) if t_by_id.get(i) != s_by_id.get(i))
        raise RecipeError(f"student: its tokenizer differs from the teacher's: token {first} is "
                          f"{s_by_id.get(first)!r} for the student and {t_by_id.get(first)!r} for the teacher")
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        t, s = getattr(teacher_tokenizer, name, None), getattr(student_tokenizer, name, None)
        if t != s:
            raise RecipeError(f"student: its tokenizer differs from the teacher's: {name} is {s!r} for the student "
                              f"and {t!r} for the teacher")
    if set(teacher_tokenizer.all_special_tokens) != set(student_tokenizer.all_special_tokens):
        diff = sorted(set(teacher_tokenizer.all_special_tokens) ^ set(student_tokenizer.all_special_tokens))
        raise RecipeError(f"student: its tokenizer differs from the teacher's: special tokens {diff} are in one only")


def load_student(recipe: DistillRecipe, teacher, teacher_tokenizer, dtype: torch.dtype):
    """The student model and tokenizer: a preset built from `teacher`, or a model loaded and checked."""
    preset = parse_preset(recipe.student)
    if preset is not None:
        if teacher is None:
            teacher, _ = load_model(recipe.teacher, dtype=dtype, device="cpu")
        torch.manual_seed(recipe.seed)
        student, _ = build_student(teacher, preset)
        return student, teacher_tokenizer, teacher
    student_tokenizer = load_tokenizer(recipe.student)
    if recipe.mode == "logit":  # sequence mode exchanges text only: any student tokenizer can learn it
        check_same_tokenizer(teacher_tokenizer, student_tokenizer)
    student, student_tokenizer = load_model(recipe.student, dtype=dtype)
    return student, student_tokenizer, teacher


def teacher_answers(recipe: DistillRecipe, examples: list[Example], out: Path, teacher=None,
                    tokenizer=None) -> dict[str, str]:
    """Greedy teacher answers to each example's prompt, by example id; saved to out/teacher_answers.jsonl as they
    come, and read back from it, so a re-run asks only for what is missing."""
    path = out / TEACHER_ANSWERS
    answers = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted run: asked again
            answers[row["id"]] = row["answer"]
    todo = [e for e in examples if e.id not in answers]
    if not todo:
        return answers
    ask = _served_teacher(recipe) if recipe.teacher_url else _local_teacher(recipe, teacher, tokenizer)
    chunk = max(8, recipe.batch_size)
    with path.open("a") as f:
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            for example, answer in zip(batch, ask([e.prompt_messages() for e in batch])):
                answers[example.id] = answer
                f.write(json.dumps({"id": example.id, "prompt": example.prompt_messages(), "answer": answer}) + "\n")
            f.flush()
    return answers


def _local_teacher(recipe: DistillRecipe, teacher, tokenizer):
    from seedbed.inference.generate import generate
    from seedbed.inference.hf import TorchBackend
    from seedbed.inference.stops import Sampling

    backend = TorchBackend(teacher, tokenizer) if teacher is not None else TorchBackend.load(recipe.teacher)
    sampling = Sampling(max_new_tokens=recipe.teacher_max_new_tokens, greedy=True)
    return lambda prompts: generate(backend, [render_prompt(backend.tokenizer, p) for p in prompts], sampling,
                                    batch_size=len(prompts))


def _served_teacher(recipe: DistillRecipe):
    """Ask an OpenAI-compatible server (`seedbed.data.teacher`, the client `data synth` uses), several requests
    at once so that it can batch them."""
    from seedbed.data.teacher import TeacherClient

    teacher = TeacherClient(recipe.teacher_url, recipe.teacher_name)

    def one(messages):
        return teacher.chat(messages, max_tokens=recipe.teacher_max_new_tokens, temperature=0)

    def ask(prompts):
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, prompts))

    return ask


def distill(recipe: DistillRecipe, callbacks: list | None = None) -> DistillResult:
    """Distil `recipe.teacher` into `recipe.student` on `recipe.data`; write a complete model directory to `recipe.out`.

    >>> distill(DistillRecipe(teacher="runs/tuned", student="keep-every-2", data=["train.jsonl"], out="runs/s"))  # doctest: +SKIP
    DistillResult(out=PosixPath('runs/s'), metrics={...})
    """
    if not recipe.resume and not recipe.teacher:
        raise RecipeError("teacher: give the model to distil (--teacher MODEL)")
    state = process_state()  # the process group `accelerate launch` set up (--num-processes), or this process alone
    with state.main_process_first():  # the main process checks `out` (and, resuming, cleans it) before the others
        recipe, resume_from = start_or_resume(recipe, "distill", model_fields=("teacher", "student"))
    out = Path(recipe.out)
    torch.manual_seed(recipe.seed)
    data, train_examples, val_examples, not_sampled = read_splits(recipe)
    dtype, precision_flags = resolve_precision("auto")

    teacher_tokenizer = load_tokenizer(recipe.teacher)
    needs_teacher = recipe.mode == "logit" or not recipe.teacher_url
    teacher = load_model(recipe.teacher, dtype=dtype)[0] if needs_teacher else None
    student, tokenizer, teacher = load_student(recipe, teacher, teacher_tokenizer, dtype)
    teacher_params = count_parameters(teacher) if teacher is not None else _config_parameters(recipe.teacher)
    if teacher is not None and precision_flags["bf16"]:
        teacher = teacher.to(torch.bfloat16)  # the dtype the student computes in under bf16 autocast

    if state.is_main_process:
        mark_output_dir(out)
        save_recipe(recipe.model_copy(update={"resume": False}), out / "recipe.yaml", "distill")
    if recipe.mode == "sequence":
        chats = [e for e in train_examples if e.is_chat]
        if not chats:
            raise RecipeError("data: sequence distillation needs prompts (chat or instruction records), not raw text")
        with state.main_process_first():  # the main process asks the teacher; the others read its answers' file
            answers = teacher_answers(recipe, chats, out, teacher, teacher_tokenizer)
        # Kim & Rush 2016: the student learns the teacher's answers. Validation keeps the data's own answers, so
        # the validation loss says how well the student answers, not only how well it imitates.
        train_examples = [
            Example(e.id, e.source, e.prompt_messages() + [{"role": "assistant", "content": answers[e.id]}],
                    category=e.category)
            for e in chats
        ]
        teacher = None  # its answers are all we need from it: free its memory for training
    train_features, train_stats = build_features(tokenizer, train_examples, recipe.max_length)
    val_features, val_stats = build_features(tokenizer, val_examples, recipe.max_length)
    if not train_features:
        raise RecipeError("data: no training example has answer tokens left within max_length")
    # Every student weight trains, so an under-trained turn marker is reported (and re-initialised), not frozen.
    template = prepare_template_tokens(student, tokenizer, recipe, train_features, lora=False)

    config = sft_config(recipe, out, has_val=bool(val_features), resumed=resume_from is not None,
                        precision_flags=precision_flags, save_total_limit=2)  # finetune's default
    clock = cb.WallClock(resume_from)
    progress = [cb.RichProgress(disable=recipe.quiet, label="distill"), clock, cb.ProgressLog(recipe.out), cb.MLflowLogger(), *(callbacks or [])]
    if recipe.mode == "logit":
        from functools import partial

        trainer_class = partial(distill_trainer_class(), teacher=teacher, temperature=recipe.temperature, alpha=recipe.alpha)
    else:  # Kim & Rush 2016: plain fine-tuning on the teacher's answers
        trainer_class = answer_only_trainer_class()
    trainer = build_trainer(trainer_class, model=student, tokenizer=tokenizer, config=config,
                            train_features=train_features, val_features=val_features, callbacks=progress)

    result = trainer.train(resume_from_checkpoint=resume_from)
    if trainer.state.global_step < trainer.state.max_steps:  # a callback stopped it: checkpoints stay to resume
        return DistillResult(out, {"stopped_at_step": trainer.state.global_step})
    if not state.is_main_process:  # under `accelerate launch` one process writes (seedbed.train.launch)
        return DistillResult(out, {})
    state = trainer.state
    save_model_dir(trainer.model, tokenizer, out)

    student_params = count_parameters(trainer.model)
    metrics = run_metrics(
        trainer, result, clock, data=data, not_sampled=not_sampled, features=(train_features, val_features),
        stats=(train_stats, val_stats), precision_flags=precision_flags,
        parameters={"teacher_parameters": teacher_params, "student_parameters": student_params,
                    "parameter_ratio": round(student_params / teacher_params, 4)},
    )
    metrics["kl"] = {
        "train": [{"step": h["step"], "kl": h["kl"], "ce": h["ce"]} for h in state.log_history if "kl" in h],
        "val": [{"step": h["step"], "kl": h["eval_kl"], "ce": h["eval_ce"]} for h in state.log_history
                if "eval_kl" in h],
    }
    metrics["mode"], metrics["teacher"], metrics["student"] = recipe.mode, recipe.teacher, recipe.student
    metrics["template_tokens"] = template
    metrics["cost"] = lineage.estimated_cost(metrics["wall_time_s"], None)
    metrics["truthfulness"] = truthfulness.measure(out, recipe.teacher, recipe.truthfulness_questions)
    atomic_write_text(out / "metrics.json", strict_json(metrics, indent=2))
    atomic_write_text(out / "README.md", model_card(recipe, metrics, (out / "recipe.yaml").read_text()))
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the run is complete; optimizer states are dead weight
    return DistillResult(out, metrics)


def _config_parameters(name: str) -> int:
    from transformers import AutoConfig

    from seedbed.models import resolve

    return count_parameters(AutoConfig.from_pretrained(resolve(name)))


def model_card(recipe: DistillRecipe, metrics: dict, recipe_yaml: str) -> str:
    """README.md of a distilled model: where it came from (teacher, student init, data) and what it cost."""
    preset = parse_preset(recipe.student)
    init = (f"preset `{recipe.student}` built from the teacher's weights" if preset
            else f"`{recipe.student}`")
    method = ("logit distillation (Hinton et al. 2015): KL to the teacher's token distributions at temperature "
              f"{recipe.temperature}, weight {recipe.alpha}, plus cross-entropy on the data's answers"
              if recipe.mode == "logit" else
              "sequence-level distillation (Kim & Rush 2016): fine-tuned on the teacher's greedy answers "
              f"(`{TEACHER_ANSWERS}`)" + (f", generated by `{recipe.teacher_url}`" if recipe.teacher_url else ""))
    rows = "\n".join(f"| `{f['path']}` | `{f['sha256']}` | {f['records']} | {f['examples']} |"
                     for f in metrics["data_files"])
    val, kl = metrics["val"], metrics["kl"]["val"]
    val_line = (f"{val[0]['loss']:.4f} at step {val[0]['step']} → {val[-1]['loss']:.4f} at step {val[-1]['step']}"
                if val else "none")
    kl_line = f"{kl[0]['kl']:.4f} → {kl[-1]['kl']:.4f}" if kl else "not measured (sequence mode)"
    licence = licence_of(recipe.teacher)  # a student learns from (and may be cut from) its teacher: its terms
    return f"""---
library_name: transformers
base_model: {recipe.teacher}
{licence.front_matter()}
tags: [seedbed, distillation, {recipe.mode}]
---
# Distilled from `{recipe.teacher}` with Seedbed

A student trained with `seedbed distill` to imitate its teacher. Prompt it with the chat template saved in the
tokenizer (the teacher's).

## Lineage
- **Teacher:** `{recipe.teacher}` ({metrics['teacher_parameters']:,} parameters)
- **Student initialised from:** {init} ({metrics['student_parameters']:,} parameters, {metrics['parameter_ratio']:.0%} of the teacher)
- **Method:** {method}
- **Training data:**

| file | sha256 | records | examples |
|---|---|---|---|
{rows}

- **Validation loss:** {val_line}; **validation KL to the teacher:** {kl_line}
- **Template tokens:** {lineage.template_tokens_line(metrics.get("template_tokens"))}
- **Tokens seen:** {metrics['tokens_seen']:,} in {metrics['steps']} steps, {metrics['tokens_per_s']:,.0f} tokens/s
- **Wall time:** {metrics['wall_time_s']:.0f} s; estimated cost ${metrics['cost']['usd']:.4f} ({metrics['cost']['basis']})

{truthfulness.card_section(metrics.get("truthfulness"), base_label="teacher")}
{licence.section(recipe.teacher)}
## Recipe
```yaml
{recipe_yaml.rstrip()}
```
"""
