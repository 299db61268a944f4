"""The per-record stages, run on one chunk of records at a time: normalise, PII, toxicity, quality, language,
decontamination, and the dedup keys (exact hash, MinHash signature) the global stages need.

`ChunkWorker.process` is a plain function of a chunk, so the same code runs inline, in a local process pool,
or on Ray Data (`engines.py`). A stage that fails on a record drops that record with the reason
`<stage>:error` and the error message; the rest of the chunk goes on.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

import numpy as np

from seedbed.curate.decontaminate import EvalNgrams
from seedbed.curate.dedup import exact_key, signature
from seedbed.curate.normalise import normalise
from seedbed.curate.quality import check_language, check_quality
from seedbed.curate.records import Item, map_texts, set_texts, text_of, texts

# Language before quality: the Gopher rules (stop words, word lengths) are English rules, and a French record
# should be named as French, not as "no stop words" (datatrove's example pipelines order them the same way).
MAP_STAGES = ("normalise", "pii", "toxicity", "language", "quality", "decontaminate")
GLOBAL_STAGES = ("exact_dedup", "near_dedup", "balance", "split")
STAGES = MAP_STAGES + GLOBAL_STAGES
SNIPPET_CHARS = 300
TOXICITY_EDGES = [round(0.1 * k, 1) for k in range(11)]


def new_stats() -> dict[str, Any]:
    return {"records_in": 0, "dropped": 0, "modified": 0, "seconds": 0.0, "reasons": Counter()}


def dropped_entry(item: Item, stage: str, reason: str, detail: str | None = None, text: str | None = None) -> dict:
    entry = {"id": item["id"], "source": item["source"], "stage": stage, "reason": f"{stage}:{reason}"}
    if detail:
        entry["detail"] = detail
    if text is not None:  # kept in memory for the datasheet's examples only; never written to dropped.jsonl
        entry["snippet"] = text[:SNIPPET_CHARS]
    return entry


class ChunkWorker:
    """Holds what the stages load once per process (NER model, classifier, evaluation n-grams)."""

    def __init__(self, recipe):
        self.recipe = recipe
        self.redactor = self.scorer = None
        if recipe.pii.enabled:
            from seedbed.curate.pii import PIIRedactor

            self.redactor = PIIRedactor(recipe.pii)
        if recipe.toxicity.enabled:
            from seedbed.curate.toxicity import ToxicityScorer

            self.scorer = ToxicityScorer(recipe.toxicity)
        self.eval_ngrams = EvalNgrams.from_files(recipe.decontaminate) if recipe.decontaminate.eval_sets else None

    def process(self, items: list[Item]) -> dict[str, Any]:
        result: dict[str, Any] = {
            "stats": {stage: new_stats() for stage in MAP_STAGES}, "dropped": [], "redactions": Counter(),
            "languages": Counter(), "toxicity_max": [0] * (len(TOXICITY_EDGES) - 1),
            "lengths_before": [len(text_of(item)) for item in items],
        }
        r = self.recipe
        steps: list[tuple[str, bool, Callable]] = [
            ("normalise", r.normalise.enabled, self._normalise),
            ("pii", self.redactor is not None, self._pii),
            ("toxicity", self.scorer is not None, self._toxicity),
            ("language", r.language.enabled, self._language),
            ("quality", r.quality.enabled, self._quality),
            ("decontaminate", self.eval_ngrams is not None, self._decontaminate),
        ]
        for stage, enabled, step in steps:
            stats = result["stats"][stage]
            stats["records_in"] = len(items)
            if not enabled:
                stats["disabled"] = True
                continue
            start = time.perf_counter()
            items = self._guarded(stage, step, items, result)
            stats["seconds"] = time.perf_counter() - start
        result["kept"] = items
        result["exact"] = np.array([exact_key(text_of(item)) for item in items], dtype=np.uint64)
        config = r.dedup
        result["signatures"] = (np.stack([signature(text_of(item), config) for item in items]) if items and config.near
                                else np.zeros((len(items), config.num_perm), dtype=np.uint32))
        return result

    def _guarded(self, stage: str, step: Callable, items: list[Item], result: dict) -> list[Item]:
        """Run a stage on the chunk; if it raises, run it record by record and drop only the records that fail."""
        try:
            return step(items, result)
        except Exception:  # noqa: BLE001 - any failure of a stage must cost a record, never the run
            kept = []
            for item in items:
                try:
                    kept.extend(step([item], result))
                except Exception as error:  # noqa: BLE001
                    self._drop(result, item, stage, "error", f"{type(error).__name__}: {error}"[:500], text=None)
            return kept

    def _drop(self, result: dict, item: Item, stage: str, reason: str, detail: str | None = None,
              text: str | None = "") -> None:
        stats = result["stats"][stage]
        stats["dropped"] += 1
        stats["reasons"][f"{stage}:{reason}"] += 1
        result["dropped"].append(dropped_entry(item, stage, reason, detail, text_of(item) if text == "" else text))

    # ---- the stages: each takes and returns the chunk's surviving items ------------------------------------

    def _normalise(self, items: list[Item], result: dict) -> list[Item]:
        config, changed = self.recipe.normalise, 0
        for item in items:
            before = texts(item)
            map_texts(item, lambda text: normalise(text, config))
            changed += texts(item) != before
        result["stats"]["normalise"]["modified"] += changed
        return items

    def _pii(self, items: list[Item], result: dict) -> list[Item]:
        fields = [texts(item) for item in items]
        redacted = iter(self.redactor.redact_many([t for f in fields for t in f]))
        kept = []
        for item, item_fields in zip(items, fields):
            counts: Counter[str] = Counter()
            new = []
            for _ in item_fields:
                text, found = next(redacted)
                new.append(text)
                counts.update(found)
            if counts:
                result["redactions"].update(counts)
                result["stats"]["pii"]["modified"] += 1
            set_texts(item, new)  # even a dropped record is redacted before it is shown as an example
            if counts and self.recipe.pii.action == "drop":
                self._drop(result, item, "pii", "contains_pii", ", ".join(sorted(counts)))
            else:
                kept.append(item)
        return kept

    def _toxicity(self, items: list[Item], result: dict) -> list[Item]:
        scores = self.scorer.score_many([text_of(item) for item in items])
        kept = []
        for item, score in zip(items, scores):
            worst = max(score.values(), default=0.0)
            result["toxicity_max"][min(int(worst * 10), 9)] += 1
            flagged = self.scorer.flagged(score)
            if flagged:
                top = max(flagged, key=lambda c: score[c])
                self._drop(result, item, "toxicity", top, ", ".join(f"{c}={score[c]:.2f}" for c in flagged))
            else:
                kept.append(item)
        return kept

    def _quality(self, items: list[Item], result: dict) -> list[Item]:
        kept = []
        for item in items:
            rule = check_quality(text_of(item), self.recipe.quality)
            if rule:
                self._drop(result, item, "quality", rule)
            else:
                kept.append(item)
        return kept

    def _language(self, items: list[Item], result: dict) -> list[Item]:
        kept = []
        for item in items:
            language, reason = check_language(text_of(item), self.recipe.language)
            result["languages"][language] += 1
            if reason:
                self._drop(result, item, "language", reason)
            else:
                kept.append(item)
        return kept

    def _decontaminate(self, items: list[Item], result: dict) -> list[Item]:
        kept = []
        n = self.recipe.decontaminate.ngram
        for item in items:
            if self.eval_ngrams.overlaps(text_of(item)):
                self._drop(result, item, "decontaminate", f"{n}gram_overlap")
            else:
                kept.append(item)
        return kept
