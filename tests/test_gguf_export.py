"""GGUF export: our files read back with gguf-py, load in transformers with the source's logits, and run in
llama.cpp with the same greedy tokens as transformers.

    pytest -q tests/test_gguf_export.py            # tiny Llama, seconds
    pytest -q -m slow tests/test_gguf_export.py    # + Gemma 3 270M in llama.cpp (minutes)
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from seedbed.quantize.gguf_export import UnsupportedModelError, export_gguf, quantize_gguf, write_gguf_model
from seedbed.tiny import CORPUS, build_tiny_llama

PROMPTS = [
    "What is two plus three?",
    "Name a colour of the sky.",
    "How many legs does a cat have?",
    "Translate 'bonjour' to English.",
    "Write a short greeting.",
]
NEW_TOKENS = 8
# f16 rounding of a trained 64-wide model moves logits by ~1e-3 (measured); 0.05 leaves room, and is ten times
# below MARGIN, the top-1 / top-2 logit gap from which on a greedy choice cannot be flipped by that rounding.
F16_LOGIT_TOL = 5e-2
MARGIN = 0.5


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """The tiny Llama trained 25 steps on the tiny corpus, so greedy choices have clear margins (a fresh model's
    near-uniform logits would let f16 rounding flip ties, and the parity tests could not fail for a real reason)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = build_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = tokenizer(sorted(set(CORPUS)), return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    model.train()
    for _ in range(25):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 1.0, f"tiny model did not learn the corpus (loss {loss.item():.2f})"
    model.save_pretrained(out)
    return out


def _field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def _greedy_hf(model, ids: list[int], n: int = NEW_TOKENS) -> list[int]:
    return _confident_greedy(model, ids, n)[0]


def _confident_greedy(model, ids: list[int], n: int = NEW_TOKENS) -> tuple[list[int], list[int]]:
    """Greedy tokens, and the prefix of them chosen by a clear margin (where the rounding of another runtime
    cannot flip the choice): the part two runtimes must agree on."""
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=n, do_sample=False,
            output_scores=True, return_dict_in_generate=True,
        )
    tokens = out.sequences[0, len(ids):].tolist()
    confident = []
    for token, scores in zip(tokens, out.scores):
        top2 = scores[0].float().topk(2).values  # (2,)
        if (top2[0] - top2[1]).item() < MARGIN:
            break
        confident.append(token)
    return tokens, confident


def _assert_agree(reference: tuple[list[int], list[int]], other: list[int], prompt: str) -> int:
    """`other` equals the reference's greedy tokens on their confident prefix; returns how many were compared."""
    _, confident = reference
    assert other[: len(confident)] == confident, prompt
    return len(confident)


# 1. the file itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, matrix_type", [("f16", "F16"), ("q8_0", "Q8_0")])
def test_tiny_gguf_reads_back(tiny_model, tmp_path, dtype, matrix_type):
    from transformers import AutoConfig, AutoTokenizer

    path = export_gguf(tiny_model, tmp_path / "m.gguf", dtype=dtype)
    reader = gguf.GGUFReader(path)
    config = AutoConfig.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == 2
    assert _field(reader, "llama.embedding_length") == 64
    assert _field(reader, "llama.attention.head_count_kv") == 2
    assert _field(reader, "tokenizer.chat_template") == tokenizer.chat_template
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.tokens") == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert len(_field(reader, "tokenizer.ggml.merges")) > 0

    tensors = {t.name: t for t in reader.tensors}
    expected = {"token_embd.weight", "output.weight", "output_norm.weight"} | {
        f"blk.{i}.{part}.weight"
        for i in range(2)
        for part in ["attn_q", "attn_k", "attn_v", "attn_output", "attn_norm", "ffn_gate", "ffn_up", "ffn_down", "ffn_norm"]
    }
    assert set(tensors) == expected
    # GGUF shapes list the fastest-moving dimension first: (in, out) for a (out, in) torch matrix.
    assert list(tensors["token_embd.weight"].shape) == [64, config.vocab_size]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [64, 32]  # 2 kv heads x 16
    assert list(tensors["blk.0.ffn_down.weight"].shape) == [128, 64]
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"  # norms stay f32
    assert {tensors[n].tensor_type.name for n in expected if "norm" not in n} == {matrix_type}


def test_tied_embeddings_write_no_output(tmp_path):
    from transformers import AutoModelForCausalLM

    src = build_tiny_llama(tmp_path / "tied")
    model = AutoModelForCausalLM.from_pretrained(src, tie_word_embeddings=True)
    model.save_pretrained(src)
    names = {t.name for t in gguf.GGUFReader(export_gguf(src, tmp_path / "tied.gguf")).tensors}
    assert "token_embd.weight" in names and "output.weight" not in names


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel.*LlamaForCausalLM.*Gemma3ForCausalLM"):
        export_gguf(tmp_path / "gpt2", tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_bad_dtype_and_method(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="q4_k_m"):
        export_gguf(tiny_model, tmp_path / "x.gguf", dtype="q4_k_m")
    with pytest.raises(ValueError, match="q3_k_l"):
        write_gguf_model(tiny_model, tmp_path / "out", method="q3_k_l")


def test_every_gguf_method_of_quantize_is_written():
    """`seedbed quantize`'s method table (recipe.py) and the writer's file types agree."""
    from seedbed.quantize.gguf_export import GGUF_METHODS
    from seedbed.recipe import QUANTIZE_METHODS

    assert {m for m, kind in QUANTIZE_METHODS.items() if kind == "gguf"} <= set(GGUF_METHODS)


def test_write_gguf_model_layout(tiny_model, tmp_path):
    out = write_gguf_model(tiny_model, tmp_path / "out", "q8_0")
    assert out == tmp_path / "out" / "model.gguf"
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.gguf", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # the atomic write left nothing behind


# 2. round trip through transformers' GGUF loader (no llama.cpp needed) --------------------------------


@pytest.mark.parametrize("dtype, tol", [("f32", 1e-4), ("f16", F16_LOGIT_TOL)])
def test_transformers_round_trip(trained_tiny, tmp_path, dtype, tol):
    """transformers undoes our q/k permutation on load, so equal logits prove names, layout and the permute."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export_gguf(trained_tiny, tmp_path / "m.gguf", dtype=dtype)
    source = AutoModelForCausalLM.from_pretrained(trained_tiny).eval()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny)
    gguf_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")

    for prompt in PROMPTS + ["  odd   spacing\nand <|end|> specials 123"]:
        assert gguf_tokenizer(prompt).input_ids == tokenizer(prompt).input_ids, prompt
    compared = 0
    for prompt in PROMPTS:
        ids = tokenizer(prompt).input_ids
        with torch.no_grad():
            a, b = source(torch.tensor([ids])).logits, ours(torch.tensor([ids])).logits  # (1, seq, vocab)
        assert (a - b).abs().max().item() < tol
        compared += _assert_agree(_confident_greedy(source, ids), _greedy_hf(ours, ids), prompt)
    assert compared >= len(PROMPTS) * NEW_TOKENS // 2  # most steps are clear: the comparison has teeth


# 3. llama.cpp ----------------------------------------------------------------------------------------


def _llama(path, **kw):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False, seed=0, **kw)


def _greedy_llama(llm, ids: list[int], n: int = NEW_TOKENS) -> list[int]:
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == n:
            break
    return out


def test_llama_cpp_matches_transformers(trained_tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = export_gguf(trained_tiny, tmp_path / "m-f16.gguf", dtype="f16")
    llm = _llama(path, logits_all=True)
    source = AutoModelForCausalLM.from_pretrained(trained_tiny).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny)
    compared = 0
    for prompt in PROMPTS:
        ids = tokenizer(prompt).input_ids
        # llama.cpp's tokenizer, rebuilt from our metadata, agrees with the HF one ...
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids, prompt
        # ... and so does its forward pass.
        compared += _assert_agree(_confident_greedy(source, ids), _greedy_llama(llm, ids), prompt)
    assert compared >= len(PROMPTS) * NEW_TOKENS // 2
    assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template


def test_llama_cpp_quantized_files_run(trained_tiny, tmp_path):
    pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained_tiny)
    ids = tokenizer(PROMPTS[0]).input_ids
    f16 = export_gguf(trained_tiny, tmp_path / "f16.gguf", dtype="f16")
    q8 = export_gguf(trained_tiny, tmp_path / "q8_0.gguf", dtype="q8_0")
    q4 = quantize_gguf(f16, tmp_path / "q4_k_m.gguf", "q4_k_m")
    reference = _greedy_llama(_llama(f16), ids)
    for path in (q8, q4):
        assert len(_greedy_llama(_llama(path), ids)) == NEW_TOKENS
    # Q8_0 of a trained model keeps the greedy path on this prompt.
    assert _greedy_llama(_llama(q8), ids) == reference

    # K-quants pack rows of 256; every tiny row is 64 or 128 wide, so llama.cpp falls back per tensor:
    # Q4_K -> Q5_0 and Q6_K -> Q8_0 (as its log says). Gemma 3 270M's 640-wide rows do the same.
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(q4).tensors}
    assert {types[n] for n in types if "norm" in n} == {"F32"}
    assert {types[n] for n in types if "norm" not in n} == {"Q5_0", "Q8_0"}
    assert gguf.GGUFReader(q4).fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M


def test_quantize_gguf_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_llama_cpp(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    with pytest.raises(Exception, match=r"pip install 'seedbed\[llamacpp\]'"):
        quantize_gguf(tmp_path / "in.gguf", tmp_path / "out.gguf")


# 4. Gemma 3 270M (slow: converts and exports the embedded model, ~1-2 minutes) -------------------------


@pytest.fixture(scope="module")
def gemma_dir():
    from seedbed.models import resolve

    return resolve("gemma-3-270m")


@pytest.mark.slow
def test_gemma3_metadata_matches_original_gguf(gemma_dir, tmp_path):
    """Our f16 export has the original GGUF's keys, tokenizer and tensor names/shapes."""
    from seedbed.models import embedded_gguf

    ours = gguf.GGUFReader(export_gguf(gemma_dir, tmp_path / "g.gguf", dtype="f16"))
    ref = gguf.GGUFReader(embedded_gguf("gemma-3-270m"))
    for key in [k for k in ref.fields if k.startswith("gemma3.")] + [
        "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_space_prefix",
    ]:
        a, b = _field(ours, key), _field(ref, key)
        assert (np.allclose(a, b) if isinstance(a, float) else a == b), key
    # Scores: the original's exact values are not recoverable from a BPE tokenizer.json, but their order is,
    # and llama.cpp only compares scores.
    a, b = np.array(_field(ours, "tokenizer.ggml.scores")), np.array(_field(ref, "tokenizer.ggml.scores"))
    assert (np.argsort(-a, kind="stable") == np.argsort(-b, kind="stable")).all()
    assert {t.name: list(t.shape) for t in ours.tensors} == {t.name: list(t.shape) for t in ref.tensors}


@pytest.mark.slow
def test_gemma3_llama_cpp_matches_transformers(gemma_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = export_gguf(gemma_dir, tmp_path / "g.gguf", dtype="f16")
    llm = _llama(path)
    model = AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time,", "1, 2, 3, 4,"]
    compared = 0
    for prompt in prompts:
        ids = tokenizer(prompt).input_ids
        assert llm.tokenize(prompt.encode(), add_bos=True, special=True) == ids, prompt
        reference, llama = _confident_greedy(model, ids), _greedy_llama(llm, ids)
        print(f"{prompt!r}: transformers {reference[0]}, llama.cpp {llama}")  # shown with pytest -s
        compared += _assert_agree(reference, llama, prompt)
    assert compared >= len(prompts) * NEW_TOKENS // 2
