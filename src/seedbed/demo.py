"""The main job, end to end on the embedded default: the Dolly recipe in miniature.

    seedbed demo

1. Gemma 3 270M *base* answers a few held-out prompts (it only continues text, so it rambles).
2. LoRA fine-tuning on a small shipped subset of openly licensed instruction data (GSM8K + self-instruct seeds).
3. The tuned answers beside the base ones.
4. `seedbed eval` on held-out GSM8K problems: base zero-shot, base few-shot, tuned zero-shot.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from seedbed.chat import render_prompt
from seedbed.evaluate import evaluate, markdown_table
from seedbed.inference import Sampling, load
from seedbed.inference.generate import generate
from seedbed.recipe import DemoRecipe
from seedbed.train.finetune import finetune

console = Console()


def answer(model_name: str, prompts: list[str], max_new_tokens: int) -> list[str]:
    backend = load(model_name)
    texts = [render_prompt(backend.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    return generate(backend, texts, Sampling(greedy=True, max_new_tokens=max_new_tokens))


def run_demo(recipe: DemoRecipe) -> dict:
    """Run the demo; returns the paths and the eval result."""
    started = time.perf_counter()
    out = Path(recipe.out)
    tuned_dir = out / "model"
    base = recipe.finetune.base

    console.rule(f"1/4  The base model ({base}) answers held-out prompts")
    base_answers = answer(base, recipe.prompts, recipe.show_max_new_tokens)
    for prompt, text in zip(recipe.prompts, base_answers):
        console.print(Text("> " + prompt, style="bold"))
        console.print(Text(text.strip() or "(nothing)"), "\n")

    console.rule("2/4  LoRA fine-tuning on shipped instruction data")
    if (tuned_dir / "metrics.json").is_file() and not recipe.retrain:
        console.print(f"A finished demo model is in {tuned_dir}; reusing it (pass --retrain to train again).")
    else:
        resume = (tuned_dir / "checkpoints").is_dir() and not recipe.retrain
        if recipe.retrain and tuned_dir.exists():
            import shutil

            shutil.rmtree(tuned_dir)
        finetune(recipe.finetune.model_copy(update={"out": str(tuned_dir), "resume": resume}))

    console.rule("3/4  Base and tuned answers, side by side")
    tuned_answers = answer(str(tuned_dir), recipe.prompts, recipe.show_max_new_tokens)
    table = Table("prompt", "base (before)", "tuned (after)", show_lines=True)
    for row in zip(recipe.prompts, base_answers, tuned_answers):
        table.add_row(*(Text(s.strip()) for s in row))
    console.print(table)

    console.rule("4/4  seedbed eval: the same held-out questions, zero-shot, few-shot and tuned")
    eval_recipe = recipe.eval.model_copy(update={"out": str(out / "eval")})
    conditions = [("base", base, 0), (f"base {recipe.fewshot}-shot", base, recipe.fewshot), ("tuned", str(tuned_dir), 0)]
    result = evaluate(eval_recipe, conditions=conditions)
    console.print(markdown_table(result), markup=False, highlight=False)

    minutes = (time.perf_counter() - started) / 60
    console.rule(f"Done in {minutes:.1f} min")
    console.print(
        f"Tuned model (safetensors + tokenizer + recipe.yaml + metrics.json + model card README.md): {tuned_dir}\n"
        f"Eval results: {out / 'eval'}/results.json and results.md\n"
        f"MLflow runs: ./mlruns (mlflow ui --backend-store-uri ./mlruns)\n"
        f"Try it: seedbed chat --model {tuned_dir}"
    )
    return {"model": tuned_dir, "eval": result, "minutes": minutes}
