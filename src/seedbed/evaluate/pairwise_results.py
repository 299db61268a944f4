"""The figures of a judged A/B (`pairwise.py`) and the files they go to: results.json and results.md.

For each pair of models: the judge's combined results (a wins, b wins, ties, inconsistent orders, prompts with no
verdict), what went wrong with its replies (malformed, refusal, timeout, HTTP error) and how often it picked the
answer shown first (0.5 for a judge with no position bias), then the win rate with its bootstrap interval and the
length-controlled win rate (`ratings.py`) twice: from the judge alone, and from the judge and the human votes
together (each vote one more outcome, weighted as one judged prompt). With three or more models, Bradley–Terry
ratings, judge alone and judge + human, with bootstrap intervals.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.evaluate.ratings import (
    Outcome, bootstrap, bradley_terry, combine_orders, lc_win_rate, oriented, score_of, win_rate,
)
from seedbed.evaluate.tables import markdown_table
from seedbed.recipe import save_recipe

PROBLEMS = ("malformed", "refusal", "timeout", "http")
VOTE_SCORE = {"A": 1.0, "B": 0.0, "tie": 0.5}


def judge_outcomes(pairs: list[dict]) -> tuple[list[Outcome], dict[tuple[str, str], Counter]]:
    """The judge's outcomes (one per prompt and pair whose two orders both have a verdict) and, per pair, the
    counts of results, reply problems and first-position picks."""
    outcomes, counts = [], {}
    for pair in pairs:
        c = counts.setdefault((pair["model_a"], pair["model_b"]), Counter())
        for record in (pair["a_first"], pair["b_first"]):
            if record is None or record["problem"] is not None:
                c["not asked" if record is None else record["problem"]] += 1
            else:
                c["replies"] += 1
                c["first picked" if record["verdict"] == "A" else "second picked" if record["verdict"] == "B" else "tie replies"] += 1
        result = combine_orders(*(r["verdict"] if r else None for r in (pair["a_first"], pair["b_first"])))
        if result is None:
            c["no verdict"] += 1
            continue
        c[result] += 1
        outcomes.append(Outcome(pair["prompt_id"], pair["model_a"], pair["model_b"], score_of(result), "judge",
                                len(pair["answer_a"]), len(pair["answer_b"])))
    return outcomes, counts


def vote_outcomes(votes: list[dict]) -> list[Outcome]:
    return [Outcome(v["prompt_id"], v["first"], v["second"], VOTE_SCORE[v["verdict"]], "human",
                    len(v["answer_first"]), len(v["answer_second"])) for v in votes]


def pair_figures(outcomes: list[Outcome], resamples: int, seed: int) -> dict:
    """Win rate and LC win rate of `model_a` with 95% bootstrap intervals (over prompts)."""
    if not outcomes:
        return {"n": 0, "win_rate": None, "win_rate_ci": None, "lc_win_rate": None, "lc_win_rate_ci": None}
    low, high = bootstrap(outcomes, win_rate, resamples, seed)
    lc_low, lc_high = bootstrap(outcomes, lc_win_rate, resamples, seed)
    return {"n": len(outcomes), "win_rate": win_rate(outcomes), "win_rate_ci": [float(low[0]), float(high[0])],
            "lc_win_rate": lc_win_rate(outcomes), "lc_win_rate_ci": [float(lc_low[0]), float(lc_high[0])]}


def ratings(outcomes: list[Outcome], names: list[str], resamples: int, seed: int) -> dict:
    point = bradley_terry(outcomes, names)
    low, high = bootstrap(outcomes, lambda sample: bradley_terry(sample, names), resamples, seed)
    return {n: {"rating": float(point[i]), "ci": [float(low[i]), float(high[i])]} for i, n in enumerate(names)}


def summarize(pairs: list[dict], votes: list[dict], names: list[str], resamples: int, seed: int) -> dict:
    """Every figure results.json holds (see the module's docstring)."""
    judged, counts = judge_outcomes(pairs)
    voted = vote_outcomes(votes)
    rows = []
    for (a, b), c in counts.items():
        picks = c["first picked"] + c["second picked"]
        rows.append({
            "model_a": a, "model_b": b, "prompts": sum(c[k] for k in ("a", "b", "tie", "inconsistent", "no verdict")),
            "a_wins": c["a"], "b_wins": c["b"], "ties": c["tie"], "inconsistent": c["inconsistent"],
            "no_verdict": c["no verdict"], "replies": c["replies"], **{p: c[p] for p in PROBLEMS},
            "first_position_rate": c["first picked"] / picks if picks else None,
            "human_votes": len(oriented(voted, a, b)),
            "judge": pair_figures(oriented(judged, a, b), resamples, seed),
            "judge+human": pair_figures(oriented(judged + voted, a, b), resamples, seed),
        })
    results = {"pairs": rows, "ratings": None}
    if len(names) >= 3:
        results["ratings"] = {"judge": ratings(judged, names, resamples, seed),
                              "judge+human": ratings(judged + voted, names, resamples, seed)}
    return results


def percent(value: float | None, ci: list[float] | None = None) -> str:
    """A rate as a percentage, with its interval.

    >>> percent(0.625, [0.5, 0.75]), percent(None)
    ('62.5% [50.0, 75.0]', '-')
    """
    if value is None:
        return "-"
    return f"{value:.1%}" + (f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else "")


def markdown(results: dict) -> str:
    """results.md: what was compared and how, then the tables."""
    lines = [
        f"# Judged A/B\n\n{results['prompts']} prompts ({', '.join(results['source'])}); judge: {results['judge']}. "
        "Each pair is judged in both orders; a model wins a prompt only when it wins in both, two different "
        "verdicts count as a tie (inconsistent, as in MT-Bench), and a prompt with a reply lacking a verdict in "
        "either order is left out (no verdict). Win rate: a's wins plus half the ties, 95% bootstrap interval "
        "over prompts. LC: the length-controlled win rate, the logistic fit's preference at equal answer "
        "length (AlpacaEval-LC's length term). First position: how often the judge picked the answer shown "
        "first (0.5: no position bias). Every judgment: judgments.jsonl.\n",
        markdown_table(
            ["a", "b", "prompts", "a wins", "b wins", "ties", "inconsistent", "no verdict", "win rate a", "LC win rate a"],
            [[r["model_a"], r["model_b"], r["prompts"], r["a_wins"], r["b_wins"], r["ties"], r["inconsistent"],
              r["no_verdict"], percent(r["judge"]["win_rate"], r["judge"]["win_rate_ci"]),
              percent(r["judge"]["lc_win_rate"], r["judge"]["lc_win_rate_ci"])] for r in results["pairs"]]),
        "\n## The judge's replies\n",
        markdown_table(
            ["a", "b", "replies with a verdict", "malformed", "refusals", "timeouts", "HTTP errors", "first position"],
            [[r["model_a"], r["model_b"], r["replies"], r["malformed"], r["refusal"], r["timeout"], r["http"],
              percent(r["first_position_rate"])] for r in results["pairs"]]),
    ]
    if any(r["human_votes"] for r in results["pairs"]):
        lines += ["\n## Judge and human votes together\n", markdown_table(
            ["a", "b", "human votes", "win rate a", "LC win rate a"],
            [[r["model_a"], r["model_b"], r["human_votes"],
              percent(r["judge+human"]["win_rate"], r["judge+human"]["win_rate_ci"]),
              percent(r["judge+human"]["lc_win_rate"], r["judge+human"]["lc_win_rate_ci"])]
             for r in results["pairs"]])]
    if results["ratings"]:
        both = results["ratings"]
        lines += ["\n## Bradley–Terry ratings (Elo scale, mean 1000, 95% bootstrap interval)\n", markdown_table(
            ["model", "judge", "judge + human"],
            [[name, *(f"{s[name]['rating']:.0f} [{s[name]['ci'][0]:.0f}, {s[name]['ci'][1]:.0f}]"
                      for s in (both["judge"], both["judge+human"]))] for name in both["judge"]])]
    return "\n".join(lines) + "\n"


def write_results(results: dict, recipe, out: Path) -> None:
    """results.json, results.md and recipe.yaml into `out` (judgments.jsonl is written as judgments come)."""
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "results.md", markdown(results))
    save_recipe(recipe, out / "recipe.yaml", "eval")
