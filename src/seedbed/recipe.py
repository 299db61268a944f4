"""The one recipe format: a pydantic model per stage, loaded from YAML, every field also a CLI flag.

A recipe file has one section per stage it configures:

    finetune: {base: gemma-3-270m, data: [train.jsonl], method: lora}
    eval: {models: [tuned=runs/demo/model], data: [heldout.jsonl], shots: [0, 3]}

`seedbed finetune --recipe FILE --lr 1e-4` reads the `finetune` section and overrides `lr`. The resolved
recipe (file + flags + defaults) is written next to every artifact as `recipe.yaml`, so a model directory
says exactly how it was made. Defaults cite where they come from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seedbed.atomic import atomic_write_text
from seedbed.errors import RecipeError

# Each data stage's config: pydantic only, so loading a recipe does not import the stages' libraries.
from seedbed.curate.config import (
    BalanceConfig,
    DecontaminateConfig,
    DedupConfig,
    LanguageConfig,
    NormaliseConfig,
    PIIConfig,
    QualityConfig,
    SplitConfig,
    ToxicityConfig,
)


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# A template piece: `{{` or `}}` (a literal brace), `{field}`, or a stray brace (an error).
_TEMPLATE_PIECE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def template_pieces(template: str) -> list[tuple[str, bool]]:
    """A mapping template as (text, is_field) pieces: `{name}` names a field (`{meta.title}` a field inside an
    object, `{turns.0}` an element of a list) and `{{` / `}}` are literal braces, as in Python's str.format.

    >>> template_pieces("Turn this request into JSON: {text} {{...}}")
    [('Turn this request into JSON: ', False), ('text', True), (' {...}', False)]
    >>> template_pieces("{text")
    Traceback (most recent call last):
    ValueError: a stray '{' in '{text': name a field as {field}, or write {{ for a literal brace
    """
    pieces: list[tuple[str, bool]] = []
    text, pos = "", 0
    for match in _TEMPLATE_PIECE.finditer(template):
        text += template[pos : match.start()]
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            text += token[0]
        elif match.group(1) is not None:
            name = match.group(1).strip()
            if not name:
                raise ValueError(f"an empty {{}} in {template!r}: name a field inside the braces")
            if text:
                pieces.append((text, False))
                text = ""
            pieces.append((name, True))
        else:
            raise ValueError(f"a stray {token!r} in {template!r}: name a field as {{field}}, "
                             f"or write {token * 2} for a literal brace")
    text += template[pos:]
    return pieces + [(text, False)] if text else pieces


class FieldMapping(Stage):
    """Your records' own fields as a chat, with no code (as LLaMA-Factory's dataset columns or Axolotl's dataset
    types do): a user turn and an answer from templates, optionally a system turn and a category.

        mapping:
          prompt: "Turn this request into JSON: {text}"
          response_json: [intent, slots]      # the answer: {"intent": ..., "slots": [...]}

    Every field a mapping names must be in every record; a record without one fails as `file:line: field 'x':
    missing`. With a mapping, records are read through it alone (the built-in shapes are not tried).
    """

    prompt: str = Field(description="The user turn: a template, {field} placeholders ({meta.title} reaches into an object; {{ and }} are literal braces).")
    response: str | None = Field(None, description="The answer: a template like prompt. Give response or response_json.")
    response_json: list[str] | None = Field(None, description="The answer as a JSON object of these fields, in this order (a dotted path's key is its last part).")
    system: str | None = Field(None, description="A system turn: a template like prompt.")
    category: str | None = Field(None, description="The field holding each record's category (balancing, the datasheet).")

    @field_validator("prompt", "response", "system")
    @classmethod
    def _template_parses(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("a template with nothing in it")
        if value is not None:
            template_pieces(value)
        return value

    @model_validator(mode="after")
    def _one_answer(self):
        if (self.response is None) == (self.response_json is None):
            raise ValueError("give the answer as response (a template) or response_json (a list of fields), one of them")
        if self.response_json is not None:
            keys = [path.rsplit(".", 1)[-1] for path in self.response_json]
            if not keys or any(not k.strip() for k in keys):
                raise ValueError("response_json: give the fields to put into the answer, e.g. [intent, slots]")
            if len(set(keys)) < len(keys):
                raise ValueError(f"response_json: two fields would share a key in the answer: {self.response_json}")
        return self


TRUTHFULNESS_QUESTIONS = 8  # TrainArgs.truthfulness_questions' default (see the comment there)


class TrainArgs(Stage):
    """What every training stage (finetune, distill) is given: data, output, schedule, checkpoints, resuming.

    Only the shared plumbing (`seedbed.train.trainer`) reads these. A stage whose default or wording differs
    redefines just that field; `out` and `lr` have no shared default, so each stage gives its own.
    """

    data: list[str] = Field(default_factory=list, description="Training data files or directories (JSONL, JSON, CSV, Parquet).")
    val_data: list[str] = Field(default_factory=list, description="Validation files; if empty, val_fraction of data is held out.")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="Share of data held out for validation when val_data is empty.")
    mapping: FieldMapping | None = Field(None, description="Read data and val_data through this mapping of your records' own fields (see --mapping.prompt).")
    out: str = Field(description="Output directory.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: run all epochs).")
    batch_size: int = Field(4, ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(gt=0, description="Peak learning rate.")
    warmup: float = Field(0.03, ge=0, description="Warmup: a ratio of total steps if < 1, else a step count.")
    scheduler: str = Field("cosine", description="Learning-rate schedule after warmup (a transformers scheduler name).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_length: int = Field(1024, ge=8, description="Longest sequence in tokens; longer examples are truncated and counted.")
    # A base model's rows for turn markers of a template it never saw can be untrained (Gemma 3 270M base:
    # <end_of_turn> has cosine 0.995 with <unused1354>), and LoRA leaves rows as they are (seedbed.train.template_tokens).
    # Init default "mean", measured on the tiny test (a pre-trained tiny Llama whose <|end|> row equals <unused0>'s,
    # LoRA, seeds 1 and 2): at lr 1e-3, after 10 and 20 steps, mean gave log p(<|end|>) 0.45-0.50 nats higher and
    # validation loss 0.02 lower than keep; at lr 5e-3 the two were level. Both stopped on the same prompts.
    template_tokens: Literal["auto", "always", "off"] = Field("auto", description="Chat-template tokens (end of turn, ...) whose embedding rows look untrained: auto trains those rows (with LoRA too), always trains every template token's rows, off leaves them.")
    template_tokens_init: Literal["mean", "keep"] = Field("mean", description="Start an under-trained template token's rows from the mean trained row (mean, as Unsloth does) or from where they are (keep).")
    template_tokens_lr_scale: float = Field(1.0, gt=0, description="With LoRA, the template tokens' rows learn at lr times this; raise it (10) for long answers, where each example gives the end-of-turn row one position in hundreds to learn from.")
    eval_steps: int = Field(50, ge=1, description="Validation loss every N steps.")
    save_steps: int = Field(100, ge=1, description="Checkpoint every N steps.")
    logging_steps: int = Field(5, ge=1, description="Log the training loss every N steps.")
    max_records: int | None = Field(None, ge=1, description="Train on a seeded random subset of N examples (quick runs).")
    seed: int = Field(42, description="Seed for shuffling, the split and initialisation.")
    resume: bool = Field(False, description="Continue the run in `out` from its last checkpoint.")
    quiet: bool = Field(False, description="No progress bar.")
    num_processes: int = Field(1, ge=1, description="Train with this many processes (DDP under `accelerate launch`: one per GPU, or gloo on CPUs); a checkpoint resumes under any count.")
    launcher: Literal["accelerate", "ray"] = Field("accelerate", description="What starts the --num-processes processes: `accelerate launch` on this machine, or Ray Train workers on the Ray cluster RAY_ADDRESS names (the `ray` extra).")
    # A seeded subset, not all 817 nor 200: on Gemma 3 270M and 2 CPU cores a question costs ~3.2 s per model
    # (322 CPU-s for 50; BENCHMARKS.md, "Truthfulness and knowledge by likelihood"), and `seedbed demo` (13.0 of
    # its 15 minutes with it, measured) had ~80 s to spare for the tuned model and its base. 8 catches a collapse, not a 2-point
    # change (± ~14 points); ask for more (817 is minutes on a GPU). The base's figure is cached per base.
    truthfulness_questions: int = Field(TRUTHFULNESS_QUESTIONS, ge=0, description="After training, TruthfulQA MC1/MC2 on this many seeded questions for the model and its base, on the model card (0: off).")


class RunArgs(Stage):
    """How a training run computes, checkpoints, is tracked and costed: shared by finetune and pretrain."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: bf16 on a GPU that has it, fp32 on CPU.")
    save_total_limit: int = Field(2, ge=1, description="Keep at most this many checkpoints.")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (default: a local file store, ./mlruns).")
    cost_per_hour: float | None = Field(None, ge=0, description="USD per machine-hour for the cost estimate (default by device).")


class FinetuneRecipe(RunArgs, TrainArgs):
    """Instruction fine-tuning of a causal LM (LoRA or full)."""

    base: str = Field("gemma-3-270m", description="Base model: 'gemma-3-270m', a local HF directory, a .gguf file or a hub id.")
    out: str = Field("runs/finetune", description="Output directory.")  # finetune's own default
    method: Literal["lora", "full"] = Field("lora", description="lora (PEFT adapters, merged at the end) or full.")
    # LoRA defaults: r=16, alpha=32 on all linear layers, as in the QLoRA paper's setup (Dettmers et al. 2023,
    # which found all-layer adapters needed to match full fine-tuning).
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_targets: str = Field("all-linear", description="Modules to adapt: 'all-linear' or comma-separated names.")
    # Redefined for its description: with packing, a micro-batch holds packed rows.
    batch_size: int = Field(4, ge=1, description="Sequences per micro-batch (packed rows when packing).")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate (2e-4 for LoRA, ~2e-5 for full, as in TRL's docs).")
    packing: bool = Field(False, description="Pack short examples into rows of max_length, with no attention across examples.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")


class PretrainRecipe(RunArgs, TrainArgs):
    """A Llama-style model trained from scratch on your text: a BPE tokenizer learnt from it, then next-token
    prediction on packed blocks of `max_length` tokens. `seedbed plan --out` writes one sized for a budget."""

    data: list[str] = Field(default_factory=list, description="Text to learn from: .txt/.md files (documents split at blank lines), .jsonl (text_fields of each record), or directories of them.")
    text_fields: list[str] = Field(default_factory=lambda: ["text"], description="JSONL: the fields joined (one per line) into a record's text; a record with none of them is an error naming its line.")
    out: str = Field("runs/pretrain", description="Output directory.")
    tokenizer: str | None = Field(None, description="Use this model's or directory's tokenizer instead of learning one from the data.")
    vocab_size: int = Field(2048, ge=300, description="Vocabulary of the learnt BPE tokenizer (seedbed plan picks one for the model's size).")
    # The shape: seedbed plan's `llama_shape` for ~1M parameters (a 4-layer, 128-wide Llama).
    layers: int = Field(4, ge=1, description="Transformer layers.")
    hidden_size: int = Field(128, ge=8, description="Model width.")
    heads: int = Field(4, ge=1, description="Attention heads (hidden_size must divide by it).")
    kv_heads: int | None = Field(None, ge=1, description="Key/value heads (grouped-query attention); default: as many as heads.")
    intermediate_size: int | None = Field(None, ge=8, description="MLP width; default 8/3 of hidden_size rounded to 32, as Llama.")
    # Redefined for pretraining: a global batch (what a step sees whatever the process count), nanoGPT's small-model
    # schedule (lr 1e-3, weight decay 0.1 as in Llama 2) and context.
    batch_size: int = Field(16, ge=1, description="Sequences per optimizer step over all processes (each process gets batch_size / num_processes / grad_accum).")
    max_length: int = Field(256, ge=8, description="Context: tokens per packed training block.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (1e-3 as nanoGPT's small models; lower it for bigger ones).")
    warmup: float = Field(0.05, ge=0, description="Warmup: a ratio of total steps if < 1, else a step count.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (0.1 as in Llama 2).")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="Share of packed blocks held out for validation when val_data is empty.")
    samples: int = Field(4, ge=0, description="Text samples generated at the end (printed, in metrics.json and the model card).")
    sample_tokens: int = Field(48, ge=1, description="Tokens per sample.")
    sample_prompts: list[str] = Field(default_factory=list, description="Prompts to continue for the samples (default: the first words of held-out documents).")
    truthfulness_questions: int = Field(0, ge=0, description="TruthfulQA questions for the card (0: off; a model this small answers at chance).")


class EngineArgs(Stage):
    """Which engine runs a model: shared by every verb that generates (generate, chat, eval, serve)."""

    engine: Literal["torch", "llama.cpp"] = Field("torch", description="torch (transformers) or llama.cpp (a GGUF model, through llama-cpp-python).")
    threads: int | None = Field(None, ge=1, description="CPU threads for --engine llama.cpp (default: all cores).")


class GenerateRecipe(EngineArgs):
    """Text generation from a model."""

    model: str = Field("gemma-3-270m", description="Model: a name, a local directory or a .gguf file.")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens to generate.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (0 means greedy).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling: keep the smallest set of tokens with this much probability.")
    greedy: bool = Field(False, description="Always take the most likely token (deterministic).")
    stop: list[str] = Field(default_factory=list, description="Stop when any of these strings appears (the template's end of turn is always one).")
    system: str | None = Field(None, description="System prompt for chat.")
    raw: bool = Field(False, description="Continue the prompt as plain text, without the chat template.")
    seed: int | None = Field(None, description="Seed for sampling.")
    json_schema: str | None = Field(None, description="A JSON schema file: the answer is JSON that it accepts (constrained decoding).")


class JudgeArgs(Stage):
    """A judged A/B comparison (`seedbed eval --judge`): models answer open prompts, a judge picks the better answer
    of each pair in both orders, and win rates and ratings say which model to keep. Read by `evaluate/pairwise.py`."""

    judge: str | None = Field(None, description="Compare --models pairwise with this judge: an OpenAI-compatible URL (http://host:port/v1) or a local model (name or directory) run through the same decode path.")
    judge_model: str | None = Field(None, description="The model name to ask at a --judge URL (default: the first the endpoint lists).")
    judge_key_env: str = Field("SEEDBED_JUDGE_API_KEY", description="Environment variable holding the API key for a --judge URL.")
    judge_timeout: float = Field(60.0, gt=0, description="Seconds to wait for one judge reply.")
    judge_retries: int = Field(2, ge=0, description="Retries of a judge request that timed out or failed (HTTP errors).")
    judge_max_tokens: int = Field(512, ge=16, description="Most tokens in the judge's reply (its explanation and verdict).")
    judge_verdict_only: bool = Field(False, description="Constrain the judge's reply to one verdict, \"[[A]]\", \"[[B]]\" or \"[[C]]\" (JSON-schema constrained decoding; response_format for a URL): for small judges that cannot keep the format. The judge then writes no explanation.")
    prompts: list[str] = Field(default_factory=list, description="JSONL/CSV files of your own prompts to judge on (default: MT-Bench's 80 first turns, shipped).")
    prompt_field: str = Field("prompt", description="The field of --prompts records that holds the prompt (an `id` field, if present, names it).")
    votes: list[str] = Field(default_factory=list, description="JSONL files of human votes: {prompt_id, model_a, model_b, winner: A|B|tie}.")
    bootstrap: int = Field(1000, ge=10, description="Bootstrap resamples (of prompts) for the confidence intervals.")


# `seedbed eval --likelihood` tasks (seedbed.evaluate.mc_tasks.TASKS; a test keeps the two lists equal).
LikelihoodTask = Literal["truthfulqa_mc1", "truthfulqa_mc2", "commonsenseqa"]


class EvalRecipe(JudgeArgs, EngineArgs):
    """Held-out loss, the task's scores (GSM8K or JSON) and usability (stop, repetition), zero- and few-shot, for
    one or more models on the same questions."""

    models: list[str] = Field(default_factory=lambda: ["base=gemma-3-270m"], description="NAME=MODEL pairs (or a MODEL alone).")
    data: list[str] = Field(default_factory=list, description="Held-out files with reference answers.")
    pool: list[str] = Field(default_factory=list, description="Files to draw few-shot examples from (never the held-out ones).")
    mapping: FieldMapping | None = Field(None, description="Read data and pool through this mapping of your records' own fields (see --mapping.prompt).")
    task: Literal["auto", "gsm8k", "json"] = Field(
        "auto", description="How answers are scored. gsm8k: the final number against the reference's `#### N`; "
        "json: JSON objects (exact match, accuracy of each text/number field, F1 of each list field); "
        "auto: json when every reference is a JSON object, else gsm8k.")
    shots: list[int] = Field(default_factory=lambda: [0, 3], description="Few-shot counts to run each model with (0 = zero-shot).")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N held-out examples.")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens per generated answer.")
    batch_size: int = Field(8, ge=1, description="Prompts generated together.")
    max_length: int = Field(1024, ge=8, description="Longest sequence for held-out loss.")
    out: str | None = Field(None, description="Directory for results.json and results.md.")
    seed: int = Field(42, description="Seed for choosing few-shot examples.")
    json_schema: str | None = Field(None, description="A JSON schema file: every generated answer is JSON that it accepts (constrained decoding).")
    quiet: bool = Field(False, description="No progress bar.")
    tools: list[Literal["calculator"]] = Field(
        default_factory=list, description="Also run every condition with this tool, as `seedbed serve` runs it "
        "(calculator: GSM8K `<<EXPR=` annotations completed exactly), as a row `NAME +calculator` beside the plain one.")
    model_card: bool = Field(True, description="Write the table into the card (README.md) of each evaluated Seedbed model directory, in a section the next eval replaces.")
    lm_eval: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks to run in process on each model (seedbed_csqa is shipped); --limit applies.")
    lm_eval_include: list[str] = Field(default_factory=list, description="Directories of lm-eval task YAMLs, beside the shipped ones.")
    likelihood: list[LikelihoodTask] = Field(
        default_factory=list, description="Multiple-choice tasks scored by log-likelihood, as lm-eval: "
        "truthfulqa_mc1, truthfulqa_mc2, commonsenseqa (repeat; --limit applies; runs without --data too).")

    @model_validator(mode="after")
    def _shots_nonnegative(self):
        if any(k < 0 for k in self.shots):
            raise ValueError("shots must be >= 0")
        return self


class ServeRecipe(EngineArgs):
    """An OpenAI-compatible server for one or more models."""

    model: list[str] = Field(default_factory=list, description="NAME=MODEL to serve (repeat for several).")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    api_key: list[str] = Field(default_factory=list, description="Accepted API keys (repeatable); none: no auth.")
    api_keys_file: str | None = Field(None, description="File with one accepted API key per line.")
    rag: list[str] = Field(default_factory=list, description="NAME=INDEX: ground model NAME's answers in an index.")
    rag_k: int = Field(4, ge=1, le=50, description="Retrieved chunks per grounded answer.")
    tools: list[str] = Field(default_factory=list, description="YAML files of server-side HTTP tools (calculator is built in).")
    fewshot: list[str] = Field(default_factory=list, description="NAME=FILE: answer with few-shot examples from FILE.")
    fewshot_k: int = Field(3, ge=1, le=32, description="Examples per request in a few-shot profile.")
    fewshot_mode: Literal["fixed", "similar"] = Field("similar", description="fixed: the first k; similar: the k closest to the question.")
    max_batch: int = Field(8, ge=1, description="Most requests decoded together.")
    batch_window_ms: float = Field(10.0, ge=0, description="How long the first request waits for others to batch with.")
    max_queue: int = Field(256, ge=1, description="Requests that may wait per model; more are answered 429 with Retry-After.")
    max_prompt_tokens: int = Field(4096, ge=1, description="Longest prompt accepted.")
    max_tokens: int = Field(2048, ge=1, description="Most completion tokens a request may ask for.")
    default_max_tokens: int = Field(512, ge=1, description="Completion tokens when a chat request gives none.")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest request body.")
    # Not OpenAI's 4: lm-eval's local-completions sends a task's whole `until` list plus the end of text, often
    # more than 4. Scanning is linear in the stops' length (inference/stops.py), so 16 of 1000 characters is cheap.
    max_stops: int = Field(16, ge=1, le=64, description="Most stop strings one request may give.")
    request_timeout_s: float = Field(300.0, gt=0, description="Longest a request may run.")
    log_content: bool = Field(False, description="Log prompts and completions (off: they never reach the logs).")


class DataRecipe(Stage):
    """Data curation: `seedbed data prepare`. Each stage is a section of its own, configured in the recipe file."""

    inputs: list[str] = Field(default_factory=list, description="Input files or directories (any shape fine-tuning reads).")
    mapping: FieldMapping | None = Field(None, description="Read inputs through this mapping of your records' own fields (see --mapping.prompt).")
    out: str = Field("runs/data", description="Output directory.")
    engine: Literal["local", "ray"] = Field("local", description="local: a process pool on this machine; ray: Ray Data.")
    ray_address: str | None = Field(None, description="Ray cluster to use with --engine ray ('auto', ray://host:port); default starts a local one.")
    workers: int = Field(0, ge=0, description="Worker processes (0: one per CPU core).")
    chunk_size: int = Field(1000, ge=1, description="Records per chunk of work; bounds memory per worker.")
    examples_per_reason: int = Field(5, ge=0, description="Example records per drop reason shown in report.html.")
    quiet: bool = Field(False, description="No progress bar.")
    normalise: NormaliseConfig = Field(default_factory=NormaliseConfig)
    pii: PIIConfig = Field(default_factory=PIIConfig)
    toxicity: ToxicityConfig = Field(default_factory=ToxicityConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)


# Self-Instruct's keyword filter (Wang et al. 2023, as in tatsu-lab/stanford_alpaca's generate_instruction.py):
# tasks a text-only model cannot do.
SYNTH_BLOCKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                   "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram"]


class SynthRecipe(Stage):
    """Self-Instruct (Wang et al. 2023; Alpaca's recipe): a teacher writes new instructions from a few seed tasks
    and answers them; near-duplicates, impossible and badly sized tasks are filtered; `data prepare` curates."""

    seeds: list[str] = Field(default_factory=lambda: ["seedbed:data/seed_tasks_demo_train.jsonl"], description="Seed tasks (any shape fine-tuning reads; default: 165 of Self-Instruct's 175 human-written seeds, shipped).")
    teacher_url: str | None = Field(None, description="The teacher: an OpenAI-compatible server (http://host:port/v1), e.g. `seedbed serve`.")
    teacher_name: str | None = Field(None, description="The model name on teacher_url (default: the only one it serves).")
    licence: str = Field("unknown", description="The terms the teacher's output is under (its provider's terms of use, or the teacher model's licence): written into every record's lineage.")
    out: str = Field("runs/synth", description="Output directory: synth.jsonl, rejected.jsonl, synth_report.json, and prepared/ from data prepare.")
    target: int = Field(100, ge=1, description="New instructions to keep.")
    max_rounds: int = Field(200, ge=1, description="Most rounds of asking (each: one list of new tasks, then an answer to each kept task).")
    # Self-Instruct: 8 in-context tasks, 6 human-written and 2 generated.
    prompt_tasks: int = Field(8, ge=1, description="Tasks shown to the teacher in each round.")
    prompt_machine_tasks: int = Field(2, ge=0, description="Of those, how many are tasks it generated before (once there are some).")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="Drop a task whose ROUGE-L F against any task in the pool is at least this (Self-Instruct: 0.7).")
    min_words: int = Field(4, ge=1, description="Drop tasks of fewer words (Alpaca: more than 3).")
    max_words: int = Field(150, ge=1, description="Drop tasks of more words (Self-Instruct: 150).")
    blocklist: list[str] = Field(default_factory=lambda: list(SYNTH_BLOCKLIST), description="Drop tasks that mention any of these words (Self-Instruct's: images, files, audio... that a text model cannot handle).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for new tasks (Alpaca: 1.0); answers are greedy.")
    max_tokens: int = Field(1024, ge=16, description="Most tokens in the teacher's list of new tasks.")
    answer_max_tokens: int = Field(512, ge=1, description="Most tokens in each answer.")
    requests_per_s: float = Field(2.0, ge=0, description="Most requests started per second to the teacher (0: no limit).")
    timeout_s: float = Field(300.0, gt=0, description="Seconds to wait for one teacher reply.")
    seed: int = Field(42, description="Seed for choosing the in-context tasks of each round.")
    prepare: bool = Field(True, description="Run `data prepare` (its default stages) on the kept records into out/prepared.")
    quiet: bool = Field(False, description="No progress output.")


class DemoRecipe(Stage):
    """The main job: curate a narrow task's raw records, evaluate the base model zero-shot and few-shot on a
    held-out split, LoRA fine-tune, evaluate the tuned model on the same split, and show answers side by side."""

    out: str = Field("runs/demo", description="Where the demo writes its curated data, model and eval results.")
    show: int = Field(4, ge=0, description="Held-out examples whose base and tuned answers are shown side by side.")
    fewshot: int = Field(5, ge=1, description="Examples in the base model's few-shot prompt.")
    retrain: bool = Field(False, description="Curate and fine-tune again even if a finished demo model exists in out.")
    prepare: DataRecipe = Field(default_factory=DataRecipe, description="How the demo curates its raw training records (out is set by the demo).")
    finetune: FinetuneRecipe = Field(default_factory=FinetuneRecipe, description="How the demo fine-tunes (data and out are set by the demo).")
    eval: EvalRecipe = Field(default_factory=EvalRecipe, description="How the demo evaluates (models are set by the demo).")


# The one table of `seedbed quantize` methods, and the kind of output each makes: "torch" (a transformers directory,
# quantized in PyTorch) or "gguf" (a GGUF file for llama.cpp). The --method choices are built from it.
QUANTIZE_METHODS = {
    "int8": "torch", "int8-dynamic": "torch", "int4": "torch",
    "f16": "gguf", "q8_0": "gguf", "q4_k_m": "gguf",
}
QuantizeMethod = Literal[tuple(QUANTIZE_METHODS)]


class QuantizeRecipe(Stage):
    """Quantize a model: int8 / int4 in PyTorch (torchao), or a GGUF file (f16, q8_0, q4_k_m) for llama.cpp."""

    model: str = Field("gemma-3-270m", description="Model to quantize: a name, a local directory or a hub id.")
    method: QuantizeMethod = Field(
        "int8", description="int8: int8 weights; int8-dynamic: int8 weights and activations; int4: int4 weights "
        "(PyTorch: torchao for int8, aten kernels for int4); f16, q8_0, q4_k_m: GGUF files for llama.cpp.")
    out: str = Field("runs/quantized", description="Output directory.")
    group_size: int = Field(128, ge=16, description="int4: weights sharing one scale (smaller: more accurate, bigger).")
    quiet: bool = Field(False, description="No progress output.")


class DistillRecipe(TrainArgs):
    """Knowledge distillation: train a smaller student to imitate a teacher (logit or sequence level)."""

    teacher: str | None = Field(None, description="Teacher model: a local directory, a name or a hub id (needed unless resuming).")
    student: str = Field("keep-every-2", description="Student: a model directory / hub id, or a preset (see `seedbed distill --help`).")
    # Redefined from TrainArgs for distill's own default or wording: data, out, lr, scheduler, eval_steps, max_records.
    data: list[str] = Field(default_factory=list, description="Training prompts/examples (any shape fine-tuning reads).")
    out: str = Field("runs/distill", description="Output directory.")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate (the student is trained in full).")
    scheduler: str = Field("cosine", description="Learning-rate schedule after warmup.")
    eval_steps: int = Field(50, ge=1, description="Validation loss and KL every N steps.")
    max_records: int | None = Field(None, ge=1, description="Train on a seeded random subset of N examples.")
    mode: Literal["logit", "sequence"] = Field("logit", description="logit: match the teacher's token distributions (KL); sequence: train on the teacher's generated answers.")
    # Hinton, Vinyals & Dean 2015 ("Distilling the Knowledge in a Neural Network"): soft targets at a raised
    # temperature, KL scaled by T^2, mixed with the hard-label loss; T=2 and an even mix as in DistilBERT-style
    # recipes (Sanh et al. 2019 weight the soft loss most); see seedbed/train/distill.py for the loss.
    temperature: float = Field(2.0, gt=0, description="Softmax temperature for the teacher's and student's distributions.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL term; 1 - alpha weights the usual cross-entropy.")
    teacher_url: str | None = Field(None, description="sequence mode: an OpenAI-compatible server (e.g. `seedbed serve`) to generate with.")
    teacher_name: str | None = Field(None, description="sequence mode: the model name on teacher_url.")
    teacher_max_new_tokens: int = Field(256, ge=1, description="sequence mode: most tokens per teacher answer.")


class CompareRecipe(Stage):
    """Size, speed and quality of several models side by side: a markdown table and a quality-vs-speed plot."""

    models: list[str] = Field(default_factory=list, description="NAME=MODEL (a directory, .gguf file or quantized directory); repeat.")
    engine: Literal["auto", "torch", "llama.cpp"] = Field("auto", description="auto: llama.cpp for GGUF models, torch for the rest; or one engine for all.")
    data: list[str] = Field(default_factory=list, description="Held-out files with reference answers (for loss and accuracy).")
    limit: int | None = Field(32, ge=1, description="Held-out examples to score (None: all).")
    max_new_tokens: int = Field(192, ge=1, description="Most tokens per generated answer (accuracy).")
    threads: int = Field(2, ge=1, description="CPU threads for every engine (speed is measured on the CPU unless a GPU is present).")
    prompt_tokens: int = Field(128, ge=1, description="Prompt length for the prompt-speed measurement.")
    decode_tokens: int = Field(64, ge=1, description="Tokens decoded for the decode-speed measurement.")
    repeats: int = Field(3, ge=1, description="Speed measurements per model; the median is reported.")
    out: str = Field("runs/compare", description="Directory for compare.md, compare.json and compare.png.")
    quiet: bool = Field(False, description="No progress bar.")


class Recipe(Stage):
    """A recipe file: one optional section per stage."""

    data: DataRecipe | None = None

    finetune: FinetuneRecipe | None = None
    pretrain: PretrainRecipe | None = None
    synth: SynthRecipe | None = None
    generate: GenerateRecipe | None = None
    eval: EvalRecipe | None = None
    serve: ServeRecipe | None = None
    demo: DemoRecipe | None = None
    quantize: QuantizeRecipe | None = None
    distill: DistillRecipe | None = None
    compare: CompareRecipe | None = None


def packaged_recipe(name: str) -> Path:
    """A recipe shipped with Seedbed (the repository's `recipes/` directory, installed with the package)."""
    from importlib.resources import files

    return Path(str(files("seedbed") / "recipes" / name))


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file.

    >>> load_recipe("recipes/demo.yaml").finetune.method  # doctest: +SKIP
    'lora'
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    return validate(Recipe, raw, str(path))


def validate(cls: type[Stage], raw: dict, where: str):
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors())
        raise RecipeError(f"{where}: {problems}") from None


def save_recipe(stage: Stage, path: str | Path, section: str) -> None:
    """Write the resolved recipe for one stage, atomically, in the same format `load_recipe` reads."""
    text = yaml.safe_dump({section: stage.model_dump(mode="json")}, sort_keys=False)
    atomic_write_text(Path(path), text)
