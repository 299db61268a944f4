"""From verdicts to figures: combining a judge's two orders, win rates with bootstrap intervals, the
length-controlled win rate and Bradley–Terry ratings.

An `Outcome` is one comparison of two models on one prompt: `score` 1 when `model_a` is better, 0 when `model_b`
is, 0.5 for a tie. The judge gives one outcome per prompt and pair (its two orders combined, `combine_orders`); a
human vote is one outcome as it stands.

- Win rate of a over b: the mean score over their outcomes (a tie is half a win, as in AlpacaEval and MT-Bench's
  "win rate with ties"). 95% interval: percentile bootstrap over prompts (a resample keeps all of a prompt's
  outcomes together, since they share its difficulty).
- Length-controlled win rate, after AlpacaEval-LC (Dubois et al. 2024): per pair, the logistic regression
  logit P(a better) = θ + β·tanh(Δ / σ), Δ = len(a's answer) − len(b's) in characters and σ the standard
  deviation of Δ over the pair's outcomes (AlpacaEval's standardised tanh), a tie as half a win (two rows
  weighted ½); the LC win rate is σ(θ), the preference predicted at equal length. AlpacaEval's GLM also fits an
  instruction-difficulty term across many models; with a handful of models per run we leave it out. β has a
  weak Gaussian prior (variance `LC_PRIOR`; it keeps β finite when length alone separates the outcomes), θ none.
- Bradley–Terry (three or more models): P(a beats b) = 1 / (1 + exp(θ_b − θ_a)), fitted by maximum likelihood
  as a logistic regression with no intercept on rows +1 at a, −1 at b (Chatbot Arena's method), a tie again two
  half rows; reported on the Elo scale, 1000 + 400·θ / ln 10, θ summing to zero. A weak Gaussian prior on each θ
  (variance `BT_PRIOR`) keeps ratings finite when a model wins every comparison, where the MLE is infinite.
  Both fits are `fit_logistic` (scipy's BFGS on the weighted log-likelihood); `choix` takes no ties and no
  weights, and scikit-learn is ~100x slower per fit, which the bootstrap's thousand refits feel.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

ELO_SCALE = 400 / math.log(10)
LC_PRIOR = 10.0  # variance of the Gaussian prior on the length coefficient β (finite when length separates)
BT_PRIOR = 10.0  # variance of the Gaussian prior on each log-strength: ±3 log-odds (±1400 Elo) is likely
LEVEL = 0.95


@dataclass(frozen=True)
class Outcome:
    prompt_id: str
    model_a: str
    model_b: str
    score: float  # 1: model_a better; 0: model_b better; 0.5: tie
    source: str  # "judge" or "human"
    length_a: int = 0  # characters of model_a's answer
    length_b: int = 0


def combine_orders(a_first: str | None, b_first: str | None) -> str | None:
    """One outcome from the judge's two orders, as MT-Bench does: a model wins only when it wins in both orders;
    two different verdicts are "inconsistent", which counts as a tie. `a_first` is the verdict with a shown as
    assistant A, `b_first` with b shown as A. None when either order has no verdict.

    >>> combine_orders("A", "B"), combine_orders("B", "A"), combine_orders("tie", "tie")
    ('a', 'b', 'tie')
    >>> combine_orders("A", "A")  # always the first position: position bias, not a preference
    'inconsistent'
    """
    if a_first is None or b_first is None:
        return None
    swapped = {"A": "B", "B": "A", "tie": "tie"}[b_first]  # b_first's verdict in a-first terms
    if a_first != swapped:
        return "inconsistent"
    return {"A": "a", "B": "b", "tie": "tie"}[a_first]


def score_of(result: str) -> float:
    """A combined result as model a's score: a 1, b 0, tie or inconsistent 0.5."""
    return {"a": 1.0, "b": 0.0}.get(result, 0.5)


def oriented(outcomes: list[Outcome], a: str, b: str) -> list[Outcome]:
    """The outcomes between a and b, each turned so that `model_a` is a."""
    out = []
    for o in outcomes:
        if (o.model_a, o.model_b) == (a, b):
            out.append(o)
        elif (o.model_a, o.model_b) == (b, a):
            out.append(Outcome(o.prompt_id, a, b, 1 - o.score, o.source, o.length_b, o.length_a))
    return out


def win_rate(outcomes: list[Outcome]) -> float:
    """Mean score of `model_a` (NaN with no outcomes).

    >>> win_rate([Outcome("1", "a", "b", 1.0, "judge"), Outcome("2", "a", "b", 0.5, "judge")])
    0.75
    """
    return float(np.mean([o.score for o in outcomes])) if outcomes else float("nan")


def bootstrap(outcomes: list[Outcome], statistic: Callable[[list[Outcome]], np.ndarray | float], resamples: int,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) 95% percentile interval of `statistic` over `resamples` resamples of the prompts.

    Written here rather than with `scipy.stats.bootstrap`: the unit resampled is a prompt with all its outcomes,
    and the statistic (a Bradley–Terry refit) is a vector of ratings.
    """
    by_prompt: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_prompt[o.prompt_id].append(o)
    groups = list(by_prompt.values())
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picks = rng.integers(0, len(groups), len(groups))
        values.append(np.atleast_1d(statistic([o for i in picks for o in groups[i]])))
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.nanpercentile(np.array(values, dtype=float), [tail, 100 - tail], axis=0)
    return low, high


def logistic_rows(outcomes: list[Outcome], features: Callable[[Outcome], list[float]]):
    """The rows of a soft-label logistic fit: each outcome twice, y = 1 weighted by its score and y = 0 by the
    rest (a tie: two half rows), rows of weight 0 left out."""
    X, y, w = [], [], []
    for o in outcomes:
        for label, weight in ((1, o.score), (0, 1 - o.score)):
            if weight > 0:
                X.append(features(o))
                y.append(label)
                w.append(weight)
    return np.array(X, dtype=float).reshape(len(y), -1), np.array(y, dtype=float), np.array(w, dtype=float)


def fit_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: np.ndarray) -> np.ndarray:
    """The coefficients β maximising Σ w·log P(y | x) − ½ Σ l2_j·β_j², P(y = 1 | x) = σ(x·β): weighted logistic
    regression with a Gaussian prior of variance 1 / l2_j on β_j (l2_j = 0: none), by scipy's BFGS.

    Not scikit-learn's LogisticRegression: the bootstrap refits these models a thousand times, and one of its fits
    took ~100 ms against ~5 ms here (2 busy CPU cores); BFGS rather than L-BFGS-B for the same reason (a handful
    of parameters, and L-BFGS-B's compiled step cost 6 ms a call there).
    """
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    sign = 2 * y - 1  # (rows,)

    def loss(beta):
        margin = sign * (X @ beta)
        value = -np.sum(w * log_expit(margin)) + 0.5 * np.sum(l2 * beta**2)
        grad = -X.T @ (w * sign * expit(-margin)) + l2 * beta
        return value, grad

    start = np.zeros(X.shape[1])
    return minimize(loss, start, jac=True, method="BFGS", options={"maxiter": 500, "gtol": 1e-9}).x


def lc_win_rate(outcomes: list[Outcome]) -> float:
    """The length-controlled win rate of `model_a`: σ(θ) of the fit above, the preference at equal length.

    >>> same = [Outcome(str(i), "a", "b", s, "judge", 100, 100) for i, s in enumerate([1, 1, 0, 0.5])]
    >>> round(lc_win_rate(same), 3)   # equal lengths: the plain win rate
    0.625
    """
    if not outcomes:
        return float("nan")
    deltas = np.array([o.length_a - o.length_b for o in outcomes], dtype=float)
    spread = float(deltas.std()) or 1.0
    X, y, w = logistic_rows(outcomes, lambda o: [1.0, math.tanh((o.length_a - o.length_b) / spread)])
    theta, _ = fit_logistic(X, y, w, l2=np.array([0.0, 1 / LC_PRIOR]))  # no prior on θ, a weak one on β
    return float(1 / (1 + math.exp(-theta)))


def bradley_terry(outcomes: list[Outcome], models: list[str], prior: float | None = BT_PRIOR) -> np.ndarray:
    """Elo-scale Bradley–Terry ratings of `models` (mean 1000) from the outcomes; `prior` None: the plain MLE.

    >>> exact = [Outcome("1", "a", "b", 2 / 3, "judge"), Outcome("2", "b", "c", 2 / 3, "judge"),
    ...          Outcome("3", "a", "c", 0.8, "judge")]
    >>> np.round(bradley_terry(exact, ["a", "b", "c"], prior=None) - 1000).tolist()  # ±400·ln 2 / ln 10
    [120.0, 0.0, -120.0]
    """
    index = {m: i for i, m in enumerate(models)}

    def row(o: Outcome) -> list[float]:
        x = [0.0] * len(models)
        x[index[o.model_a]], x[index[o.model_b]] = 1.0, -1.0
        return x

    X, y, w = logistic_rows(outcomes, row)
    # With no prior the ratings are fixed only up to a constant; L-BFGS from zero keeps them summing to zero.
    theta = fit_logistic(X, y, w, l2=np.full(len(models), 0.0 if prior is None else 1 / prior))
    return 1000 + ELO_SCALE * (theta - theta.mean())
