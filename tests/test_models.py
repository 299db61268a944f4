"""Loading models from a local directory, a hub id (offline here), and the embedded GGUF default."""

from __future__ import annotations

import pytest

from seedbed.models import ModelLoadError, list_cached, load_model, resolve


def test_local_directory_loads(tiny_model):
    model, tokenizer = load_model(str(tiny_model))
    assert model.config.model_type == "llama" and tokenizer.chat_template
    assert tokenizer.eos_token_id in model.generation_config.eos_token_id


def test_offline_hub_id_gives_a_clear_error():
    with pytest.raises(ModelLoadError, match="offline"):
        load_model("no-such-org/no-such-model")


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve(str(tmp_path))
    with pytest.raises(ModelLoadError, match="no such GGUF"):
        resolve(str(tmp_path / "missing.gguf"))


@pytest.mark.slow
def test_embedded_gemma_converts_once_and_then_loads_fast():
    import time

    model, tokenizer = load_model("gemma-3-270m")
    assert model.config.model_type == "gemma3_text" and "<start_of_turn>" in tokenizer.chat_template
    assert [m.name for m in list_cached()] == ["gemma-3-270m"]
    started = time.perf_counter()
    load_model("gemma-3-270m")
    assert time.perf_counter() - started < 30  # the GGUF path takes 60-80 s here; the cache a few seconds


def test_a_model_runs_in_bf16_on_the_cpu_only_if_it_was_made_in_half_precision_and_the_cpu_has_bf16(
        tiny_model, tmp_path, monkeypatch):
    import json
    import shutil

    import torch

    from seedbed import models

    half = tmp_path / "half"
    shutil.copytree(tiny_model, half)
    config = json.loads((half / "config.json").read_text())
    (half / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    assert isinstance(models.cpu_has_fast_bf16.__wrapped__(), bool)  # the measurement itself runs
    for fast in (True, False):
        monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert load_model(str(half), device="cpu")[0].dtype == (torch.bfloat16 if fast else torch.float32)
        assert load_model(str(tiny_model), device="cpu")[0].dtype == torch.float32  # made in fp32: stays fp32
    assert load_model(str(half), dtype=torch.float32, device="cpu")[0].dtype == torch.float32  # asked for
