"""Hybrid ranking helpers: a safe FTS5 query from a user's question, and reciprocal rank fusion."""

from __future__ import annotations

import re

# RRF constant k = 60, as in Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and
# individual Rank Learning Methods" (SIGIR 2009): it damps the weight of the very top ranks, so one retriever's
# first place does not outvote agreement further down between both.
RRF_K = 60
MAX_QUERY_TERMS = 64  # a pasted page as a question should not become a thousand-term query


def fts_query(question: str) -> str | None:
    """An FTS5 MATCH expression: each word quoted (so `AND`, `*`, `"`, `:` or `(` in a question are just text),
    joined by OR, so BM25 ranks chunks by the words they share. None when the question has no words.

    >>> fts_query('When was "Zorblax" commissioned? (NEAR* OR)')
    '"when" OR "was" OR "zorblax" OR "commissioned" OR "near" OR "or"'
    """
    terms = list(dict.fromkeys(t.lower() for t in re.findall(r"\w+", question)))[:MAX_QUERY_TERMS]
    return " OR ".join(f'"{t}"' for t in terms) or None  # \w+ never contains a quote


def reciprocal_rank_fusion(*rankings: list[int], k: int = RRF_K) -> dict[int, float]:
    """Fused score per id: the sum over rankings of 1 / (k + rank), ranks counted from 1.

    >>> reciprocal_rank_fusion([7, 8], [8, 9])  # 8 is second and first: it wins
    {7: 0.01639344262295082, 8: 0.03252247488101534, 9: 0.016129032258064516}
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return scores
