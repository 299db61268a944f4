"""The command table: `seedbed VERB`. Each verb parses flags into a recipe, calls one library function, prints.

Every recipe field is also a flag (`lora_r` is `--lora-r`, a nested one `--quality.min-words`); flags override the
file given with `--recipe` (see `seedbed.cli_flags`). Each verb imports its stage only when it runs, so
`seedbed --help` loads neither torch nor numpy.
"""

from __future__ import annotations

from contextlib import nullcontext

import typer
from rich.markup import escape  # a message's [extra] is text, not rich markup
from rich.console import Console
from rich.table import Table

from seedbed import cli_flags
from seedbed.errors import SeedbedError
from seedbed.extras import require_extras
from seedbed.quiet import quiet_libraries
from seedbed.recipe import (
    CompareRecipe, DataRecipe, DemoRecipe, DistillRecipe, EvalRecipe, FinetuneRecipe, GenerateRecipe, PretrainRecipe,
    QuantizeRecipe, ServeRecipe, SynthRecipe,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Seedbed: grow your own language model on one machine.")
models_app = typer.Typer(no_args_is_help=True, help="Models in the local cache.")
app.add_typer(models_app, name="models")
data_app = typer.Typer(no_args_is_help=True, help="Data curation: clean, de-duplicate, filter and split training data.")
app.add_typer(data_app, name="data")
console = Console()
err = cli_flags.err


def recipe_command(name: str, stage, section: str, default_recipe: str | None = None, group=None):
    """A verb whose flags are the fields of `stage` (see `seedbed.cli_flags`). Before it runs, its extras are
    checked (a missing one is one line naming it) and the libraries are quieted."""
    verb = f"data {name}" if group is data_app else name

    def before(recipe) -> None:
        require_extras(verb, recipe)
        quiet_libraries()

    return cli_flags.recipe_command(group or app, name, stage, section, default_recipe, before=before)


def relaunched(recipe) -> bool:
    """With --num-processes N > 1, run this same command under `accelerate launch` (or Ray Train) instead (seedbed.train.launch)."""
    import sys

    from seedbed.train.launch import launched, ray_relaunch, relaunch

    if recipe.num_processes <= 1 or launched():
        return False
    status = (ray_relaunch if recipe.launcher == "ray" else relaunch)(recipe.num_processes, sys.argv[1:])
    if status:
        raise typer.Exit(status)
    return True


@recipe_command("finetune", FinetuneRecipe, "finetune")
def finetune_cmd(recipe: FinetuneRecipe):
    """Instruction-tune a base model (LoRA or full) and write a complete model directory.

    Example: seedbed finetune --base gemma-3-270m --data train.jsonl --method lora --out runs/my-model
    """
    if relaunched(recipe):
        return
    from seedbed.train.finetune import finetune

    result = finetune(recipe)
    m = metrics_to_report(result, "finetune")
    if m is None:
        return
    val = m["val"]
    console.print(
        f"[green]Done.[/green] {m['steps']} steps, {m['tokens_seen']:,} tokens at {m['tokens_per_s']:,.0f} tokens/s "
        f"in {m['wall_time_s']:.0f} s"
        + (f"; validation loss {val[0]['loss']:.4f} → {val[-1]['loss']:.4f}" if val else "")
    )
    console.print(f"Model, recipe.yaml, metrics.json and model card (README.md) in {result.out}")


def metrics_to_report(result, verb: str) -> dict | None:
    """A training run's metrics if this process should report a finished run: None (after saying how to go on)
    for a run stopped early, None for a worker of a multi-process run (the main one reports); a diverged run
    exits 1 (`warn_if_diverged`)."""
    m = result.metrics
    if "stopped_at_step" in m:
        console.print(f"Stopped at step {m['stopped_at_step']}; continue with: seedbed {verb} --out {result.out} --resume")
        return None
    if not m:
        return None
    warn_if_diverged(m)
    return m


def warn_if_diverged(metrics: dict) -> None:
    """A run whose loss spiked (`trainer.loss_spike`) is not reported as a success: its files are kept for a look,
    and the command exits 1."""
    spike = metrics.get("diverged")
    if spike:
        console.print(f"[red]Diverged.[/red] The training loss rose to {spike['loss']:.4g} at step {spike['step']} "
                      f"(it started at {spike['first_loss']:.4f}); lower --lr. The model written is not to be trusted.")
        raise typer.Exit(1)


@recipe_command("pretrain", PretrainRecipe, "pretrain")
def pretrain_cmd(recipe: PretrainRecipe):
    """Train a tokenizer and a Llama-style model from scratch on your text (packed blocks, resumable, MLflow);
    the output is a model every other verb takes (finetune --base, quantize, serve, eval).

    Example: seedbed pretrain --recipe recipes/pretrain-cpu.yaml
             seedbed pretrain --data corpus/ --layers 8 --hidden-size 256 --heads 4 --max-steps 5000 --out runs/lm
    """
    if relaunched(recipe):
        return
    from seedbed.pretrain.run import pretrain

    result = pretrain(recipe)
    m = metrics_to_report(result, "pretrain")
    if m is None:
        return
    for sample in m["samples"]:
        console.print(f"[bold]{sample['prompt']}[/bold]{sample['continuation']}", highlight=False)
    train, val = m["train"], m["val"]
    console.print(
        f"[green]Done.[/green] {m['total_parameters']:,} parameters, {m['steps']} steps, {m['tokens_seen']:,} tokens "
        f"at {m['tokens_per_s']:,.0f} tokens/s in {m['wall_time_s']:.0f} s"
        + (f"; training loss {train[0]['loss']:.3f} → {train[-1]['loss']:.3f}" if train else "")
        + (f"; validation loss {val[0]['loss']:.3f} → {val[-1]['loss']:.3f}" if val else "")
    )
    console.print(f"Model, tokenizer, recipe.yaml, metrics.json and model card (README.md) in {result.out}")


@recipe_command("generate", GenerateRecipe, "generate")
def generate_cmd(recipe: GenerateRecipe, prompt: str = typer.Argument(..., help="The instruction or text to continue.")):
    """Answer one prompt (streamed). The chat template is applied unless --raw.

    Example: seedbed generate --model runs/my-model "Give three tips for staying healthy." --greedy
    """
    from seedbed.inference.generate import run_generate

    run_generate(recipe, prompt, write=lambda piece: console.print(piece, end="", markup=False, highlight=False))
    console.print()


@recipe_command("chat", GenerateRecipe, "generate")
def chat_cmd(recipe: GenerateRecipe):
    """Chat with a model in the terminal; answers stream token by token. /reset clears, /exit quits.

    Example: seedbed chat --model runs/my-model --temperature 0.7
    """
    from seedbed.inference.generate import run_chat

    run_chat(recipe)


@recipe_command("eval", EvalRecipe, "eval")
def eval_cmd(recipe: EvalRecipe):
    """Held-out loss, task scores (GSM8K exact match, or JSON exact match / field accuracy / list F1), valid format,
    stop and repetition rates, zero-shot and few-shot, for models on the same questions.

    Example: seedbed eval --models base=gemma-3-270m --models tuned=runs/my-model --data heldout.jsonl
             --pool train.jsonl --shots 0 --shots 3 --limit 50 --tools calculator --out runs/eval
             seedbed eval --models base=gemma-3-270m --likelihood truthfulqa_mc1 --likelihood truthfulqa_mc2
             --likelihood commonsenseqa --limit 100 --out runs/knowledge

    With --judge MODEL_OR_URL: a judged A/B of the models on open prompts (MT-Bench's first turns, or --prompts),
    win rates, length-controlled win rates and Bradley–Terry ratings, human --votes included.
    Example: seedbed eval --judge http://127.0.0.1:8000/v1 --models base=gemma-3-270m --models tuned=runs/my-model
             --limit 20 --out runs/ab
    """
    if recipe.judge:
        return judged_eval_cmd(recipe)
    from seedbed.evaluate import evaluate, markdown_table

    result = evaluate(recipe)
    if result.conditions:
        console.print(markdown_table(result), markup=False, highlight=False)
    if result.likelihood:
        from seedbed.evaluate.likelihood import markdown_table as likelihood_table

        console.print(likelihood_table(result.likelihood), markup=False, highlight=False)
    if recipe.out:
        console.print(f"Results in {recipe.out}/results.json and results.md; every answer in report.html")
    for card in result.model_cards:
        console.print(f"Model card updated: the table is in {card}", markup=False, highlight=False)


def judged_eval_cmd(recipe: EvalRecipe):
    """`seedbed eval --judge`: the models answer open prompts, the judge compares every pair in both orders."""
    from seedbed.evaluate.pairwise import judged_eval
    from seedbed.evaluate.pairwise_results import markdown

    with err.status(f"answering and judging ({recipe.judge})", spinner="dots") if not recipe.quiet else nullcontext():
        results = judged_eval(recipe)
    console.print(markdown(results), markup=False, highlight=False, soft_wrap=True)  # table rows stay whole
    console.print(f"Results in {recipe.out}/results.json and results.md; every judgment in {recipe.out}/judgments.jsonl")


@recipe_command("demo", DemoRecipe, "demo", default_recipe="demo.yaml")
def demo_cmd(recipe: DemoRecipe):
    """The main job: Gemma 3 270M base answers, a LoRA fine-tune on shipped data, tuned answers, eval table.

    Runs recipes/demo.yaml (shipped with Seedbed); flags override it.
    Example: seedbed demo
    """
    from seedbed.demo import run_demo

    run_demo(recipe)


@recipe_command("serve", ServeRecipe, "serve")
def serve_cmd(recipe: ServeRecipe):
    """Serve models behind an OpenAI-compatible API (chat, completions, embeddings, tools, retrieval).

    Example: seedbed serve --model tuned=runs/demo/model --api-key sk-local --rag tuned=runs/docs-index
    """
    from seedbed.serve.server import run_server

    run_server(recipe)


@recipe_command("prepare", DataRecipe, "data", group=data_app)
def data_prepare_cmd(recipe: DataRecipe, paths: list[str] = typer.Argument(None, help="Input files or directories.")):
    """Curate data: normalise, redact PII, filter toxicity, language and quality, decontaminate, de-duplicate,
    balance and split; writes train/validation.jsonl, dropped.jsonl, report.json and report.html to --out.

    Stage settings live in the recipe's `data` section (see recipes/data.yaml), or as dotted flags
    (--quality.min-words 3, --no-pii.enabled).
    Example: seedbed data prepare raw.jsonl --out runs/data --recipe recipes/data.yaml
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from seedbed.curate.prepare import prepare

    if paths:
        recipe.inputs = list(paths)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} records"),
                  TimeElapsedColumn(), console=err, disable=recipe.quiet) as progress:
        task = progress.add_task("curating", total=None)
        report = prepare(recipe, on_progress=lambda n: progress.advance(task, n))
    table = Table("stage", "in", "out", "dropped", "modified", "records/s", "top reasons")
    for s in report["stages"]:
        if not s["enabled"]:
            continue
        reasons = ", ".join(f"{r}={c}" for r, c in list(s["reasons"].items())[:3])
        rate = f"{s['records_per_s']:,.0f}" if s["records_per_s"] else "-"
        table.add_row(s["name"], f"{s['records_in']:,}", f"{s['records_out']:,}", f"{s['dropped']:,}",
                      f"{s['modified']:,}", rate, reasons)
    console.print(table)
    kept, dropped = report["kept"], report["dropped"]["total"]
    console.print(f"{report['input_records']:,} records in = {kept['total']:,} kept (train {kept['train']:,}, "
                  f"validation {kept['validation']:,}) + {dropped:,} dropped, in {report['seconds']:.1f} s "
                  f"({report['records_per_s']:,.0f} records/s). Report: {recipe.out}/report.html")


@recipe_command("synth", SynthRecipe, "synth", group=data_app)
def data_synth_cmd(recipe: SynthRecipe):
    """Synthetic instruction data by Self-Instruct: a teacher (any OpenAI-compatible server) writes new tasks from
    seed tasks and answers them; ROUGE-L novelty, keyword and length filters; then data prepare. Resumable (run it
    again), rate-limited, every record with its teacher, prompt and licence.

    Example: seedbed data synth --teacher-url http://127.0.0.1:8000/v1 --licence "Apache-2.0" --target 200 --out runs/synth
    """
    from seedbed.data.synth import synth

    result = synth(recipe, on_round=None if recipe.quiet else lambda r, kept: err.print(
        f"round {r['round']}: {r['candidates']} new tasks, {r['kept']} kept ({kept}/{recipe.target})", highlight=False))
    r = result.report
    reasons = ", ".join(f"{k}={v}" for k, v in r["rejected_by_reason"].items()) or "none"
    console.print(f"[green]Done.[/green] {r['candidates']} candidate tasks in {r['rounds']} rounds = {r['kept']} kept "
                  f"+ {r['rejected']} rejected ({reasons}). Records in {result.out}/synth.jsonl"
                  + (f"; curated into {r['prepared']['out']}" if "prepared" in r else ""), highlight=False)


@recipe_command("quantize", QuantizeRecipe, "quantize")
def quantize_cmd(recipe: QuantizeRecipe):
    """Quantize a model: int8, int8-dynamic or int4 in PyTorch, or a GGUF file (f16, q8_0, q4_k_m) for llama.cpp.

    The output directory loads like any model: `seedbed generate --model OUT` (and `--engine llama.cpp` for GGUF).
    Example: seedbed quantize --model runs/my-model --method q4_k_m --out runs/my-model-q4
    """
    from seedbed.quantize import quantize

    with err.status(f"quantizing {recipe.model} ({recipe.method})", spinner="dots") if not recipe.quiet else nullcontext():
        result = quantize(recipe)
    r = result.report
    console.print(
        f"[green]Done.[/green] {recipe.method}: linear weights {r['linear_bytes_before'] / 2**20:,.1f} → "
        f"{r['linear_bytes_after'] / 2**20:,.1f} MiB ({r['linear_ratio']}x smaller), all weights "
        f"{r['weight_bytes_before'] / 2**20:,.1f} → {r['weight_bytes_after'] / 2**20:,.1f} MiB "
        f"({r['total_ratio']}x), in {r['seconds']:.0f} s. Model, recipe.yaml and quantize.json in {result.out}"
    )


@recipe_command("distill", DistillRecipe, "distill")
def distill_cmd(recipe: DistillRecipe):
    """Distill a teacher into a smaller student: logit (KL at temperature T, mixed with cross-entropy) or
    sequence level (the student learns the teacher's generated answers; the teacher may be a `seedbed serve` URL).

    --student is a model directory that shares the teacher's tokenizer, or a preset built from the teacher:
    keep-every-K (same width, every K-th layer, first and last kept; e.g. keep-every-2, keep-every-3);
    narrow-half / narrow-third (width, heads and every 2nd layer, weights selected from the teacher's: 36% / 22%
    of Gemma 3 270M's parameters).
    Example: seedbed distill --teacher runs/my-model --student narrow-half --data train.jsonl --out runs/student
    """
    if relaunched(recipe):
        return
    from seedbed.train.distill import distill

    result = distill(recipe)
    if metrics_to_report(result, "distill") is None:
        return
    console.print(f"[green]Done.[/green] Student, recipe.yaml, metrics.json and model card in {result.out}")


@recipe_command("compare", CompareRecipe, "compare")
def compare_cmd(recipe: CompareRecipe,
                specs: list[str] = typer.Argument(None, metavar="MODEL...", help="NAME=MODEL pairs (or MODEL alone).")):
    """Compare models side by side: parameters, file size, peak RAM, load time, prompt and decode tokens/s,
    held-out loss and task accuracy; writes compare.md, compare.json and a quality-vs-speed plot compare.png.

    A GGUF model (a .gguf file, or a directory `seedbed quantize` wrote one to) is run with llama.cpp.
    Example: seedbed compare tuned=runs/my-model int8=runs/my-model-int8 q4=runs/my-model-q4 --data heldout.jsonl
    """
    from seedbed.evaluate.compare import compare

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if specs:
        recipe.models = list(specs)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  disable=recipe.quiet) as progress:
        task = progress.add_task("measuring", total=len(recipe.models))
        result = compare(recipe, on_model=lambda i, name: progress.update(
            task, completed=i, description=f"measuring {name} ({i + 1}/{len(recipe.models)})"))
    console.print(result.markdown, markup=False, highlight=False)
    console.print(f"Table, data and plot in {recipe.out}/compare.md, compare.json, compare.png")


@app.command("plan")
def plan_cmd(
    flops: float = typer.Option(None, "--flops", help="Compute budget in FLOPs (e.g. 1e18)."),
    hours: float = typer.Option(None, "--hours", help="Compute budget in hours on --hardware."),
    hardware: str = typer.Option(None, "--hardware", help="Named hardware: h100, h200, a100, l4, rtx4090, cpu-2core."),
    flops_per_s: float = typer.Option(None, "--flops-per-s", help="Your hardware's training throughput in FLOP/s (instead of --hardware)."),
    measured: str = typer.Option(None, "--measured", help="A Seedbed run's metrics.json: its measured tokens/s sets the throughput."),
    mfu: float = typer.Option(None, "--mfu", help="Model FLOP utilisation of --hardware's peak (default 0.4 for GPUs)."),
    tokens: float = typer.Option(None, "--tokens", help="Unique tokens of training text you have."),
    data: list[str] = typer.Option(None, "--data", help="Your text files: their tokens are estimated (~4 characters a token)."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="Vocabulary size (default: chosen for the model's size)."),
    cost_per_hour: float = typer.Option(None, "--cost-per-hour", help="USD per hour of the hardware (default: its assumed price)."),
    out: str = typer.Option(None, "--out", help="Write the plan as a pretrain recipe (YAML) to this file."),
):
    """How big a model for this much compute: Chinchilla's ~20 tokens per parameter (C = 6·N·D), a Llama-style
    shape, wall time and cost; smaller when your text is too short for the budget.

    Example: seedbed plan --hours 8 --hardware h100 --tokens 2e9
             seedbed plan --flops 3e15 --data corpus.txt --out plan.yaml   # then seedbed pretrain --recipe plan.yaml
    """
    import json
    from pathlib import Path

    from seedbed import plan as planning

    try:
        if measured:
            flops_per_s = planning.measured_rate(json.loads(Path(measured).read_text()))
        if data:
            tokens = (tokens or 0) + planning.estimate_tokens(data)
        result = planning.make_plan(flops=flops, hours=hours, hardware=hardware, flops_per_s=flops_per_s, mfu=mfu,
                                    data_tokens=tokens, vocab_size=vocab_size, cost_per_hour=cost_per_hour)
        if out:
            from seedbed.recipe import save_recipe

            save_recipe(planning.pretrain_recipe(result, data or []), out, "pretrain")
    except (SeedbedError, OSError, ValueError) as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise typer.Exit(2) from None
    table = Table("", "plan")
    for what, value in planning.describe(result):
        table.add_row(what, value)
    console.print(table)
    for note in result.notes:
        console.print(note, markup=False, highlight=False)
    if out:
        console.print(f"Pretrain recipe in {out}: seedbed pretrain --recipe {out} --data YOUR_TEXT --out runs/pretrain")


@app.command("index")
def index_cmd(
    paths: list[str] = typer.Argument(..., help="Files or directories: .txt, .md, .html, .jsonl (and .pdf with pypdf)."),
    out: str = typer.Option(..., "--out", help="Index directory (created, or updated in place)."),
    chunk_size: int = typer.Option(800, "--chunk-size", help="Characters per chunk."),
    overlap: int = typer.Option(160, "--overlap", help="Characters shared by consecutive chunks."),
    remove: bool = typer.Option(False, "--remove", help="Remove these sources' chunks instead of indexing them."),
):
    """Build or update a retrieval index (embeddings + BM25) for grounding served answers.

    Example: seedbed index docs/ --out runs/docs-index
    """
    try:
        require_extras("index")
        from seedbed.retrieval import build_index, remove_from_index

        if remove:
            remove_from_index(out, paths)
            console.print(f"Removed {len(paths)} source(s) from {out}")
            return
        report = build_index(paths, out, chunk_size=chunk_size, overlap=overlap)
    except SeedbedError as e:
        err.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    console.print(report)


@app.command("studio")
def studio_cmd(
    data_dir: str = typer.Option("studio", "--data-dir", help="Where the studio keeps its jobs, datasets and models."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but localhost needs --token."),
    port: int = typer.Option(7860, "--port", help="Port to listen on."),
    token: str = typer.Option(None, "--token", envvar="SEEDBED_STUDIO_TOKEN",
                              help="Required on every request (open the printed link once); needed off localhost."),
    max_upload_mb: int = typer.Option(200, "--max-upload-mb", min=1, help="Largest dataset upload in MiB."),
):
    """Seedbed Studio: datasets, jobs (with live loss curves), models and a playground in the browser.

    Jobs are processes of their own: they keep running when the tab closes or the studio stops.
    Example: seedbed studio --data-dir ~/seedbed-studio
    """
    from seedbed.studio.server import run_studio

    try:
        run_studio(data_dir, host, port, token, max_upload_mb,
                   on_ready=lambda url: console.print(f"Seedbed Studio on {url}", highlight=False))
    except SeedbedError as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise typer.Exit(2) from None


@models_app.command("list")
def models_list():
    """Show the converted models in the local cache."""
    from seedbed.models import cache_dir, list_cached

    table = Table("name", "size", "converted from", "path")
    for m in list_cached():
        table.add_row(m.name, f"{m.size_bytes / 2**20:,.0f} MiB", m.source, str(m.path))
    console.print(table if table.rows else f"No cached models in {cache_dir()} yet.")


if __name__ == "__main__":
    app()
