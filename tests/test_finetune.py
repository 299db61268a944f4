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


# --- Template tokens (issue 11): rows the template needs that the base never trained --------------------------------


def plant_untrained_end_of_turn(model, tokenizer) -> None:
    """Make `<|end|>`'s rows (input and output) copies of `<unused0>`'s, as Gemma 3 270M base's `<end_of_turn>` is
    of `<unused1354>`. `<unused0>` has the lower id, so it wins every exact tie under argmax."""
    end, unused = tokenizer.convert_tokens_to_ids(["<|end|>", "<unused0>"])
    assert unused < end
    with torch.no_grad():
        matrices = (model.get_input_embeddings().weight, model.get_output_embeddings().weight)
        for weight in {id(w): w for w in matrices}.values():  # once when tied
            weight[end] = weight[unused]


@pytest.fixture(scope="module")
def base_without_end_of_turn(tmp_path_factory):
    """A tiny Llama with tied embeddings (as Gemma) pre-trained on the sums as plain documents (BOS, text, EOS), as
    a base model is: it knows the content and EOS, has never seen `<|end|>`, and `<|end|>`'s row equals `<unused0>`'s
    (planted before pre-training, where the two get identical gradients, and again after, to be exact)."""
    from seedbed.tiny import build_tiny_llama
    from seedbed.train.trainer import answer_only_loss

    out = build_tiny_llama(tmp_path_factory.mktemp("untrained-eot") / "base", unused_tokens=4, tie_embeddings=True)
    model, tokenizer = load_model(str(out))
    plant_untrained_end_of_turn(model, tokenizer)
    texts = [f"{r['question']} {r['answer']}" for r in qa_records(40)]
    rows = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            for t in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        batch = [rows[(step * 8 + i) % len(rows)] for i in range(8)]
        width = max(len(r) for r in batch)
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in batch])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
        labels = ids.masked_fill(mask == 0, -100)
        loss = answer_only_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    plant_untrained_end_of_turn(model, tokenizer)
    model.save_pretrained(out)
    return out


def end_of_turn_answers(model_dir, prompts: list[list[dict]]):
    """Greedy answers to chat `prompts` from `model_dir`, stopping only at the template's `<|end|>`: the decode
    requests (text, finish reason). EOS is taken out of the stops because the base learnt it in pre-training and a
    tuned model may fall back on it after any text; the question is whether the model can end the *turn*."""
    from seedbed.chat import render_prompt
    from seedbed.inference.generate import request_for
    from seedbed.inference.hf import TorchBackend
    from seedbed.inference.stops import Sampling

    backend = TorchBackend.load(str(model_dir))
    backend.eos_ids = {backend.tokenizer.convert_tokens_to_ids("<|end|>")}
    requests = [request_for(backend, render_prompt(backend.tokenizer, p), Sampling(greedy=True, max_new_tokens=32))
                for p in prompts]
    backend.decode(requests)
    return requests


def answered_and_stopped(request) -> bool:
    """The answer ended its turn right after "#### N"."""
    return request.finish_reason == "stop" and request.text.split("####")[-1].strip().isdigit()


def test_an_untrained_end_of_turn_is_learnt_only_with_template_tokens(base_without_end_of_turn, tmp_path):
    """The acceptance test of issue 11: plain LoRA cannot learn to stop; Seedbed's fix (the default) does."""
    data = write_jsonl(tmp_path / "train.jsonl", qa_records(40))
    settings = dict(max_steps=20, val_fraction=0, logging_steps=20, save_steps=100, seed=3)
    plain = tmp_path / "plain"
    finetune(quick_recipe(base_without_end_of_turn, data, plain, template_tokens="off", **settings))
    fixed = tmp_path / "fixed"
    m = finetune(quick_recipe(base_without_end_of_turn, data, fixed, **settings)).metrics

    prompts = [[{"role": "user", "content": f"What is {a} plus {b}?"}] for a, b in [(1, 2), (3, 4), (5, 1), (6, 0)]]
    # Plain LoRA: <|end|>'s logit equals <unused0>'s at every step and argmax takes the first of a tie, so <|end|>
    # is never chosen and no answer ends.
    plain_answers = end_of_turn_answers(plain, prompts)
    assert [r.finish_reason for r in plain_answers] == ["length"] * 4, [r.text for r in plain_answers]
    # With the fix, answers end right after "#### N" (seeds 1-3 measured: 3, 4 and 4 of 4; one miss allowed).
    fixed_answers = end_of_turn_answers(fixed, prompts)
    assert sum(map(answered_and_stopped, fixed_answers)) >= 3, [(r.text, r.finish_reason) for r in fixed_answers]

    report = m["template_tokens"]
    assert report["under_trained"] == ["<|end|>"] and "<|end|>" in report["trained"]
    end = next(v for v in report["checked"] if v["token"] == "<|end|>")
    assert end["role"] == "produced" and "cosine 1.000 with <unused0>" in end["reasons"][0]
    assert "`<|end|>`" in (fixed / "README.md").read_text() and "<unused0>" in (fixed / "README.md").read_text()
    assert json.loads((plain / "metrics.json").read_text())["template_tokens"]["mode"] == "off"
    # Every engine stops at the template's end of turn and at EOS (llama.cpp reads the same chat.end_of_turn_token_ids).
    stops = json.loads((fixed / "generation_config.json").read_text())["eos_token_id"]
    # The merged model carries the trained row; tied, it is the output head's row too (one tensor saved).
    model, tokenizer = load_model(str(fixed))
    end_id, unused_id = tokenizer.convert_tokens_to_ids(["<|end|>", "<unused0>"])
    assert sorted(stops) == sorted([tokenizer.eos_token_id, end_id])
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert not torch.equal(model.lm_head.weight[end_id], model.lm_head.weight[unused_id])
    plain_model, _ = load_model(str(plain))
    assert torch.equal(plain_model.lm_head.weight[end_id], plain_model.lm_head.weight[unused_id])  # never apart


def test_untied_rows_train_in_both_matrices_and_always_trains_every_template_token(tmp_path):
    from seedbed.tiny import build_tiny_llama

    base = build_tiny_llama(tmp_path / "untied", unused_tokens=4)
    model, tokenizer = load_model(str(base))
    plant_untrained_end_of_turn(model, tokenizer)
    model.save_pretrained(base)
    data = write_jsonl(tmp_path / "train.jsonl", qa_records(12))
    out = tmp_path / "out"
    m = finetune(quick_recipe(base, data, out, template_tokens="always", max_steps=2, val_fraction=0)).metrics

    report = m["template_tokens"]
    assert report["under_trained"] == ["<|end|>"] and report["initialised_from_mean"] == ["<|end|>"]
    assert set(report["trained"]) == {"<|user|>", "<|assistant|>", "<|end|>"}  # <|system|>: not in the data
    before, after = _weights(base), _weights(out)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        changed = (before[name] != after[name]).any(dim=1).nonzero().flatten().tolist()
        assert sorted(changed) == sorted(report["trained_ids"]), name
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in adapter)  # saved before merging, so it holds the adapter
    import torch

    from seedbed.train.trainable_rows import STATE_FILE

    rows = torch.load(out / "adapter" / STATE_FILE, weights_only=True)  # beside the adapter: the rows it trained
    assert rows["ids"].tolist() == report["trained_ids"] and len(rows["delta"]) == 2  # untied: input and output
    assert all(float(d.abs().sum()) > 0 for d in rows["delta"])


def test_template_tokens_come_from_the_template(tiny_model, tiny_model_no_template):
    from seedbed.train.template_tokens import template_tokens

    found = {t.text: t.role for t in template_tokens(load_tokenizer(str(tiny_model)))}
    assert found == {"<|system|>": "read", "<|user|>": "read", "<|assistant|>": "read", "<|end|>": "produced"}
    # The ChatML default on a vocabulary without <|im_end|>: the EOS it appends after each answer is what ends a turn.
    found = {t.text: t.role for t in template_tokens(load_tokenizer(str(tiny_model_no_template)))}
    assert found == {"</s>": "produced"}


def test_the_detector_finds_planted_rows_and_no_ordinary_one():
    from seedbed.train.template_tokens import judge_rows

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(1000, 32, generator=g)  # rows 0-19: template tokens; 20-899 ordinary; 900-999 unused
    # Unused rows point one way, as pre-training leaves them (Gemma 3 270M: median pairwise cosine 0.82).
    drift = torch.randn(32, generator=g)
    weight[900:] = drift + 0.4 * torch.randn(100, 32, generator=g)
    weight[1] = weight[950]  # a copy of an unused row
    weight[2] = drift + 0.4 * torch.randn(32, generator=g)  # no copy, but where the unused rows are
    weight[3] = 0.1 * weight[3]  # shrunk, as weight decay leaves a row no gradient holds up
    ordinary, reference = torch.arange(20, 900), list(range(900, 1000))

    judged = judge_rows(weight, list(range(20)), reference, ordinary, name=lambda i: f"<unused{i - 900}>")
    flagged = {i: reasons for i, (_, reasons) in judged.items() if reasons}
    assert set(flagged) == {1, 2, 3}, flagged
    assert flagged[1][0].startswith("row: cosine 1.000 with <unused50>")
    assert "similarity" in " ".join(flagged[2]) and "norm 0." in " ".join(flagged[3])
    everyone = judge_rows(weight, ordinary.tolist(), reference, ordinary)
    assert not [i for i, (_, reasons) in everyone.items() if reasons]  # no false alarm among 880 ordinary rows


def test_a_non_finite_loss_stops_the_run_naming_the_step(tiny_model, data, tmp_path):
    from seedbed.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="diverged at step 2: the loss is nan"):
        finetune(quick_recipe(tiny_model, data, tmp_path / "nan", method="full", lr=1e36, max_steps=4))
    assert not (tmp_path / "nan" / "metrics.json").exists() and not (tmp_path / "nan" / "model.safetensors").exists()


def test_a_loss_spike_is_flagged_and_a_finished_run_is_not_resumed(tiny_model, data, tmp_path):
    out = tmp_path / "spike"
    m = finetune(quick_recipe(tiny_model, data, out, method="full", lr=1000, max_steps=4, eval_steps=2)).metrics
    # lr 1000 blows the loss up at step 2, then leaves uniform predictions whose loss is about the starting one.
    assert m["diverged"]["step"] == 2 and m["diverged"]["loss"] > 100 * m["diverged"]["first_loss"]
    strict = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert strict["diverged"] == m["diverged"]
    healthy = finetune(quick_recipe(tiny_model, data, tmp_path / "ok", max_steps=4, eval_steps=2)).metrics
    assert healthy["diverged"] is None

    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(RecipeError, match="this run finished"):
        finetune(FinetuneRecipe(out=str(out), resume=True, quiet=True))
    assert (out / "model.safetensors").read_bytes() == before


def test_a_kill_during_a_checkpoint_save_resumes_from_the_last_complete_one(tiny_model, data, tmp_path):
    """kill -9 while checkpoint-4 is being saved (its optimizer state half written, no seal): --resume passes it
    over, continues from checkpoint-2, and gives the uninterrupted run's loss curve."""
    import os
    import signal
    import subprocess
    import sys

    settings = dict(max_steps=6, save_steps=2, val_fraction=0)  # no validation: the train curve is the check
    whole = finetune(quick_recipe(tiny_model, data, tmp_path / "whole", **settings)).metrics
    out = tmp_path / "killed"
    recipe = quick_recipe(tiny_model, data, out, **settings)
    script = f"""
import os, signal
from transformers import TrainerCallback
from seedbed.recipe import FinetuneRecipe
from seedbed.train.finetune import finetune

class KillWhileSaving(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 4:
            optimizer = os.path.join(args.output_dir, "checkpoint-4", "optimizer.pt")
            os.truncate(optimizer, os.path.getsize(optimizer) // 2)  # cut off mid-write
            os.kill(os.getpid(), signal.SIGKILL)

finetune(FinetuneRecipe.model_validate_json({recipe.model_dump_json()!r}), callbacks=[KillWhileSaving()])
"""
    child = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.returncode == -signal.SIGKILL
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    resumed = finetune(FinetuneRecipe(out=str(out), resume=True, quiet=True)).metrics
    assert resumed["steps"] == 6
    assert [h["step"] for h in resumed["train"]] == [h["step"] for h in whole["train"]]
    for a, b in zip(resumed["train"], whole["train"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)


def test_the_lora_adapter_reloads_with_peft_and_equals_the_merged_model(tiny_model, data, tmp_path):
    from peft import PeftModel

    out = tmp_path / "lora"
    finetune(quick_recipe(tiny_model, data, out, method="lora", max_steps=4, template_tokens="off"))
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert len(adapter) > 0 and all(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)
    base, tokenizer = load_model(str(tiny_model))
    with_adapter = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    merged = load_model(str(out))[0].eval()
    ids = tokenizer("What is 3 plus 4?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(with_adapter(input_ids=ids).logits, merged(input_ids=ids).logits,
                                   atol=1e-4, rtol=1e-4)
        assert not torch.allclose(load_model(str(tiny_model))[0](input_ids=ids).logits,
                                  merged(input_ids=ids).logits, atol=1e-3)  # the adapter changed the outputs
