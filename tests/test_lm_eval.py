"""lm-evaluation-harness both ways on a tiny model: `seedbed eval --lm-eval` in process (lm-eval's HF model), and
lm-eval's own `local-completions` model against a running `seedbed serve`; the shipped multiple-choice task
scores the same through both."""

from __future__ import annotations

import json

import pytest

from conftest import running_server
from seedbed.errors import EvalError
from seedbed.evaluate import evaluate
from seedbed.evaluate.harness import harness_scores
from seedbed.inference import load
from seedbed.recipe import EvalRecipe
from seedbed.serve.app import ServerConfig, create_app
from seedbed.serve.engine import Engine

pytest.importorskip("lm_eval")

LIMIT = 40


def test_in_process_and_served_lm_eval_agree(tiny_model, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = tmp_path / "eval"
    recipe = EvalRecipe(models=[f"tiny={tiny_model}"], lm_eval=["seedbed_csqa"], limit=LIMIT, out=str(out),
                        batch_size=8, quiet=True)
    result = evaluate(recipe)
    ours = {s.metric: s for s in result.harness}
    assert set(ours) == {"acc", "acc_norm"} and all(s.n == LIMIT and s.task == "seedbed_csqa" for s in ours.values())
    assert all(0.0 <= s.value <= 1.0 for s in ours.values())
    written = json.loads((out / "results.json").read_text())
    assert [h["metric"] for h in written["harness"]] == ["acc", "acc_norm"]
    assert "| tiny |" in (out / "results.md").read_text() and (out / "lm_eval_tasks" / "seedbed_csqa.yaml").is_file()
    assert "lm-evaluation-harness" in (out / "report.html").read_text()

    engine = Engine("tiny", load(str(tiny_model)), max_batch=8)
    with running_server(create_app(ServerConfig({"tiny": engine}))) as url:
        served = simple_evaluate(
            model="local-completions",
            model_args={"base_url": f"{url}/v1/completions", "model": "tiny", "tokenizer": str(tiny_model),
                        "tokenizer_backend": "huggingface", "tokenized_requests": True, "add_bos_token": True,
                        "batch_size": 8, "max_retries": 1},
            tasks=["seedbed_csqa"], limit=LIMIT, log_samples=False,
            task_manager=TaskManager(include_path=[str(out / "lm_eval_tasks")], include_defaults=False))
    theirs = {s.metric: s for s in harness_scores("tiny", str(tiny_model), served)}
    for metric in ("acc", "acc_norm"):
        assert abs(theirs[metric].value - ours[metric].value) <= 0.005, (metric, theirs[metric], ours[metric])


def test_unknown_task_and_missing_include_are_errors(tiny_model, tmp_path):
    with pytest.raises(EvalError, match="no lm-eval task named nope.*seedbed_csqa"):
        evaluate(EvalRecipe(models=[str(tiny_model)], lm_eval=["nope"]))
    with pytest.raises(EvalError, match="lm_eval_include: .*missing"):
        evaluate(EvalRecipe(models=[str(tiny_model)], lm_eval=["seedbed_csqa"],
                            lm_eval_include=[str(tmp_path / "missing")]))
