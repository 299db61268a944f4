"""The time and cost a fine-tuning job will take, before it starts: `seedbed plan`'s 6·N·D rule at a measured or
stated rate, shown on the job form."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from seedbed.errors import SeedbedError
from seedbed.plan import HARDWARE
from seedbed.recipe import DistillRecipe, FinetuneRecipe
from seedbed.studio.app import Studio, build_app
from seedbed.studio.estimate import estimate_distill, estimate_finetune, flops_rate, parameters_of, tokens_to_train

from conftest import qa_records, write_jsonl


def test_the_parameter_count_is_read_from_the_weights_headers(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert parameters_of(str(tiny_model), tmp_path, []) == sum(p.numel() for p in model.parameters())
    assert parameters_of("gemma-3-270m", tmp_path, []) == 268_098_176  # benchmarks/results/distill_gemma.json
    assert parameters_of("someone/unknown", tmp_path, []) is None


def test_tokens_follow_the_epochs_or_the_steps():
    assert tokens_to_train(FinetuneRecipe(epochs=2), data_tokens=1000, records=10) == 2000
    # 5 steps of 4 x 2 examples at the mean of 100 tokens; the mean is capped by max_length
    assert tokens_to_train(FinetuneRecipe(max_steps=5, batch_size=4, grad_accum=2), 1000, 10) == 4000
    assert tokens_to_train(FinetuneRecipe(max_steps=5, batch_size=4, max_length=16), 1000, 10) == 320


def test_without_a_run_the_stated_rate_and_price_are_used(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", qa_records(40))
    recipe = FinetuneRecipe(base=str(tiny_model), data=[data.name], epochs=3)
    estimate = estimate_finetune(recipe, tmp_path, [])
    assert estimate.tokens == 3 * (data.stat().st_size // 4)
    spec = HARDWARE["cpu-2core"]
    assert estimate.seconds == pytest.approx(6 * estimate.parameters * estimate.tokens / (spec["flops_per_s"] * spec["mfu"]))
    assert estimate.usd == pytest.approx(estimate.seconds / 3600 * spec["usd_per_hour"])
    assert estimate.basis.startswith("stated")
    priced = estimate_finetune(recipe.model_copy(update={"cost_per_hour": 36.0}), tmp_path, [])
    assert priced.usd == pytest.approx(estimate.seconds / 100)  # $36/hour = 1 cent a second
    with pytest.raises(SeedbedError, match="data"):
        estimate_finetune(FinetuneRecipe(base=str(tiny_model), data=["missing.jsonl"]), tmp_path, [])


def test_a_finished_run_on_the_same_base_gives_the_measured_rate(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", qa_records(40))
    recipe = FinetuneRecipe(base=str(tiny_model), data=[data.name])
    same = {"base": str(tiny_model), "tokens_per_s": 250.0, "total_parameters": 1000}
    measured = estimate_finetune(recipe, tmp_path, [same])
    assert measured.seconds == pytest.approx(measured.tokens / 250.0) and measured.basis.startswith("measured: 250")
    other = {"base": "elsewhere", "tokens_per_s": 500.0, "total_parameters": 1_000_000}  # 3e9 FLOP/s
    scaled = estimate_finetune(recipe, tmp_path, [other])
    assert scaled.seconds == pytest.approx(6 * scaled.parameters * scaled.tokens / 3e9)
    assert scaled.basis.startswith("measured on another run")


def test_the_form_shows_the_estimate_before_the_job_starts(tiny_model, tmp_path):
    studio = Studio(tmp_path / "studio")
    write_jsonl(studio.data_dir / "t.jsonl", qa_records(40))
    c = TestClient(build_app(studio, schedule=False))
    assert 'id="recipe-estimate"' in c.get("/jobs/new?verb=finetune").text
    fields = {"base": str(tiny_model), "data": ["t.jsonl"], "out": "runs/a"}
    shown = c.post("/api/recipe", json={"verb": "finetune", "fields": fields}).json()["estimate"]
    assert "training time" in shown and "cost" in shown and "stated" in shown
    # A finished job on that base: the next estimate uses its measured tokens/s.
    job_id = studio.scheduler.submit("finetune", FinetuneRecipe(**fields))
    studio.scheduler.store.mark_running(job_id, 0)
    studio.scheduler.store.mark_finished(job_id, "done", 0)
    (studio.data_dir / "runs" / "a").mkdir(parents=True)
    (studio.data_dir / "runs" / "a" / "metrics.json").write_text(json.dumps({"tokens_per_s": 123.0,
                                                                            "total_parameters": 5}))
    again = c.post("/api/recipe", json={"verb": "finetune", "fields": fields}).json()["estimate"]
    assert "measured: 123 tokens/s" in again
    missing = c.post("/api/recipe", json={"verb": "finetune", "fields": {**fields, "data": ["nope.jsonl"]}}).json()
    assert "No estimate yet" in missing["estimate"] and "nope.jsonl" in missing["estimate"]
    assert c.post("/api/recipe", json={"verb": "quantize", "fields": {"model": "m"}}).json()["estimate"] == ""


def test_a_distillation_counts_the_students_training_and_the_teachers_forward_pass(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", qa_records(40))
    n = parameters_of(str(tiny_model), tmp_path, [])
    spec = HARDWARE["cpu-2core"]
    rate = spec["flops_per_s"] * spec["mfu"]
    logit = estimate_distill(DistillRecipe(teacher=str(tiny_model), student=str(tiny_model), data=[data.name]),
                             tmp_path, [])
    assert logit.tokens == data.stat().st_size // 4 and logit.parameters == n
    assert logit.seconds == pytest.approx((6 * n + 2 * n) * logit.tokens / rate)  # the teacher: forward only
    assert ("teacher parameters", f"{n:,}") in logit.rows() and "upper bound" not in logit.basis
    sequence = estimate_distill(DistillRecipe(teacher=str(tiny_model), student=str(tiny_model), data=[data.name],
                                              mode="sequence"), tmp_path, [])
    assert sequence.seconds == pytest.approx(6 * n * sequence.tokens / rate)  # generation is said, not counted
    assert "not counted" in dict(sequence.rows())["FLOPs counted"]
    # A preset student is not built yet: counted at the teacher's size, an upper bound, and said so.
    preset = estimate_distill(DistillRecipe(teacher=str(tiny_model), student="keep-every-2", data=[data.name]),
                              tmp_path, [])
    assert preset.seconds == pytest.approx(logit.seconds) and "upper bound" in preset.basis
    # A finished distillation with the same teacher, student and mode: its tokens/s and its student's size.
    same = {"teacher": str(tiny_model), "student": "keep-every-2", "mode": "logit", "tokens_per_s": 100.0,
            "student_parameters": 10, "teacher_parameters": 20}
    measured = estimate_distill(DistillRecipe(teacher=str(tiny_model), student="keep-every-2", data=[data.name]),
                                tmp_path, [same])
    assert measured.seconds == pytest.approx(measured.tokens / 100.0) and measured.parameters == 10
    assert measured.basis.startswith("measured: 100 tokens/s") and "upper bound" not in measured.basis
    assert flops_rate(same) == (6 * 10 + 2 * 20) * 100.0
    # Another run's rate (a fine-tune's 6·N·tokens/s = 3e9 FLOP/s) applied to this run's FLOPs a token.
    other = {"base": "elsewhere", "tokens_per_s": 500.0, "total_parameters": 1_000_000}
    scaled = estimate_distill(DistillRecipe(teacher=str(tiny_model), student=str(tiny_model), data=[data.name]),
                              tmp_path, [other])
    assert scaled.seconds == pytest.approx(8 * n * scaled.tokens / 3e9)
    unknown = estimate_distill(DistillRecipe(teacher="someone/unknown", data=[data.name]), tmp_path, [])
    assert unknown.seconds is None and unknown.basis.startswith("no time estimate")


def test_the_distill_form_shows_its_estimate(tiny_model, tmp_path):
    studio = Studio(tmp_path / "studio")
    write_jsonl(studio.data_dir / "t.jsonl", qa_records(40))
    c = TestClient(build_app(studio, schedule=False))
    fields = {"teacher": str(tiny_model), "data": ["t.jsonl"], "out": "runs/d"}
    shown = c.post("/api/recipe", json={"verb": "distill", "fields": fields}).json()["estimate"]
    assert "training time" in shown and "teacher parameters" in shown and "teacher&#x27;s forward pass" in shown
    assert "upper bound" in shown  # the default student is the keep-every-2 preset
