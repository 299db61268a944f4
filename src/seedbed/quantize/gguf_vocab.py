"""Tokenizer metadata for a GGUF file: a Hugging Face tokenizer spelled the way llama.cpp reads it.

    from seedbed.quantize.gguf_vocab import vocab_of
    vocab = vocab_of(tokenizer, model_type="llama")   # then vocab.write(gguf_writer)

A GGUF has no `tokenizer.json`; llama.cpp rebuilds the tokenizer from `tokenizer.ggml.*` keys. Two kinds:
- byte-level BPE (GPT-2 style, the tiny test model): tokenizer model "gpt2", the vocabulary in the byte alphabet,
  the merges, and a `pre` name that tells llama.cpp which split regex the merges were learned under;
- SentencePiece-style BPE with byte fallback (Gemma, Llama 2): tokenizer model "llama", each token with a score
  (llama.cpp merges the best-scoring pair first) and a type (normal, control, user-defined, byte).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import gguf

from seedbed.errors import ModelLoadError

# The split regexes of the pre-tokenizers we know, keyed by the name llama.cpp's vocab loader accepts
# (`tokenizer.ggml.pre`, see llama-vocab.cpp). A plain `ByteLevel(use_regex=True)` uses GPT-2's.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
KNOWN_SPLITS = {_LLAMA3_SPLIT: "llama-bpe"}

_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
# Scores of the tokens that never take part in merges, as llama.cpp's own converter writes them.
_CONTROL_SCORE = -1000.0
_BYTE_SCORE = 0.0


@dataclass
class Vocab:
    """Everything llama.cpp needs to rebuild a tokenizer; `write` adds it to a `gguf.GGUFWriter`."""

    model: str  # "gpt2" or "llama"
    pre: str
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad -> id
    add_bos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges is not None:
            writer.add_token_merges(self.merges)
        adders = {
            "bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
            "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id,
        }
        for name, token_id in self.special_ids.items():
            adders[name](token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(False)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def vocab_of(tokenizer, model_type: str) -> Vocab:
    """The GGUF vocabulary of a Hugging Face fast tokenizer (`model_type` from the model's config)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE":
        raise ModelLoadError(
            f"GGUF export supports BPE tokenizers only; this one is {spec['model']['type']!r}"
        )
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    if spec["model"].get("byte_fallback"):
        vocab = _sentencepiece_vocab(tokens, added, model_type)
    elif _is_byte_level(spec):
        vocab = _byte_level_vocab(tokens, added, spec)
    else:
        raise ModelLoadError(
            "GGUF export supports byte-level BPE (GPT-2 / Llama 3 style) and SentencePiece-style BPE with byte "
            "fallback (Gemma, Llama 2); this tokenizer is neither"
        )
    vocab.special_ids = {
        name: token_id
        for name, token_id in [
            ("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
            ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id),
        ]
        if token_id is not None
    }
    # Whether plain encoding starts with BOS: llama.cpp then adds it too, so both tokenize a prompt alike.
    probe = tokenizer("a")["input_ids"]
    vocab.add_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    vocab.chat_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return vocab


def _is_byte_level(spec: dict) -> bool:
    return "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) and "ByteLevel" in json.dumps(spec.get("decoder"))


def _byte_level_vocab(tokens: list[str], added: dict, spec: dict) -> Vocab:
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    types = [_added_type(added.get(i)) or gguf.TokenType.NORMAL for i in range(len(tokens))]
    return Vocab(model="gpt2", pre=_pre_name(spec["pre_tokenizer"]), tokens=tokens, token_types=types, merges=merges)


def _pre_name(pre_tokenizer: dict) -> str:
    """The `tokenizer.ggml.pre` value whose split regex is the one this tokenizer uses."""
    if pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True):
        return "gpt-2"
    for step in pre_tokenizer.get("pretokenizers", []):
        regex = step.get("pattern", {}).get("Regex") if step.get("type") == "Split" else None
        if regex in KNOWN_SPLITS:
            return KNOWN_SPLITS[regex]
    raise ModelLoadError(
        f"GGUF export: unknown byte-level pre-tokenizer {json.dumps(pre_tokenizer)[:200]}; llama.cpp would split "
        f"text differently. Known: plain ByteLevel (gpt-2), {sorted(KNOWN_SPLITS.values())}"
    )


def _sentencepiece_vocab(tokens: list[str], added: dict, model_type: str) -> Vocab:
    gemma = model_type.startswith("gemma")
    out_tokens, types, scores = [], [], []
    rank = 0
    for token_id, token in enumerate(tokens):
        kind = _added_type(added.get(token_id))
        if kind is None and gemma and len(token) > 1 and set(token) == {"\u2581"}:
            # Gemma stores runs of spaces as user-defined tokens spelled with real spaces; transformers'
            # GGUF reader respells them "▁▁…" (gemma_tokenizer in gguf_tokenizer_mapping.py). Undo that.
            token, kind = " " * len(token), gguf.TokenType.USER_DEFINED
        if kind is None and _BYTE_TOKEN.match(token):
            kind = gguf.TokenType.BYTE
        if kind is None:
            # A BPE vocabulary lists tokens best merge first; a falling score keeps that order for llama.cpp,
            # which merges the pair whose result scores highest.
            types.append(gguf.TokenType.NORMAL)
            scores.append(-float(rank))
            rank += 1
        else:
            types.append(kind)
            scores.append(_BYTE_SCORE if kind == gguf.TokenType.BYTE else _CONTROL_SCORE)
        out_tokens.append(token)
    return Vocab(
        model="llama", pre="default", tokens=out_tokens, token_types=types, scores=scores,
        # Gemma 3 adds no "▁" in front of the text (the original GGUF says so); Llama 2's SentencePiece does.
        add_space_prefix=not gemma,
    )


def _added_type(token) -> int | None:
    """Control for a special added token, user-defined for a plain one, None for an ordinary vocabulary entry."""
    if token is None:
        return None
    return gguf.TokenType.CONTROL if token.special else gguf.TokenType.USER_DEFINED
