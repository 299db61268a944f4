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
