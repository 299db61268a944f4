"""Interchange: an Ollama Modelfile beside every GGUF we write (and the GGUF it names loads in llama.cpp), the
base model's licence in cards and Modelfiles, and Hugging Face hub ids for models and data sets, tested through
a local hub cache and a stand-in for `datasets.load_dataset` (these machines are offline)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import write_jsonl
from seedbed.chat import GEMMA_TEMPLATE
from seedbed.data import read_examples
from seedbed.errors import DataError
from seedbed.licences import GEMMA, Licence, card_licence, licence_of
from seedbed.quantize.modelfile import GEMMA_GO, ROLE_END_GO, modelfile

ROOT = Path(__file__).parents[1]


def parse_modelfile(text: str) -> dict:
    """FROM, TEMPLATE, LICENSE and the PARAMETER lines of a Modelfile, as Ollama reads them."""
    found: dict = {"PARAMETER": []}
    for match in re.finditer(r'^(FROM|TEMPLATE|LICENSE|PARAMETER) (?:"""(.*?)"""|([^\n]*))$', text, re.M | re.S):
        key, value = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)
        if key == "PARAMETER":
            name, _, raw = value.partition(" ")
            found["PARAMETER"].append((name, json.loads(raw) if raw.startswith('"') else raw))
        else:
            found[key] = value
    return found


def render_range_template(template: str, messages: list[dict]) -> str:
    """A Go template of the form `{{ range .Messages }}BODY{{ end }}TAIL` (no other actions), rendered."""
    match = re.fullmatch(r"\{\{ range \.Messages \}\}(.*)\{\{ end \}\}(.*)", template, re.S)
    body, tail = match.groups()
    return "".join(body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"])
                   for m in messages) + tail


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model, tmp_path_factory):
    from seedbed.quantize.gguf_export import write_gguf_model

    return write_gguf_model(tiny_model, tmp_path_factory.mktemp("modelfile") / "f32", "f32")


def test_every_gguf_comes_with_a_modelfile_that_llama_cpp_loads(tiny_gguf, tiny_model):
    from transformers import AutoTokenizer

    llama_cpp = pytest.importorskip("llama_cpp")
    parsed = parse_modelfile((tiny_gguf.parent / "Modelfile").read_text())
    assert parsed["FROM"] == "./model.gguf" and (tiny_gguf.parent / "model.gguf").is_file()
    llm = llama_cpp.Llama(model_path=str(tiny_gguf.parent / parsed["FROM"]), n_ctx=128, verbose=False)
    stops = [value for name, value in parsed["PARAMETER"] if name == "stop"]
    assert stops == ["<|end|>"]
    for stop in stops:  # Ollama stops on the token: it must be one token of the GGUF's vocabulary
        assert len(llm.tokenize(stop.encode(), add_bos=False, special=True)) == 1
    params = dict(parsed["PARAMETER"])
    assert params["num_ctx"] == str(min(8192, int(llm.metadata["llama.context_length"]))) and float(params["temperature"]) == 0.7
    # The Go template lays a chat out as the tokenizer's Jinja template does (BOS aside: llama.cpp adds it)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Two plus three?"}]
    jinja = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert parsed["TEMPLATE"] == ROLE_END_GO
    assert render_range_template(parsed["TEMPLATE"], chat) == jinja.removeprefix(tokenizer.bos_token)
    # the tiny model has no card: its licence is unknown, and the Modelfile says so instead of inventing one
    assert parsed["LICENSE"].startswith("unknown")


def test_gemma_modelfile_uses_gemma_turns_and_the_gemma_terms():
    parsed = parse_modelfile(modelfile("model.gguf", GEMMA_TEMPLATE, ["<end_of_turn>"], GEMMA, 32768))
    assert parsed["TEMPLATE"] == GEMMA_GO and ("stop", "<end_of_turn>") in parsed["PARAMETER"]
    assert "Gemma Terms of Use" in parsed["LICENSE"] and "ai.google.dev/gemma/terms" in parsed["LICENSE"]
    guess = modelfile("model.gguf", "{{ messages }}", [], Licence("mit", "MIT License"), 2048)
    assert "is a guess" in guess and "<|im_start|>" in parse_modelfile(guess)["TEMPLATE"]


def test_licence_follows_the_base(tmp_path):
    assert licence_of("gemma-3-270m") is GEMMA
    gemma_dir = tmp_path / "g"
    gemma_dir.mkdir()
    (gemma_dir / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    assert licence_of(str(gemma_dir)) is GEMMA and licence_of(str(gemma_dir / "model.gguf")) is GEMMA
    tuned = tmp_path / "tuned"  # a fine-tune of a fine-tune: the card's front matter carries the terms on
    tuned.mkdir()
    (tuned / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tuned / "README.md").write_text(f"---\nbase_model: x\n{GEMMA.front_matter()}\ntags: [seedbed]\n---\n# card\n")
    assert licence_of(str(tuned)) is GEMMA
    other = Licence("other", "Llama 3.2 Community License", "https://llama.com/llama3_2/license")
    (tuned / "README.md").write_text(f"---\n{other.front_matter()}\n---\n")
    assert card_licence(tuned / "README.md") == other
    front = yaml.safe_load(other.front_matter())
    assert front == {"license": "other", "license_name": other.name, "license_link": other.link}
    assert licence_of("nobody/nothing").id == "other" and "huggingface.co/nobody/nothing" in licence_of("nobody/nothing").link


def test_finetuned_card_says_the_gemma_terms(tmp_path):
    from seedbed.licences import GEMMA as terms
    from seedbed.train.lineage import model_card

    metrics = {"hardware": {"cpu": "x", "cpu_cores": 2}, "packages": {}, "val": [], "cost": {"usd": 0, "usd_per_hour": 0,
               "basis": "-"}, "examples": {k: 0 for k in ("records_read", "train", "val", "not_sampled", "truncated",
                                                          "dropped_no_answer")},
               "tokens_seen": 0, "steps": 0, "tokens_per_s": 0, "wall_time_s": 0, "peak_memory_bytes": 0,
               "peak_memory_kind": "rss"}
    card = model_card(base="gemma-3-270m", method="lora", files=[], metrics=metrics, recipe_yaml="x: 1")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "gemma" and "seedbed" in front["tags"]
    assert "## Licence" in card and terms.notice in card


# --- hub ids -----------------------------------------------------------------------------------------------------

DOLLY = [{"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "open_qa"},
         {"instruction": "Say hi.", "context": "", "response": "Hi!", "category": "open_qa"}]


@pytest.fixture
def fake_hub_datasets(monkeypatch):
    """`datasets.load_dataset` as the Hub would answer it: one known data set; anything else is not found."""
    import datasets

    asked = []

    def load_dataset(repo, config=None, split=None):
        asked.append((repo, config, split))
        if repo != "databricks/databricks-dolly-15k" or split != "train":
            raise FileNotFoundError(f"Dataset '{repo}' doesn't exist on the Hub or cannot be accessed.")
        return iter(DOLLY)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return asked


def test_hub_dataset_ids_are_read_like_files(fake_hub_datasets, tmp_path, monkeypatch):
    data = read_examples(["hf:databricks/databricks-dolly-15k:train"])
    assert [e.reference() for e in data.examples] == ["Blue.", "Hi!"] and data.files[0].shapes == {"dolly": 2}
    assert data.files[0].records == 2 and len(data.files[0].sha256) == 64
    monkeypatch.chdir(tmp_path)
    bare = read_examples(["databricks/databricks-dolly-15k"])  # bare id, split train by default
    assert [e.reference() for e in bare.examples] == ["Blue.", "Hi!"]
    assert fake_hub_datasets == [("databricks/databricks-dolly-15k", None, "train")] * 2
    local = tmp_path / "databricks" / "databricks-dolly-15k"  # a local path of that name wins
    local.mkdir(parents=True)
    write_jsonl(local / "mine.jsonl", DOLLY[:1])
    assert len(read_examples(["databricks/databricks-dolly-15k"]).examples) == 1 and len(fake_hub_datasets) == 2


def test_unknown_hub_dataset_is_one_clear_data_error(fake_hub_datasets):
    with pytest.raises(DataError) as error:
        read_examples(["hf:nobody/nothing/main:test"])
    assert "hf:nobody/nothing/main:test: " in str(error.value) and "doesn't exist on the Hub" in str(error.value)
    assert fake_hub_datasets == [("nobody/nothing", "main", "test")]
    with pytest.raises(DataError, match="hf:OWNER/NAME"):
        read_examples(["hf:not an id"])
    with pytest.raises(DataError, match="no such file or directory"):  # a missing relative file is not an id
        read_examples(["nowhere/train.jsonl"])
    assert len(fake_hub_datasets) == 1


def test_hub_model_id_loads_from_the_local_hub_cache(tiny_model, tmp_path):
    """A hub id goes to transformers' hub loader: with the model in the Hugging Face cache it loads offline,
    and its card's licence is found there."""
    snapshot = tmp_path / "hub" / "models--someorg--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    (tmp_path / "hub" / "models--someorg--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--someorg--tiny" / "refs" / "main").write_text("0" * 40)
    code = ("from seedbed.models import load_model; from seedbed.licences import licence_of; "
            "model, tok = load_model('someorg/tiny', device='cpu'); "
            "print(model.config.model_type, licence_of('someorg/tiny').id)")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src"), "SEEDBED_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["llama", "apache-2.0"]
