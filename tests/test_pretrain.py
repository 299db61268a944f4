"""`seedbed pretrain` on a tiny config: the loss falls, samples are written, a resumed run ends where an unbroken
one does, and the model is one every other verb takes (GGUF through llama.cpp, the OpenAI API, finetune --base)."""

from __future__ import annotations

import json

import pytest

from conftest import qa_records, running_server, write_jsonl
from seedbed.errors import DataError, RecipeError
from seedbed.recipe import PretrainRecipe

TINY = dict(vocab_size=400, layers=2, hidden_size=64, heads=2, max_length=32, batch_size=8, lr=3e-3, warmup=2,
            logging_steps=5, eval_steps=10, save_steps=10, samples=2, sample_tokens=12, quiet=True)


def corpus(tmp_path):
    """GSM8K-shaped sums as JSONL (question + answer per document) and a plain-text file of the same text."""
    records = qa_records(120)
    jsonl = write_jsonl(tmp_path / "sums.jsonl", records)
    text = tmp_path / "sums.txt"
    text.write_text("\n\n".join(f"{r['question']}\n{r['answer']}" for r in records) + "\n")
    return jsonl, text


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from seedbed.pretrain.run import pretrain

    tmp = tmp_path_factory.mktemp("pretrain")
    jsonl, _ = corpus(tmp)
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: set up before the per-test isolation in conftest
        mp.setenv("MLFLOW_TRACKING_URI", f"file:{tmp / 'mlruns'}")
        return pretrain(PretrainRecipe(data=[str(jsonl)], text_fields=["question", "answer"], out=str(tmp / "lm"),
                                       max_steps=40, **TINY))


def test_loss_falls_and_samples_are_written(pretrained):
    m = pretrained.metrics
    train, val = m["train"], m["val"]
    assert train[-1]["loss"] < train[0]["loss"] - 1.0, train
    assert val[-1]["loss"] < val[0]["loss"] - 1.0, val
    assert m["steps"] == 40 and m["tokens_seen"] == 40 * 8 * 32
    assert len(m["samples"]) == 2 and all(s["continuation"] for s in m["samples"])
    text = m["text"]
    assert text["documents"] == 120 and text["files"][0]["records"] == 120
    # every token accounted for: blocks x block length + what packing left over = tokens read
    assert (text["train_blocks"] + text["validation_blocks"]) * 32 + text["left_over_tokens"] == text["tokens"]


def test_the_output_is_a_documented_model_directory(pretrained):
    out = pretrained.out
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "recipe.yaml", "metrics.json", "README.md"} <= files
    assert not {"checkpoints", "blocks", "tokenizer"} & files  # scratch removed once the run is complete
    card = (out / "README.md").read_text()
    assert "pretrained from scratch" in card and "sums.jsonl" in card and "## Samples" in card
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2


def test_quantizes_to_gguf_that_llama_cpp_runs(pretrained, tmp_path):
    from seedbed.inference import load
    from seedbed.inference.generate import generate
    from seedbed.inference.stops import Sampling
    from seedbed.quantize import quantize
    from seedbed.recipe import QuantizeRecipe

    result = quantize(QuantizeRecipe(model=str(pretrained.out), method="q8_0", out=str(tmp_path / "q8"), quiet=True))
    backend = load(str(result.out), "llama.cpp")
    text = generate(backend, ["<s>What is 3 plus"], Sampling(max_new_tokens=8, greedy=True))[0]
    assert text.strip()


def test_serves_through_the_openai_api(pretrained):
    import openai

    from seedbed.inference import load
    from seedbed.serve.app import ServerConfig, create_app
    from seedbed.serve.engine import Engine

    config = ServerConfig({"lm": Engine("lm", load(str(pretrained.out)))}, api_keys=["k"])
    with running_server(create_app(config)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        reply = client.completions.create(model="lm", prompt="What is 2 plus", max_tokens=8, temperature=0)
        assert reply.choices[0].text and reply.usage.completion_tokens > 0


def test_finetune_takes_it_as_a_base(pretrained, tmp_path):
    from seedbed.recipe import FinetuneRecipe
    from seedbed.train.finetune import finetune

    data = write_jsonl(tmp_path / "qa.jsonl", qa_records(16))
    result = finetune(FinetuneRecipe(base=str(pretrained.out), data=[str(data)], out=str(tmp_path / "ft"),
                                     method="full", max_steps=3, lr=1e-3, quiet=True, truthfulness_questions=0))
    assert result.metrics["steps"] == 3


def test_plain_text_resumes_to_the_same_model(tmp_path):
    """Stopped at step 10 and resumed, a run ends with the loss curve of one that was never stopped."""
    from seedbed.pretrain.run import pretrain
    from seedbed.train.callbacks import StopAfter

    _, text = corpus(tmp_path)
    whole = pretrain(PretrainRecipe(data=[str(text)], out=str(tmp_path / "whole"), max_steps=20, **TINY)).metrics
    stopped = pretrain(PretrainRecipe(data=[str(text)], out=str(tmp_path / "cut"), max_steps=20, **TINY),
                       callbacks=[StopAfter(10)])
    assert stopped.metrics == {"stopped_at_step": 10}
    resumed = pretrain(PretrainRecipe(out=str(tmp_path / "cut"), resume=True, **TINY)).metrics
    assert resumed["steps"] == 20
    assert [h["loss"] for h in resumed["train"]] == pytest.approx([h["loss"] for h in whole["train"]], abs=1e-3)
    assert resumed["text"] == {**whole["text"], "files": resumed["text"]["files"]}


def test_bad_input_is_named(tmp_path):
    from seedbed.pretrain.run import pretrain

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"title": "no text here"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: none of the text fields \['text'\]"):
        pretrain(PretrainRecipe(data=[str(bad)], out=str(tmp_path / "x"), max_steps=2, **TINY))
    with pytest.raises(DataError, match="reads .txt, .md and .jsonl"):
        (tmp_path / "table.csv").write_text("text\nhello\n")
        pretrain(PretrainRecipe(data=[str(tmp_path / "table.csv")], out=str(tmp_path / "y"), max_steps=2, **TINY))
    with pytest.raises(RecipeError, match="heads"):
        pretrain(PretrainRecipe(data=[str(bad)], out=str(tmp_path / "z"), max_steps=2, **{**TINY, "heads": 3}))


def test_validation_batches_divide_the_blocks_under_several_processes():
    """Padding a validation batch with blocks from the start would count them in its mean (test_distributed)."""
    from seedbed.pretrain.run import per_device_eval_batch

    assert per_device_eval_batch(4, 5, 1) == 4  # one process: the last batch is short, and weighted as such
    assert per_device_eval_batch(4, 5, 2) == 1 and per_device_eval_batch(8, 84, 2) == 7
    assert per_device_eval_batch(4, 0, 2) == 4
