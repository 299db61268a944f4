"""Tiny models built on the fly: a 2-layer Llama with a small byte-level BPE tokenizer and a chat template,
saved in standard Hugging Face format, so every path runs in seconds with no download."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no hub look-ups in tests
from pathlib import Path

import pytest

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

CORPUS = [
    "What is two plus three? Two plus three is five. #### 5",
    "Name a colour of the sky. The sky is blue.",
    "Write a short greeting. Hello, nice to meet you!",
    "How many legs does a cat have? A cat has four legs. #### 4",
    "Translate 'bonjour' to English. Hello.",
] * 20


def build_tiny_llama(out: Path, chat_template: str | None = CHAT_TEMPLATE, vocab_size: int = 400) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=specials[3:],
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A freshly initialised 2-layer Llama directory with a chat template."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory) -> Path:
    """The same, with no chat template, as a base model has."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama-base", chat_template=None)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep caches and MLflow runs of a test inside its own temporary directory."""
    monkeypatch.setenv("SEEDBED_HOME", str(tmp_path / "seedbed_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def qa_records(n: int = 40) -> list[dict]:
    """GSM8K-shaped records about small sums: learnable in a few steps by a tiny model."""
    return [
        {"question": f"What is {a} plus {b}?", "answer": f"{a} plus {b} is <<{a}+{b}={a + b}>>{a + b}.\n#### {a + b}"}
        for a, b in [(i % 7, (3 * i) % 5) for i in range(n)]
    ]
