"""A byte-level BPE tokenizer trained on text (Hugging Face `tokenizers`), with Seedbed's chat markers and template,
so a model built on it can be fine-tuned, served and chatted with like any other. `tiny.py` (tests) and
`seedbed pretrain` (your own text) both make theirs here.

    tokenizer = train_tokenizer(["some text", "more text"], vocab_size=512)
"""

from __future__ import annotations

from collections.abc import Iterable

# The chat template of models Seedbed builds: one marker per role, `<|end|>` closing each turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
MARKERS = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, extra_specials: tuple[str, ...] = (),
                    chat_template: str | None = CHAT_TEMPLATE):
    """A transformers fast tokenizer: byte-level BPE (GPT-2's pre-tokenizer: any text round-trips, no unknown
    token) learnt from `texts` (any iterable: a generator streams a corpus larger than memory), with `<pad>`,
    `<s>`, `</s>`, `extra_specials` and the chat markers as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", *extra_specials, *MARKERS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=specials[3:],
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer
