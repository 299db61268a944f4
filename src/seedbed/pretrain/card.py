"""The model card (README.md) of a pretrained model: where its text came from, its shape, its curve, its samples."""

from __future__ import annotations

from seedbed.train.lineage import model_card_footer


def model_card(recipe, metrics: dict, recipe_yaml: str) -> str:
    """Markdown: the lineage of a `seedbed pretrain` model (data files and hashes, tokenizer, shape, tokens,
    validation loss, samples, machine, cost) and the recipe that made it."""
    text, shape = metrics["text"], metrics["shape"]
    rows = "\n".join(f"| `{f['path']}` | `{f['sha256']}` | {f['records']:,} | {f['tokens']:,} |" for f in text["files"])
    val = metrics["val"]
    val_line = (f"{val[0]['loss']:.4f} at step {val[0]['step']} → {val[-1]['loss']:.4f} at step {val[-1]['step']}"
                if val else "none (no validation blocks)")
    train = metrics["train"]
    train_line = f"{train[0]['loss']:.4f} → {train[-1]['loss']:.4f}" if train else "not logged"
    samples = "\n".join(f"- **{s['prompt']}**{s['continuation']}" for s in metrics["samples"]) or "- none asked for"
    tokenizer = f"`{recipe.tokenizer}`'s" if recipe.tokenizer else f"byte-level BPE, {shape['vocab_size']:,} tokens, learnt from the data"
    return f"""---
library_name: transformers
tags: [seedbed, pretrained-from-scratch, llama]
---
# A Llama-style model pretrained from scratch with Seedbed

Trained with `seedbed pretrain` on the text below: a base model that continues text. Its tokenizer carries
Seedbed's chat template, so `seedbed finetune --base THIS_DIRECTORY` instruction-tunes it.

## Lineage
- **Text:**

| file | sha256 | documents | tokens |
|---|---|---|---|
{rows}

- **Tokenizer:** {tokenizer}
- **Blocks:** {text['train_blocks']:,} training and {text['validation_blocks']:,} validation blocks of
  {text['block_tokens']} tokens, packed (`<s>` and `</s>` around each document); {text['left_over_tokens']:,} tokens
  after the last full block left out
- **Shape:** {shape['layers']} layers, width {shape['hidden_size']}, {shape['heads']} heads ({shape['kv_heads']}
  key/value), MLP {shape['intermediate_size']}, context {shape['context']}; {metrics['total_parameters']:,} parameters
  (embeddings tied)
- **Tokens seen:** {metrics['tokens_seen']:,} ({metrics['tokens_per_parameter']} per parameter; Chinchilla's
  compute-optimal ratio is ~20) in {metrics['steps']} steps on {metrics['processes']} process(es)
- **Training loss:** {train_line}; **validation loss:** {val_line}

## Samples
{samples}

{model_card_footer(metrics)}
## Recipe
```yaml
{recipe_yaml.rstrip()}
```
"""
