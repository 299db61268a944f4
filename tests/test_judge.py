"""Judged A/B (`seedbed eval --judge`): scripted judges (a callable, and an OpenAI-compatible HTTP server spoken to
through the `openai` SDK) whose verdicts must become exactly the expected win rates and Bradley–Terry ratings,
position swap included; malformed replies, timeouts, HTTP errors and refusals counted; resuming; human votes;
the bootstrap and the length-controlled win rate; the CLI end to end on tiny models, with a local judge too."""

from __future__ import annotations

import asyncio
import json
import math
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from conftest import running_server, write_jsonl
from fastapi import FastAPI, Request  # module level: the route's annotation must resolve (future annotations)
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from seedbed.atomic import mark_output_dir
from seedbed.cli import app
from seedbed.errors import DataError, EvalError
from seedbed.evaluate.judge import Reply, read_verdict
from seedbed.evaluate.judgments import JudgmentStore
from seedbed.evaluate.pairwise import ANSWERS, JUDGMENTS, judged_eval, read_prompts
from seedbed.evaluate.ratings import ELO_SCALE, Outcome, bootstrap, bradley_terry, lc_win_rate, win_rate
from seedbed.recipe import EvalRecipe

_SHOWN = re.compile(r"Assistant A's Answer\]\n(.*?)\n\[The End.*Assistant B's Answer\]\n(.*?)\n\[The End", re.S)


def shown(chat: list[dict]) -> tuple[str, str, str]:
    """(prompt id, model shown as A, model shown as B) of a judge chat over planted answers "<model> on <id>"."""
    first, second = _SHOWN.search(chat[-1]["content"]).groups()
    return first.split()[2], first.split()[0], second.split()[0]


class ScriptedJudge:
    """A judge that reads which planted answer is whose and replies `script(prompt_id, first, second)`."""

    name = "scripted"

    def __init__(self, script, fail_after: int | None = None):
        self.script, self.fail_after, self.asked = script, fail_after, []

    def ask(self, chats):
        replies = []
        for chat in chats:
            if self.fail_after is not None and len(self.asked) >= self.fail_after:
                raise KeyboardInterrupt  # the run is killed mid-way
            self.asked.append(shown(chat))
            replies.append(Reply(self.script(*shown(chat))))
        return replies


def prefers(table: dict[tuple[str, str], list[str]]):
    """A position-blind judge: for the pair's prompt i, the winner table[(a, b)][i] ("a", "b" or "tie")."""
    def script(pid: str, first: str, second: str) -> str:
        a, b = sorted((first, second))
        winner = table[(a, b)][int(pid[1:])]
        best = {"a": a, "b": b, "tie": None}[winner]
        return "Fine. [[C]]" if best is None else f"Better. [[{'A' if best == first else 'B'}]]"
    return script


def setup(tmp_path: Path, names: list[str], n: int, **fields) -> EvalRecipe:
    """A recipe over n prompts `p0`... with every model's answer planted in the cache ("<model> on <id> ..."),
    so no model is loaded; the answers of model m are m's index + 1 times longer than the first model's."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"Question {i}?"} for i in range(n)])
    out = tmp_path / "ab"
    recipe = EvalRecipe(judge="unused", models=[f"{m}=dir/{m}" for m in names], prompts=[str(prompts)],
                        out=str(out), bootstrap=200, batch_size=4, **fields)
    mark_output_dir(out)  # as the judged eval that cached these answers left it
    write_jsonl(out / ANSWERS, [
        {"model": m, "spec": f"dir/{m}", "engine": "torch", "max_new_tokens": recipe.max_new_tokens,
         "prompt_id": f"p{i}", "prompt": f"Question {i}?", "answer": f"{m} on p{i} " + "x" * (10 * (k + 1)),
         "finish_reason": "stop", "completion_tokens": 3}
        for k, m in enumerate(names) for i in range(n)])
    return recipe


def pair_row(results: dict, a: str, b: str) -> dict:
    return next(r for r in results["pairs"] if (r["model_a"], r["model_b"]) == (a, b))


def test_verdicts_become_exact_win_rates_and_bradley_terry(tmp_path):
    # 30 prompts whose win shares follow a Bradley–Terry model exactly: x beats y 2/3, y beats z 2/3, x beats z 4/5.
    table = {("x", "y"): ["a"] * 20 + ["b"] * 10, ("y", "z"): ["a"] * 18 + ["tie"] * 4 + ["b"] * 8,
             ("x", "z"): ["a"] * 24 + ["b"] * 6}
    recipe = setup(tmp_path, ["x", "y", "z"], 30)
    judge = ScriptedJudge(prefers(table))
    results = judged_eval(recipe, judge)

    assert len(judge.asked) == 30 * 3 * 2  # every prompt, every pair, both orders
    assert {(p, f, s) for p, f, s in judge.asked} >= {("p0", "y", "x"), ("p0", "x", "y")}
    xy, yz, xz = pair_row(results, "x", "y"), pair_row(results, "y", "z"), pair_row(results, "x", "z")
    assert (xy["a_wins"], xy["b_wins"], xy["ties"], xy["inconsistent"]) == (20, 10, 0, 0)
    assert xy["judge"]["win_rate"] == pytest.approx(2 / 3)
    assert yz["judge"]["win_rate"] == pytest.approx((18 + 2) / 30)
    assert xz["judge"]["win_rate"] == pytest.approx(0.8)
    assert xy["first_position_rate"] == pytest.approx(0.5)  # a position-blind judge

    # The plain MLE of these outcomes is exactly ±400·ln 2 / ln 10; the reported ratings (weak prior) are close.
    store = JudgmentStore(Path(recipe.out) / JUDGMENTS)
    assert len(store.records) == 180
    exact = [Outcome("p", "x", "y", 2 / 3, "judge"), Outcome("p", "y", "z", 2 / 3, "judge"),
             Outcome("p", "x", "z", 0.8, "judge")]
    step = ELO_SCALE * math.log(2)
    assert bradley_terry(exact, ["x", "y", "z"], prior=None) == pytest.approx([1000 + step, 1000, 1000 - step])
    rated = results["ratings"]["judge"]
    assert [rated[m]["rating"] for m in "xyz"] == pytest.approx([1000 + step, 1000, 1000 - step], abs=5)
    for m in "xyz":
        low, high = rated[m]["ci"]
        assert low <= rated[m]["rating"] <= high
    saved = json.loads((Path(recipe.out) / "results.json").read_text())
    assert saved["pairs"] == results["pairs"]
    md = (Path(recipe.out) / "results.md").read_text()
    assert "| x | y | 30 | 20 | 10 | 0 | 0 | 0 | 66.7% [" in md and "Bradley–Terry" in md


def test_a_judge_that_always_says_A_makes_every_prompt_inconsistent(tmp_path):
    recipe = setup(tmp_path, ["base", "tuned"], 8)
    results = judged_eval(recipe, ScriptedJudge(lambda *_: "Assistant A is better. [[A]]"))
    row = pair_row(results, "base", "tuned")
    assert (row["a_wins"], row["b_wins"], row["inconsistent"]) == (0, 0, 8)
    assert row["judge"]["win_rate"] == 0.5 and row["judge"]["win_rate_ci"] == [0.5, 0.5]
    assert row["first_position_rate"] == 1.0
    assert results["ratings"] is None  # two models: win rates only


def scripted_api(script, delays: dict[int, float] | None = None):
    """An OpenAI-compatible chat API whose n-th request (from 0) gets `script(n, chat)`: a reply text, an int (an
    HTTP status to fail with) or ("refusal", text); request n waits delays[n] seconds first."""
    api = FastAPI()
    seen: list[tuple] = []

    @api.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "scripted-judge", "object": "model", "created": 0, "owned_by": "t"}]}

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        n = len(seen)
        seen.append(body["messages"])
        await asyncio.sleep((delays or {}).get(n, 0))
        reply = script(n, body["messages"])
        if isinstance(reply, int):
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=reply)
        refusal = reply[1] if isinstance(reply, tuple) else None
        message = {"role": "assistant", "content": None if refusal else reply, "refusal": refusal}
        return {"id": f"c{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return api, seen


def test_endpoint_problems_are_counted_and_retried_on_resume(tmp_path):
    # Six prompts, two models: 12 requests. 0: malformed, 1: a timeout, 2: HTTP 500, 3: the API's refusal,
    # 4: a refusal in words, 5: the format line echoed (no choice); the rest prefer "tuned".
    def first_run(n, chat):
        _, first, _ = shown(chat)
        return {0: "Both answers are good.", 2: 500, 3: ("refusal", "I can't help with that."),
                4: "I'm sorry, I cannot judge this.", 5: '"[[A]]" if A is better, "[[B]]" if B is better, "[[C]]"'
                }.get(n, f"[[{'A' if first == 'tuned' else 'B'}]]")

    recipe = setup(tmp_path, ["base", "tuned"], 6, judge_timeout=0.5, judge_retries=0)
    api, seen = scripted_api(first_run, delays={1: 2.0})
    with running_server(api) as url:
        recipe.judge = f"{url}/v1"
        results = judged_eval(recipe)
        row = pair_row(results, "base", "tuned")
        assert len(seen) == 12
        assert (row["malformed"], row["timeout"], row["http"], row["refusal"], row["replies"]) == (2, 1, 1, 2, 6)
        assert results["judge"] == f"{url}/v1 (scripted-judge)"  # the first model the endpoint lists
        # Prompts p0-p2 lost an order to a problem; p3-p5 were judged both ways and "tuned" won each.
        assert (row["no_verdict"], row["b_wins"], row["judge"]["win_rate"]) == (3, 3, 0.0)

        # The re-run asks only what failed in transit (the timeout and the HTTP error), not the judged ones.
        results = judged_eval(recipe)
        row = pair_row(results, "base", "tuned")
        assert len(seen) == 14 and (row["timeout"], row["http"], row["malformed"], row["refusal"]) == (0, 0, 2, 2)


def test_an_interrupted_run_resumes_without_asking_stored_judgments(tmp_path):
    table = {("a", "b"): ["a", "b", "tie", "a", "a", "b", "a", "a", "tie", "a"]}
    recipe = setup(tmp_path, ["a", "b"], 10)
    with pytest.raises(KeyboardInterrupt):
        judged_eval(recipe, ScriptedJudge(prefers(table), fail_after=7))  # killed after 7 of 20 judgments
    store = Path(recipe.out) / JUDGMENTS
    assert len(store.read_text().splitlines()) == 4  # stored batch by batch (batch_size 4): the 8th never came
    with store.open("a") as f:
        f.write('{"key": "half-writ')  # and the kill left half a line behind
    resumed = ScriptedJudge(prefers(table))
    results = judged_eval(recipe, resumed)
    assert len(resumed.asked) == 16
    assert results["unreadable_store_lines"] == 0  # the unfinished line was cut off before appending
    assert all(json.loads(line)["key"] for line in store.read_text().splitlines())
    row = pair_row(results, "a", "b")
    assert (row["a_wins"], row["b_wins"], row["ties"]) == (6, 2, 2) and row["judge"]["win_rate"] == 0.7
    again = ScriptedJudge(prefers(table))
    assert pair_row(judged_eval(recipe, again), "a", "b") == row and again.asked == []


def test_human_votes_join_the_same_store_and_ratings(tmp_path):
    ties = ScriptedJudge(lambda *_: "[[C]]")
    recipe = setup(tmp_path, ["x", "y", "z"], 10)
    results = judged_eval(recipe, ties)
    assert pair_row(results, "x", "y")["judge+human"]["win_rate"] == 0.5
    assert results["ratings"]["judge+human"]["x"]["rating"] == pytest.approx(1000)

    votes = write_jsonl(tmp_path / "votes.jsonl",
                        [{"prompt_id": f"p{i}", "model_a": "y", "model_b": "x", "winner": "B"} for i in range(6)]
                        + [{"prompt_id": "p0", "model_a": "z", "model_b": "y", "winner": "tie"}])
    recipe.votes = [str(votes)]
    results = judged_eval(recipe, ties)
    xy = pair_row(results, "x", "y")
    assert xy["human_votes"] == 6 and xy["judge"]["win_rate"] == 0.5
    assert xy["judge+human"]["win_rate"] == pytest.approx((5 + 6) / 16)  # 10 judged ties + 6 votes for x
    rated = results["ratings"]
    assert rated["judge"]["x"]["rating"] == pytest.approx(1000)
    assert rated["judge+human"]["x"]["rating"] > 1010 > 990 > rated["judge+human"]["y"]["rating"]
    store = JudgmentStore(Path(recipe.out) / JUDGMENTS)
    humans = [r for r in store.records.values() if r["judge"] == "human"]
    assert len(humans) == 7 and humans[0]["verdict"] == "B" and humans[0]["answer_second"].startswith("x on p0")
    # Given again, the same votes are not counted twice.
    assert pair_row(judged_eval(recipe, ties), "x", "y")["human_votes"] == 6


def test_bad_votes_and_prompts_are_clear_errors(tmp_path):
    recipe = setup(tmp_path, ["x", "y"], 3)
    votes = write_jsonl(tmp_path / "votes.jsonl", [
        {"prompt_id": "p0", "model_a": "x", "model_b": "y", "winner": "A"},
        {"prompt_id": "p9", "model_a": "x", "model_b": "w", "winner": "maybe"},
        {"model_a": "x", "model_b": "x", "winner": "tie"}])
    recipe.votes = [str(votes)]
    with pytest.raises(DataError) as e:
        judged_eval(recipe, ScriptedJudge(lambda *_: "[[C]]"))
    message = str(e.value)
    assert f"{votes}:2: field 'prompt_id': 'p9' is not one of this eval's prompts" in message
    assert f"{votes}:2: field 'model_b': 'w' is not one of --models" in message
    assert f"{votes}:2: field 'winner': 'maybe': give A, B or tie" in message
    assert f"{votes}:3: field 'prompt_id': missing" in message

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"text": "no prompt field"}\n{"prompt": ""}\nnot json\n')
    with pytest.raises(DataError) as e:
        read_prompts(EvalRecipe(prompts=[str(bad)]))
    assert f"{bad}:2: field 'prompt': missing" in str(e.value) and f"{bad}:3: field 'prompt'" in str(e.value)
    assert f"{bad}:4:" in str(e.value)
    with pytest.raises(EvalError, match="two or more models"):
        judged_eval(EvalRecipe(judge="j", models=["x=m"], out=str(tmp_path / "o")))


def test_mt_bench_first_turns_are_the_default_prompts():
    prompts = read_prompts(EvalRecipe())
    assert len(prompts) == 80 and prompts[0].id == "81" and prompts[0].category == "writing"
    assert prompts[0].text.startswith("Compose an engaging travel blog post about a recent trip to Hawaii")


def test_verdict_reading():
    assert read_verdict(Reply("Explanation... [[B]]")) == ("B", None)
    assert read_verdict(Reply("[[A]] wait, no: [[A]]")) == ("A", None)
    assert read_verdict(Reply("[[A]] or maybe [[B]]")) == (None, "malformed")
    assert read_verdict(Reply("")) == (None, "malformed")
    assert read_verdict(Reply(None, "timeout")) == (None, "timeout")


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_prompts():
    def outcomes(n):  # 60% wins for a
        return [Outcome(f"p{i}", "a", "b", 1.0 if i % 5 < 3 else 0.0, "judge") for i in range(n)]

    widths = []
    for n in (20, 200):
        data = outcomes(n)
        (low,), (high,) = bootstrap(data, win_rate, 1000, seed=1)
        assert win_rate(data) == pytest.approx(0.6) and low < win_rate(data) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(10) as wide


def test_length_controlled_win_rate_removes_a_length_preference():
    # The longer answer wins 3 times in 4, and a's answer is the longer on 48 of 64 prompts: a wins 62.5% of the
    # time, all of it from length. At equal length the fit predicts even odds.
    data = ([Outcome(f"l{i}", "a", "b", float(i % 12 < 9), "judge", 200, 100) for i in range(48)]
            + [Outcome(f"s{i}", "a", "b", float(i % 4 < 1), "judge", 100, 200) for i in range(16)])
    assert win_rate(data) == 0.625
    assert lc_win_rate(data) == pytest.approx(0.5, abs=0.03)


def test_cli_judged_eval_on_tiny_models_with_an_endpoint_and_a_local_judge(tiny_model, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"What is {i} plus 1?"} for i in range(3)])
    api, seen = scripted_api(lambda n, chat: "[[C]]")
    runner = CliRunner()
    out = tmp_path / "ab"
    args = ["eval", "--models", f"one={tiny_model}", "--models", f"two={tiny_model}", "--prompts", str(prompts),
            "--max-new-tokens", "6", "--out", str(out), "--quiet", "--bootstrap", "50"]
    with running_server(api) as url:
        result = runner.invoke(app, args + ["--judge", f"{url}/v1", "--judge-model", "scripted-judge"])
        assert result.exit_code == 0, result.output
        assert len(seen) == 6 and "| one | two | 3 | 0 | 0 | 3 | 0 | 0 | 50.0% [50.0, 50.0]" in result.output
        answers = (out / ANSWERS).read_text().splitlines()
        assert len(answers) == 6 and json.loads(answers[0])["finish_reason"] in ("stop", "length")
        result = runner.invoke(app, args + ["--judge", f"{url}/v1", "--judge-model", "scripted-judge"])
        assert result.exit_code == 0 and len(seen) == 6  # answers cached, judgments stored: nothing asked again
        assert (out / ANSWERS).read_text().splitlines() == answers

    # The tiny model as an in-process judge: its replies hold no verdict, which is counted, not fatal.
    result = runner.invoke(app, args + ["--judge", str(tiny_model), "--judge-max-tokens", "16"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    row = saved["pairs"][0]
    assert saved["judge"] == str(tiny_model) and row["malformed"] + row["replies"] + row["refusal"] == 6
    records = [json.loads(line) for line in (out / JUDGMENTS).read_text().splitlines()]
    assert {r["judge"] for r in records} == {f"{url}/v1 (scripted-judge)", str(tiny_model)}
    assert all({"prompt", "answer_first", "answer_second", "reply", "verdict", "problem"} <= r.keys() for r in records)

    # --judge-verdict-only: the same tiny judge, constrained to a verdict, gives one every time (kept apart from
    # its free-form judgments above: another judge name).
    result = runner.invoke(app, args + ["--judge", str(tiny_model), "--judge-max-tokens", "16", "--judge-verdict-only"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    row = saved["pairs"][0]
    assert saved["judge"] == f"{tiny_model} (verdict only)" and row["malformed"] == row["refusal"] == 0
    verdicts = [json.loads(line) for line in (out / JUDGMENTS).read_text().splitlines()]
    verdicts = [r for r in verdicts if r["judge"] == saved["judge"]]
    assert len(verdicts) == 6 and all(r["reply"] in ('"[[A]]"', '"[[B]]"', '"[[C]]"') for r in verdicts)
    assert all(r["verdict"] in ("A", "B", "tie") for r in verdicts)

    result = runner.invoke(app, ["eval", "--judge", "x", "--models", f"one={tiny_model}", "--models",
                                 f"two={tiny_model}", "--quiet"])
    assert result.exit_code == 2 and "--judge needs --out" in result.output
