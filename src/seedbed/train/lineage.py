"""Lineage of a trained model: the machine, the package versions, the cost, and the model card that says it all."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch

from seedbed.licences import licence_of
from seedbed.train.truthfulness import card_section

PACKAGES = ("seedbed", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "safetensors", "tokenizers")

# Assumed on-demand prices for the cost estimate, USD per hour; override with `cost_per_hour`.
# CPU: ~$0.05 per vCPU-hour (a 2-vCPU general-purpose cloud VM lists at about $0.08-0.10/h).
# GPU: ~$2.50 per H100-hour (typical on-demand price at GPU clouds in 2025-26).
USD_PER_VCPU_HOUR = 0.05
USD_PER_GPU_HOUR = 2.50


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def hardware() -> dict:
    """What this run ran on: CPU model and cores, memory, and the GPU if one was used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def estimated_cost(wall_time_s: float, cost_per_hour: float | None) -> dict:
    if cost_per_hour is None:
        if torch.cuda.is_available():
            cost_per_hour, basis = USD_PER_GPU_HOUR * torch.cuda.device_count(), f"${USD_PER_GPU_HOUR}/GPU-hour"
        else:
            cost_per_hour, basis = USD_PER_VCPU_HOUR * (os.cpu_count() or 1), f"${USD_PER_VCPU_HOUR}/vCPU-hour"
    else:
        basis = "given cost_per_hour"
    return {"usd": round(wall_time_s / 3600 * cost_per_hour, 4), "usd_per_hour": cost_per_hour, "basis": basis}


def template_tokens_line(report: dict | None) -> str:
    """The model card's line on the chat template's tokens (`seedbed.train.trainer.prepare_template_tokens`)."""
    if not report or report["mode"] == "off":
        return "not checked (`template_tokens: off`)"
    checked = ", ".join(f"`{v['token']}`" for v in report["checked"]) or "none found"
    if not report["under_trained"] and not report["trained"]:
        return f"checked {checked}; none under-trained"
    flagged = [v for v in report["checked"] if v["under_trained"]]
    line = "; ".join(f"`{v['token']}` ({v['id']}) under-trained: {'; '.join(v['reasons'])}" for v in flagged)
    if report["trained"]:
        line += (". " if line else "") + f"Trained {', '.join(f'`{t}`' for t in report['trained'])} ({report['how']})"
        if report["initialised_from_mean"]:
            line += f"; {', '.join(f'`{t}`' for t in report['initialised_from_mean'])} started from the mean row"
    return line


def model_card_footer(metrics: dict) -> str:
    """The card's lines on what a run cost: wall time, memory, machine, money, package versions."""
    hw, cost = metrics["hardware"], metrics["cost"]
    hw_line = f"{hw['cpu']}, {hw['cpu_cores']} cores" + (f", {hw['gpu']}" if "gpu" in hw else "")
    versions = ", ".join(f"{k} {v}" for k, v in metrics["packages"].items())
    return f"""- **Wall time:** {metrics['wall_time_s']:.0f} s; peak memory {metrics['peak_memory_bytes'] / 2**30:.2f} GiB ({metrics['peak_memory_kind']})
- **Hardware:** {hw_line}
- **Estimated cost:** ${cost['usd']:.4f} (at ${cost['usd_per_hour']:.2f}/h; {cost['basis']})
- **Packages:** {versions}
"""


def model_card(*, base: str, method: str, files: list, metrics: dict, recipe_yaml: str) -> str:
    """A model card (README.md) in Markdown that records where the model came from and what it cost."""
    rows = "\n".join(f"| `{f.path}` | `{f.sha256}` | {f.records} | {f.examples} |" for f in files)
    val = metrics["val"]
    val_line = (
        f"{val[0]['loss']:.4f} at step {val[0]['step']} → {val[-1]['loss']:.4f} at step {val[-1]['step']}" if val else "none"
    )
    ex = metrics["examples"]
    licence = licence_of(base)  # a fine-tune carries its base's terms
    return f"""---
library_name: transformers
base_model: {base}
{licence.front_matter()}
tags: [seedbed, {method}, instruction-tuned]
---
# Fine-tuned from `{base}` with Seedbed

Instruction-tuned ({method}) with `seedbed finetune`. Prompt it with the chat template saved in the tokenizer.

## Lineage
- **Base model:** `{base}`
- **Method:** {method}
- **Training data:**

| file | sha256 | records | examples |
|---|---|---|---|
{rows}

- **Examples:** {ex['records_read']} records read; {ex['train']} examples trained on, {ex['val']} held out for
  validation, {ex['not_sampled']} left out by `max_records`; {ex['truncated']} truncated to max_length,
  {ex['dropped_no_answer']} dropped because truncation left no answer tokens.
- **Validation loss:** {val_line}
- **Template tokens:** {template_tokens_line(metrics.get("template_tokens"))}
- **Tokens seen:** {metrics['tokens_seen']:,} in {metrics['steps']} steps, {metrics['tokens_per_s']:,.0f} tokens/s
{model_card_footer(metrics)}
{card_section(metrics.get("truthfulness"))}
{licence.section(base)}
## Recipe
```yaml
{recipe_yaml.rstrip()}
```
"""
