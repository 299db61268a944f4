"""The main job, end to end on the embedded default: grow a model for a narrow task from raw records.

    seedbed demo

The task is what a 270M model is good at: turning a voice-assistant request into JSON (`{"intent", "slots"}`),
learned from SNIPS (CC0) records as they come (`{id, text, intent, slots}`), read through the recipe's field
mapping, so no code turns them into training examples.

1. `seedbed data prepare` curates the raw training records (the funnel is printed).
2. `seedbed eval` of Gemma 3 270M *base* on held-out requests, zero-shot and few-shot (it only continues text).
3. LoRA fine-tuning on the curated records.
4. `seedbed eval` of the tuned model on the same requests: its answers beside the base model's and the
   reference, and the table (exact match, intent accuracy, slot F1, valid JSON, stop and repetition rates).

The answers shown are the eval's own (greedy, the same prompts), so what is printed is what is scored.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from seedbed.atomic import check_output_dir, local_inputs, mark_output_dir
from seedbed.curate.prepare import prepare
from seedbed.evaluate import evaluate, markdown_table, write_results
from seedbed.recipe import DemoRecipe
from seedbed.train.finetune import finetune

console = Console()


def brief(text: str, max_lines: int = 8) -> str:
    """An answer as a reader can take it in: runs of one repeated line shown once with their count, then cut.

    A base model that does not stop repeats itself until the token limit; printing every copy would bury the
    side-by-side comparison the demo is for. The eval table counts repetition properly (repetition rate)."""
    runs: list[list] = []
    for line in text.strip().splitlines():
        if runs and runs[-1][0] == line:
            runs[-1][1] += 1
        else:
            runs.append([line, 1])
    lines = [line if n == 1 else f"{line}   [line repeated {n}x]" for line, n in runs]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"[... {len(lines) - max_lines} more lines]"]
    return "\n".join(lines) or "(nothing)"


def run_demo(recipe: DemoRecipe) -> dict:
    """Run the demo; returns the paths, the curation report and the eval result."""
    started = time.perf_counter()
    out = Path(recipe.out)
    # Never over, around or inside what it reads; then marked as Seedbed's, since it fills it step by step.
    check_output_dir(out, local_inputs(recipe.prepare.inputs, recipe.eval.data, recipe.eval.pool,
                                       [recipe.finetune.base]))
    mark_output_dir(out)
    data_dir, tuned_dir = out / "data", out / "model"
    base = recipe.finetune.base
    finished = (tuned_dir / "metrics.json").is_file() and not recipe.retrain
    if recipe.retrain:
        shutil.rmtree(tuned_dir, ignore_errors=True)

    console.rule("1/4  seedbed data prepare: curate the raw training records")
    report = None
    if finished and (data_dir / "report.json").is_file():
        console.print(f"Curated data from an earlier run is in {data_dir}; reusing it.")
    else:
        report = prepare(recipe.prepare.model_copy(update={"out": str(data_dir), "quiet": True}))
        kept, dropped = report["kept"], report["dropped"]
        console.print(f"{report['input_records']:,} records in: {kept['total']:,} kept (train {kept['train']:,}, "
                      f"validation {kept['validation']:,}), {dropped['total']:,} dropped "
                      f"({', '.join(f'{r}={n}' for r, n in dropped.get('by_reason', {}).items()) or 'none'}); "
                      f"datasheet: {data_dir}/report.html")

    eval_recipe = recipe.eval.model_copy(update={"out": None})
    console.rule(f"2/4  seedbed eval: the base model ({base}) on held-out requests, zero-shot and {recipe.fewshot}-shot")
    before = evaluate(eval_recipe, conditions=[("base", base, 0), (f"base {recipe.fewshot}-shot", base, recipe.fewshot)])
    # By name: with `eval.tools` each condition also has a `+calculator` row beside it.
    zero_shot, few_shot = (next(c for c in before.conditions if c.name == name)
                           for name in ("base", f"base {recipe.fewshot}-shot"))
    for answer in zero_shot.answers[: recipe.show]:
        console.print(Text("> " + answer["question"], style="bold"))
        console.print(Text(brief(answer["prediction"])), "\n")

    method = "LoRA" if recipe.finetune.method == "lora" else "Full"
    console.rule(f"3/4  {method} fine-tuning on the curated records")
    if finished:
        console.print(f"A finished demo model is in {tuned_dir}; reusing it (pass --retrain to train again).")
    else:
        resume = (tuned_dir / "checkpoints").is_dir()
        # data prepare wrote the records already mapped to chats: they are read as they are.
        finetune(recipe.finetune.model_copy(update={
            "data": [str(data_dir / "train.jsonl")], "val_data": [str(data_dir / "validation.jsonl")],
            "mapping": None, "out": str(tuned_dir), "resume": resume}))

    console.rule("4/4  seedbed eval: the tuned model on the same requests")
    after = evaluate(eval_recipe, conditions=[("tuned", str(tuned_dir), 0)])
    result = replace(before, conditions=before.conditions + after.conditions)
    write_results(result, recipe.eval.model_copy(update={"out": str(out / "eval")}))
    table = Table("request", f"base {recipe.fewshot}-shot (before)", "tuned (after)", "reference", show_lines=True)
    tuned = next(c for c in after.conditions if c.name == "tuned")
    for base_answer, tuned_answer in list(zip(few_shot.answers, tuned.answers))[: recipe.show]:
        table.add_row(Text(base_answer["question"]), Text(brief(base_answer["prediction"])),
                      Text(brief(tuned_answer["prediction"])), Text(base_answer["reference"]))
    console.print(table)
    console.print(markdown_table(result), markup=False, highlight=False)

    minutes = (time.perf_counter() - started) / 60
    console.rule(f"Done in {minutes:.1f} min")
    console.print(
        f"Curated data and its datasheet: {data_dir}/ (report.html)\n"
        f"Tuned model (safetensors + tokenizer + recipe.yaml + metrics.json + model card README.md): {tuned_dir}\n"
        f"Eval results: {out / 'eval'}/results.md, results.json and answers.jsonl (every answer)\n"
        f"MLflow runs: ./mlruns (mlflow ui --backend-store-uri ./mlruns)\n"
        f"Try it: seedbed chat --model {tuned_dir}"
    )
    return {"model": tuned_dir, "data": report, "eval": result, "minutes": minutes}
