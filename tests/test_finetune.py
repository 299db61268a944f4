"""Fine-tuning on a tiny Llama: it learns, labels only answers, packs without leaking, resumes the same run."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import qa_records, write_jsonl
from safetensors.torch import load_file

from seedbed.chat import Example, tokenize_example
from seedbed.data.readers import DataError
from seedbed.models import load_model, load_tokenizer
from seedbed.recipe import FinetuneRecipe, RecipeError
from seedbed.train.callbacks import StopAfter
from seedbed.train.finetune import finetune

FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "recipe.yaml", "metrics.json", "README.md"}


def quick_recipe(tiny_model, data, out, **overrides) -> FinetuneRecipe:
    settings = dict(base=str(tiny_model), data=[str(data)], out=str(out), max_steps=12, batch_size=4, lr=5e-3,
                    warmup=0, eval_steps=4, save_steps=4, logging_steps=1, val_fraction=0.2, quiet=True)
    return FinetuneRecipe(**{**settings, **overrides})


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", qa_records(40))


def _weights(path):
    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_learns_and_writes_a_complete_model(tiny_model, data, tmp_path, method):
    out = tmp_path / method
    result = finetune(quick_recipe(tiny_model, data, out, method=method, lr=5e-3 if method == "lora" else 2e-3))
    m = result.metrics

    val = [v["loss"] for v in m["val"]]
    assert val[0] == m["val"][0]["loss"] and m["val"][0]["step"] == 0  # evaluated before the first step
    assert val[-1] < val[0] - 0.3, val  # validation loss falls
    assert m["train"][-1]["loss"] < m["train"][0]["loss"]
    assert m["tokens_seen"] > 0 and m["tokens_per_s"] > 0 and m["peak_memory_bytes"] > 0
    assert m["examples"]["train"] + m["examples"]["val"] == 40 and m["examples"]["records_read"] == 40

    names = {p.name for p in out.iterdir()}
    assert FILES <= names and "checkpoints" not in names
    assert ("adapter" in names) == (method == "lora")

    before, after = _weights(tiny_model), _weights(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if method == "lora":  # adapters merged into every linear layer; embeddings and norms untouched
        assert {k for k in before if k.endswith("proj.weight")} <= changed
        assert "model.embed_tokens.weight" not in changed
    else:
        assert changed == set(before)

    import mlflow  # the run is logged to MLflow (a local file store, here under tmp_path)

    runs = mlflow.search_runs(experiment_names=["seedbed"], output_format="list")
    run = next(r for r in runs if r.info.run_id == (out / ".mlflow_run_id").read_text())
    assert run.data.params["method"] == method and "loss" in run.data.metrics and "eval_loss" in run.data.metrics

    card = (out / "README.md").read_text()
    sha = m["data_files"][0]["sha256"]
    assert sha in card and str(tiny_model) in card and "Estimated cost" in card and "transformers" in card
    # The merged model reloads and generates.
    model, tokenizer = load_model(str(out))
    ids = tokenizer("What is", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] > ids["input_ids"].shape[1]


def test_only_assistant_tokens_carry_labels(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    example = Example("x", "t:1", [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is two plus three?"},
        {"role": "assistant", "content": "Five."}, {"role": "user", "content": "And four plus four?"},
        {"role": "assistant", "content": "Eight."},
    ])
    features = tokenize_example(tokenizer, example)
    ids, mask = features["input_ids"], features["assistant_masks"]
    labelled = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert labelled == "Five.<|end|>\nEight.<|end|>\n"  # both answers and their end-of-turn markers, nothing else
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(example.messages, tokenize=False)


def test_packed_rows_do_not_attend_across_examples(tiny_model):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tokenizer = load_model(str(tiny_model))
    first = tokenizer("Two plus three is five.", add_special_tokens=False)["input_ids"]
    second = tokenizer("The sky is blue.", add_special_tokens=False)["input_ids"]
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    packed = collator([{"input_ids": first + second, "seq_lengths": [len(first), len(second)]}])
    assert packed["position_ids"][0].tolist() == list(range(len(first))) + list(range(len(second)))
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second])).logits[0]
        # As in training (TRL's compute_loss): no KV cache, no attention mask, position ids that restart per example.
        in_pack = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False)
        in_pack = in_pack.logits[0, len(first):]
        leaky = model(input_ids=packed["input_ids"]).logits[0, len(first):]  # plain causal attention: sees `first`
    torch.testing.assert_close(in_pack, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(leaky, alone, atol=1e-3)  # the check above can fail


def test_packing_trains(tiny_model, data, tmp_path):
    m = finetune(quick_recipe(tiny_model, data, tmp_path / "packed", packing=True, max_length=128, batch_size=1)).metrics
    assert m["val"][-1]["loss"] < m["val"][0]["loss"]


def test_resume_continues_the_same_run(tiny_model, data, tmp_path):
    whole = finetune(quick_recipe(tiny_model, data, tmp_path / "whole", max_steps=8)).metrics

    recipe = quick_recipe(tiny_model, data, tmp_path / "cut", max_steps=8)
    stopped = finetune(recipe, callbacks=[StopAfter(4)]).metrics
    assert stopped == {"stopped_at_step": 4}
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-4").is_dir()
    with pytest.raises(RecipeError, match="--resume"):
        finetune(recipe)  # never silently overwrite a run
    run_id = (tmp_path / "cut" / ".mlflow_run_id").read_text()
    resumed = finetune(FinetuneRecipe(out=str(tmp_path / "cut"), resume=True, quiet=True)).metrics
    assert (tmp_path / "cut" / ".mlflow_run_id").read_text() == run_id  # the same MLflow run, continued

    assert resumed["steps"] == 8
    assert [h["step"] for h in resumed["train"]] == [h["step"] for h in whole["train"]]
    for a, b in zip(resumed["train"], whole["train"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
    assert resumed["tokens_seen"] == whole["tokens_seen"]


def test_bad_data_stops_before_training(tiny_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    records = qa_records(3)
    records[1] = {"question": "What is one plus one?"}  # no answer
    write_jsonl(bad, records)
    with pytest.raises(DataError) as error:
        finetune(quick_recipe(tiny_model, bad, tmp_path / "out"))
    assert f"{bad}:2" in str(error.value) and "answer" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_truncated_examples_are_counted(tiny_model, tmp_path):
    records = qa_records(10) + [{"question": "word " * 300, "answer": "Long. #### 1"}]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    m = finetune(quick_recipe(tiny_model, data, tmp_path / "o", max_length=64, max_steps=2, val_fraction=0)).metrics
    assert m["examples"]["dropped_no_answer"] == 1 and m["examples"]["train"] == 10 and m["examples"]["not_sampled"] == 0
    assert m["examples"]["dropped_ids"] == ["d.jsonl:11"]


def test_base_without_template_gets_and_keeps_the_default(tiny_model_no_template, data, tmp_path):
    out = tmp_path / "o"
    finetune(quick_recipe(tiny_model_no_template, data, out, max_steps=2))
    saved = load_tokenizer(str(out)).chat_template
    assert saved and "<|im_start|>" in saved
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert "chat_template" in config or (out / "chat_template.jinja").is_file()


def test_answer_only_loss_equals_the_full_logits_loss(tiny_model):
    from seedbed.train.trainer import answer_only_loss

    model, _ = load_model(str(tiny_model))
    ids = torch.randint(5, 300, (2, 24))
    labels = ids.clone()
    labels[0, :10] = -100
    labels[1, 5:20] = -100
    reference = model(input_ids=ids, labels=labels).loss  # transformers' loss over all logits
    ours = answer_only_loss(model, {"input_ids": ids, "labels": labels})
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_every_record_is_accounted_for_with_max_records(tiny_model, data, tmp_path):
    m = finetune(quick_recipe(tiny_model, data, tmp_path / "o", max_records=10, max_steps=2)).metrics
    ex = m["examples"]
    assert ex["train"] == 10 and ex["train"] + ex["val"] + ex["not_sampled"] == ex["records_read"] == 40
