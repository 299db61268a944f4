"""`seedbed plan`: Chinchilla's rule on the paper's own worked examples, exact parameter counts of the shapes it
proposes, the data-limited case, and nonsense budgets refused with the field named."""

from __future__ import annotations

import math

import pytest
import yaml

from seedbed.errors import RecipeError
from seedbed.plan import HARDWARE, LlamaShape, compute_optimal, llama_shape, make_plan, pretrain_recipe

# Hoffmann et al. 2022, Table 3 (Approach 1): compute-optimal parameters and tokens for a FLOPs budget.
CHINCHILLA_TABLE_3 = [  # (parameters, FLOPs, tokens)
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
]


@pytest.mark.parametrize("parameters,flops,tokens", CHINCHILLA_TABLE_3)
def test_compute_optimal_matches_the_papers_table(parameters, flops, tokens):
    n, d = compute_optimal(flops)
    assert n == pytest.approx(parameters, rel=0.06)
    assert d == pytest.approx(tokens, rel=0.08)
    assert 6 * n * d == pytest.approx(flops)
    assert d / n == pytest.approx(20)


@pytest.mark.parametrize("parameters,flops,tokens", CHINCHILLA_TABLE_3)
def test_plan_gives_a_shape_of_the_optimal_size(parameters, flops, tokens):
    plan = make_plan(flops=flops)
    assert plan.parameters == pytest.approx(parameters, rel=0.12)  # the shape is within ~5% of N
    assert plan.flops <= flops * 1.12
    assert plan.tokens / plan.parameters == pytest.approx(20, rel=0.06)
    s = plan.shape
    assert s.hidden_size % s.heads == 0 and 16 <= s.hidden_size / s.layers <= 160


@pytest.mark.parametrize("target", [5e5, 1e6, 3e6, 3e7, 1.35e8, 1e9])
def test_shape_parameter_count_is_what_transformers_builds(target):
    """`LlamaShape.parameters` is exact: the same count as a LlamaForCausalLM of that shape (built on meta)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = llama_shape(target)
    config = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size, num_hidden_layers=s.layers,
                         num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                         intermediate_size=s.intermediate_size, tie_word_embeddings=True)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == s.parameters
    assert s.parameters == pytest.approx(target, rel=0.1)
    assert s.vocab_size * s.hidden_size <= 0.3 * s.parameters  # small models get small vocabularies


def test_hours_on_named_hardware_give_flops_time_and_cost():
    plan = make_plan(hours=10, hardware="a100")
    hw = HARDWARE["a100"]
    assert plan.budget_flops == pytest.approx(10 * 3600 * hw["flops_per_s"] * hw["mfu"])
    assert plan.wall_time_s == pytest.approx(10 * 3600, rel=0.12)  # the plan uses (about) the budget
    assert plan.usd == pytest.approx(plan.wall_time_s / 3600 * hw["usd_per_hour"])
    stated = make_plan(hours=1, flops_per_s=1e12, cost_per_hour=2.0)  # your own machine: the rate as it runs
    assert stated.budget_flops == pytest.approx(3600 * 1e12)


def test_measured_throughput_from_a_runs_metrics():
    from seedbed.plan import measured_rate

    assert measured_rate({"total_parameters": 1_000_000, "tokens_per_s": 500}) == 3e9
    with pytest.raises(RecipeError, match="measured"):
        measured_rate({"tokens_per_s": 500})


def test_too_little_data_plans_a_smaller_model_and_says_so():
    plan = make_plan(flops=1e18, data_tokens=5e6)  # optimal: ~91M parameters on 1.8B tokens; 5M tokens is far short
    assert plan.epochs == 4 and plan.tokens == 20_000_000
    assert plan.parameters == pytest.approx(1e6, rel=0.1)  # 4 epochs x 5M tokens / 20 tokens per parameter
    assert plan.flops < 0.01 * plan.budget_flops
    assert any("data is too small" in note for note in plan.notes)
    enough = make_plan(flops=1e18, data_tokens=1e10)
    assert enough.epochs < 1 and not any("too small" in n for n in enough.notes)


@pytest.mark.parametrize("kwargs,match", [
    ({"flops": 0}, "flops: 0"),
    ({"flops": -1e20}, "flops"),
    ({"flops": math.nan}, "flops"),
    ({"flops": math.inf}, "flops"),
    ({"flops": 1e30}, "beyond any training run"),
    ({"flops": 1e9}, "too small"),
    ({}, "give the compute"),
    ({"flops": 1e20, "hours": 1, "hardware": "h100"}, "one of them"),
    ({"hours": 5}, "--hours needs the machine"),
    ({"hours": -5, "hardware": "h100"}, "hours"),
    ({"hours": 5, "hardware": "tpu-v9"}, "unknown 'tpu-v9'"),
    ({"hours": 5, "hardware": "h100", "mfu": 1.5}, "mfu"),
    ({"flops": 1e18, "data_tokens": 0}, "tokens"),
    ({"flops": 1e18, "data_tokens": 1000}, "too few to pretrain"),
])
def test_nonsense_budgets_are_refused_naming_the_field(kwargs, match):
    with pytest.raises(RecipeError, match=match):
        make_plan(**kwargs)


def test_plan_writes_a_pretrain_recipe_that_carries_it_out(tmp_path):
    from seedbed.recipe import load_recipe, save_recipe

    plan = make_plan(flops=1e15)
    recipe = pretrain_recipe(plan, ["corpus.txt"])
    save_recipe(recipe, tmp_path / "plan.yaml", "pretrain")
    loaded = load_recipe(tmp_path / "plan.yaml").pretrain
    assert (loaded.layers, loaded.hidden_size, loaded.vocab_size) == (plan.shape.layers, plan.shape.hidden_size,
                                                                      plan.shape.vocab_size)
    assert loaded.max_steps * loaded.batch_size * loaded.max_length >= plan.tokens
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["pretrain"]["data"] == ["corpus.txt"]


def test_cli_prints_the_plan_and_refuses_clearly(tmp_path):
    from typer.testing import CliRunner

    from seedbed.cli import app

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("word " * 500_000)  # 2.5 MB: ~625k tokens, too few for an hour of 2 cores
    result = CliRunner().invoke(app, ["plan", "--hours", "1", "--hardware", "cpu-2core", "--data", str(corpus),
                                      "--out", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and "wall time" in result.output and (tmp_path / "p.yaml").is_file()
    assert "data is too small" in result.output
    bad = CliRunner().invoke(app, ["plan", "--flops", "-3"])
    assert bad.exit_code == 2 and "flops" in bad.output and "Traceback" not in bad.output


def test_shape_dataclass_counts_without_torch():
    assert LlamaShape(1, 64, 2, 2, 160, 100).parameters == 100 * 64 + (2 * 64 * 64 + 2 * 64 * 64 + 3 * 64 * 160 + 128) + 64
