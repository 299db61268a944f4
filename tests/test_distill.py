"""Distillation on tiny Llamas: the student's KL to a trained teacher falls, presets start from the teacher's
weights, tokenizers must match, and sequence-level distillation learns a served teacher's answers."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import qa_records, running_server, write_jsonl
from safetensors.torch import load_file

from seedbed.data.readers import read_examples
from seedbed.models import load_model
from seedbed.recipe import DistillRecipe, RecipeError
from seedbed.tiny import build_tiny_llama
from seedbed.train.distill import TEACHER_ANSWERS, distill, teacher_answers
from seedbed.train.student import PRESETS, build_student, count_parameters, kept_layers, parse_preset
from seedbed.train.trainer import answer_only_loss, build_features

FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "recipe.yaml", "metrics.json", "README.md"}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 4-layer tiny Llama trained for a few dozen steps on small sums, so its distributions are peaked."""
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("teacher")
    out = build_tiny_llama(root / "llama")
    model, tokenizer = load_model(str(out))
    config = model.config
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    examples = read_examples([str(write_jsonl(root / "train.jsonl", qa_records(40)))]).examples
    features, _ = build_features(tokenizer, examples, 128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        batch = [features[(step * 8 + i) % len(features)] for i in range(8)]
        width = max(len(f["input_ids"]) for f in batch)
        ids = torch.tensor([f["input_ids"] + [tokenizer.pad_token_id] * (width - len(f["input_ids"])) for f in batch])
        mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in batch])
        labels = torch.tensor([[t if m else -100 for t, m in zip(f["input_ids"], f["assistant_masks"])]
                               + [-100] * (width - len(f["input_ids"])) for f in batch])
        loss = answer_only_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 1.0, loss.item()  # peaked: the teacher has learned the sums' format
    model.eval()
    model.save_pretrained(out)
    return out


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", qa_records(40))


def quick_recipe(teacher, data, out, **overrides) -> DistillRecipe:
    settings = dict(teacher=str(teacher), student="keep-every-2", data=[str(data)], out=str(out), max_steps=16,
                    batch_size=4, lr=3e-3, warmup=0, eval_steps=8, save_steps=8, logging_steps=2, val_fraction=0.2,
                    quiet=True)
    return DistillRecipe(**{**settings, **overrides})


def test_logit_distillation_lowers_the_kl_and_writes_a_complete_model(teacher, data, tmp_path):
    out = tmp_path / "student"
    m = distill(quick_recipe(teacher, data, out, student="narrow-half")).metrics

    val_kl = [v["kl"] for v in m["kl"]["val"]]
    assert m["kl"]["val"][0]["step"] == 0 and len(val_kl) == 3  # steps 0, 8, 16
    assert val_kl[-1] < 0.6 * val_kl[0], val_kl  # the student's held-out KL to the teacher falls
    assert len(m["kl"]["train"]) == 8 and all(t["kl"] >= 0 and t["ce"] > 0 for t in m["kl"]["train"])
    assert m["student_parameters"] < m["teacher_parameters"] and m["parameter_ratio"] < 1
    assert m["tokens_seen"] > 0 and m["tokens_per_s"] > 0 and m["examples"]["train"] + m["examples"]["val"] == 40

    names = {p.name for p in out.iterdir()}
    assert FILES <= names and "checkpoints" not in names
    card = (out / "README.md").read_text()
    assert str(teacher) in card and "narrow-half" in card and "Hinton" in card
    model, tokenizer = load_model(str(out))
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    ids = tokenizer("What is", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] > ids["input_ids"].shape[1]


def test_keep_every_2_starts_from_the_teachers_layers(teacher):
    model, _ = load_model(str(teacher))
    student, layers = build_student(model, parse_preset("keep-every-2"))
    assert layers == [0, 3] == kept_layers(4, 2) and student.config.num_hidden_layers == 2
    t, s = model.state_dict(), student.state_dict()
    for name, weight in s.items():
        source = name.replace("layers.1.", "layers.3.")
        assert torch.equal(weight, t[source]), name
    assert kept_layers(18, 2) == [0, 2, 4, 6, 8, 11, 13, 15, 17]  # first and last always kept


def test_narrow_half_selects_weights_and_halves_the_width(teacher):
    model, tokenizer = load_model(str(teacher))
    student, layers = build_student(model, PRESETS["narrow-half"])
    c = student.config
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (32, 64, 2, 1, 16)
    assert c.vocab_size == model.config.vocab_size  # the tokenizer is shared
    assert count_parameters(student) < 0.4 * count_parameters(model)
    t, s = model.state_dict(), student.state_dict()
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"][:, ::2])
    assert torch.equal(s["model.layers.1.mlp.down_proj.weight"], t["model.layers.3.mlp.down_proj.weight"][::2, ::2])
    # kv head 0 (of 2) and the query heads 0 and 1 that share it: each kept query head keeps its kv head
    q = t["model.layers.0.self_attn.q_proj.weight"].view(4, 16, 64)[[0, 1]][:, :, ::2].reshape(32, 32)
    assert torch.equal(s["model.layers.0.self_attn.q_proj.weight"], q)
    ids = tokenizer("What is two plus three?", return_tensors="pt")
    assert student(**ids).logits.shape[-1] == len(tokenizer)


def test_gemma3_presets_keep_each_layers_attention_type():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                              sliding_window=16)
    teacher = Gemma3ForCausalLM(config)
    for preset in ("keep-every-2", "narrow-half", "narrow-third"):
        student, layers = build_student(teacher, PRESETS[preset])
        assert layers == [0, 2, 5]
        assert student.config.layer_types == [config.layer_types[i] for i in layers]
        assert student.config.layer_types[-1] == "full_attention"  # Gemma 3's every-6th global layer is kept
        assert torch.equal(student.model.embed_tokens.weight, student.lm_head.weight)  # still tied
        assert student(input_ids=torch.tensor([[2, 10, 20, 30]])).logits.shape == (1, 4, 400)
        buffers = dict(student.named_buffers())  # not weights: computed for the student's own sizes
        assert buffers["model.embed_tokens.embed_scale"].item() == pytest.approx(student.config.hidden_size ** 0.5)
        for name, buffer in teacher.named_buffers():
            assert torch.equal(buffers[name], buffer) or name.endswith("embed_scale"), name


def test_a_student_with_another_tokenizer_is_refused(teacher, data, tmp_path):
    other = build_tiny_llama(tmp_path / "other", vocab_size=300)
    with pytest.raises(RecipeError, match="vocab sizes"):
        distill(quick_recipe(teacher, data, tmp_path / "o", student=str(other)))



@pytest.fixture
def served_teacher(teacher):
    from seedbed.inference import load
    from seedbed.serve.app import ServerConfig, create_app
    from seedbed.serve.engine import Engine

    config = ServerConfig({"teacher": Engine("teacher", load(str(teacher)), max_batch=8, batch_window_ms=20)})
    with running_server(create_app(config)) as url:
        yield url


def test_a_local_teacher_answers_as_the_served_one(teacher, served_teacher, data, tmp_path):
    """One decode path: the teacher loaded here and the same teacher behind `seedbed serve` give the same answers."""
    examples = [e for e in read_examples([str(data)]).examples if e.is_chat][:6]
    answers = []
    for out, url in ((tmp_path / "local", None), (tmp_path / "served", served_teacher)):
        out.mkdir()
        recipe = quick_recipe(teacher, data, out, mode="sequence", teacher_url=url, teacher_max_new_tokens=24)
        answers.append(teacher_answers(recipe, examples, out))
    assert answers[0] == answers[1] and len(answers[0]) == 6 and all(answers[0].values())


def test_every_preset_is_named_in_the_cli_help():
    from typer.testing import CliRunner

    from seedbed.cli import app

    help_text = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "300"}).output
    assert all(name in help_text for name in PRESETS) and "keep-every-K" in help_text


def test_sequence_distillation_learns_a_served_teachers_answers(teacher, served_teacher, data, tmp_path):
    out = tmp_path / "seq"
    recipe = quick_recipe(teacher, data, out, mode="sequence", teacher_url=served_teacher, teacher_max_new_tokens=24)
    m = distill(recipe).metrics

    rows = [json.loads(line) for line in (out / TEACHER_ANSWERS).read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}) == m["examples"]["train"] == 32  # one answer per prompt
    assert sum(" plus " in r["answer"] for r in rows) > 16  # the trained teacher answers in the data's format
    assert m["train"][-1]["loss"] < m["train"][0]["loss"]  # the student learns them
    assert (out / "model.safetensors").is_file() and "Kim & Rush" in (out / "README.md").read_text()

    # A re-run asks only for what is missing: cut the file, answer again with no server needed for the rest.
    kept = rows[:-3]
    (out / TEACHER_ANSWERS).write_text("".join(json.dumps(r) + "\n" for r in kept))
    examples = [e for e in read_examples([str(data)]).examples if e.id in {r["id"] for r in rows}]
    answers = teacher_answers(recipe, examples, out)
    assert answers == {r["id"]: r["answer"] for r in rows}  # greedy: the same answers again
    assert len((out / TEACHER_ANSWERS).read_text().splitlines()) == 32


def test_resume_continues_an_interrupted_distillation(teacher, data, tmp_path):
    from seedbed.train.callbacks import StopAfter

    out = tmp_path / "cut"
    recipe = quick_recipe(teacher, data, out, max_steps=8, eval_steps=4, save_steps=4)
    assert distill(recipe, callbacks=[StopAfter(4)]).metrics == {"stopped_at_step": 4}
    with pytest.raises(RecipeError, match="already holds a run"):
        distill(recipe)  # never silently overwrite a run
    m = distill(DistillRecipe(teacher="ignored: the saved recipe is used", out=str(out), resume=True, quiet=True)).metrics
    assert m["steps"] == 8 and [v["step"] for v in m["kl"]["val"]] == [0, 4, 8]
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints").exists()


def test_an_untrained_end_of_turn_row_is_named_and_restarted(data, tmp_path):
    """Distillation trains every student weight, so an under-trained turn marker is reported and re-initialised."""
    base = build_tiny_llama(tmp_path / "base", unused_tokens=4)
    model, tokenizer = load_model(str(base))
    end, unused = tokenizer.convert_tokens_to_ids(["<|end|>", "<unused0>"])
    with torch.no_grad():
        for weight in (model.model.embed_tokens.weight, model.lm_head.weight):
            weight[end] = weight[unused]
    model.save_pretrained(base)
    out = tmp_path / "student"
    m = distill(quick_recipe(base, data, out, student=str(base), max_steps=2, val_fraction=0)).metrics

    report = m["template_tokens"]
    assert report["under_trained"] == ["<|end|>"] and report["initialised_from_mean"] == ["<|end|>"]
    assert "`<|end|>`" in (out / "README.md").read_text() and "<unused0>" in (out / "README.md").read_text()
    after = load_file(str(out / "model.safetensors"))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert not torch.equal(after[name][end], after[name][unused]), name


def test_an_api_key_never_goes_to_another_machine_over_plain_http(teacher, data, tmp_path, monkeypatch):
    """--teacher-url http://elsewhere with OPENAI_API_KEY set sent the key readable across the network."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    examples = [e for e in read_examples([str(data)]).examples if e.is_chat][:1]
    recipe = quick_recipe(teacher, data, tmp_path, mode="sequence", teacher_url="http://192.0.2.1:9/v1")
    with pytest.raises(RecipeError, match="plain HTTP to another machine"):
        teacher_answers(recipe, examples, tmp_path)
