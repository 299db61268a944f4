"""A tiny, freshly initialised 2-layer Llama with a small byte-level BPE tokenizer and a chat template.

Tests and benchmarks build it on the fly, so every path (load, train, serve) runs in seconds with no download:

    python -c "from seedbed.tiny import build_tiny_llama; build_tiny_llama('runs/tiny')"
"""

from __future__ import annotations

from pathlib import Path

from seedbed.bpe import CHAT_TEMPLATE, train_tokenizer

CORPUS = [
    "What is two plus three? Two plus three is five. #### 5",
    "Name a colour of the sky. The sky is blue.",
    "Write a short greeting. Hello, nice to meet you!",
    "How many legs does a cat have? A cat has four legs. #### 4",
    "Translate 'bonjour' to English. Hello.",
] * 20


def build_tiny_llama(out: str | Path, chat_template: str | None = CHAT_TEMPLATE, vocab_size: int = 400,
                     unused_tokens: int = 0, tie_embeddings: bool = False) -> Path:
    """Build and save the tiny Llama in `out`.

    `unused_tokens` adds `<unused0>`... as special tokens placed *before* the turn markers, as in Gemma's
    vocabulary (`<unused0>` is 6, `<end_of_turn>` 106): a token no text produces, whose row never trains, and
    which wins an exact logit tie against `<|end|>` (argmax takes the first). `tie_embeddings` shares the input
    embedding with the output head, as Gemma does.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    unused = tuple(f"<unused{i}>" for i in range(unused_tokens))
    tokenizer = train_tokenizer(CORPUS, vocab_size, extra_specials=unused, chat_template=chat_template)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=tie_embeddings,
    )
    model = LlamaForCausalLM(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
