"""The per-record stages, run on one chunk of records at a time: normalise, PII, toxicity, quality, language,
decontamination, and the dedup keys (exact hash, MinHash signature) the global stages need.

`ChunkWorker.process` is a plain function of a chunk, so the same code runs inline, in a local process pool,
or on Ray Data (`engines.py`). A stage that fails on a record drops that record with the reason
`<stage>:error` and the error message; the rest of the chunk goes on.

A dropped record's entry keeps the record itself (as it stood when dropped: normalised, and redacted if the PII
stage had run), so a user can read what was dropped and why, not only its id.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any, Callable

import numpy as np

from seedbed.curate.decontaminate import EvalNgrams
from seedbed.curate.dedup import (common_shingles, exact_key, record_shingles, record_signatures, shingle_hashes,
                                  shingle_names)
from seedbed.curate.normalise import normalise, repair_mojibake
from seedbed.curate.quality import check_language, check_record, clean_ends_are_normal
from seedbed.curate.records import Item, answer_in_own_words, map_texts, output_record, set_texts, sides, text_of, texts, turns

# Language before quality: the Gopher rules (stop words, word lengths) are English rules, and a French record
# should be named as French, not as "no stop words" (datatrove's example pipelines order them the same way).
MAP_STAGES = ("normalise", "pii", "toxicity", "language", "quality", "decontaminate")
GLOBAL_STAGES = ("exact_dedup", "near_dedup", "balance", "split")
STAGES = MAP_STAGES + GLOBAL_STAGES
SNIPPET_CHARS = 300
TOXICITY_EDGES = [round(0.1 * k, 1) for k in range(11)]


def new_stats() -> dict[str, Any]:
    # changes: what a modifying stage did, by kind ("mojibake": records whose encoding was repaired)
    return {"records_in": 0, "dropped": 0, "modified": 0, "seconds": 0.0, "reasons": Counter(), "changes": Counter()}


def dropped_entry(item: Item, stage: str, reason: str, detail: str | None = None, text: str | None = None) -> dict:
    """One line of dropped.jsonl: id, source file:line, stage, reason, detail, and the record in its own shape."""
    entry = {"id": item["id"], "source": item["source"], "stage": stage, "reason": f"{stage}:{reason}"}
    if detail:
        entry["detail"] = detail
    entry["record"] = output_record(item)
    if text is not None:  # kept in memory for the datasheet's examples only; popped before dropped.jsonl is written
        entry["snippet"] = text[:SNIPPET_CHARS]
    return entry


def chunk_accounts() -> dict[str, Any]:
    """What the per-record stages count over a chunk: stats per stage, dropped entries, and the histograms."""
    return {"stats": {stage: new_stats() for stage in MAP_STAGES}, "dropped": [], "redactions": Counter(),
            "languages": Counter(), "toxicity_max": [0] * (len(TOXICITY_EDGES) - 1)}


def add_accounts(total: dict[str, Any], part: dict[str, Any]) -> None:
    """Add the counts of one stage attempt (`chunk_accounts`) to the chunk's."""
    for stage, stats in part["stats"].items():
        into = total["stats"][stage]
        into["dropped"] += stats["dropped"]
        into["modified"] += stats["modified"]
        into["reasons"].update(stats["reasons"])
        into["changes"].update(stats["changes"])
    total["dropped"].extend(part["dropped"])
    total["redactions"].update(part["redactions"])
    total["languages"].update(part["languages"])
    total["toxicity_max"] = [a + b for a, b in zip(total["toxicity_max"], part["toxicity_max"])]


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
        result = chunk_accounts()
        result["lengths_before"] = [len(text_of(item)) for item in items]
        r = self.recipe
        # Whether this chunk's answers normally end with a full stop, judged on the chunk as it came in, so that
        # a stage retried record by record (`_guarded`) judges a record as it would have in its chunk.
        self._clean_ends = r.quality.enabled and r.quality.truncation and clean_ends_are_normal(
            (turn.response for item in items for turn in turns(item)), r.quality)
        steps: list[tuple[str, bool, Callable]] = [
            ("normalise", r.normalise.enabled, self._normalise),
            ("pii", self.redactor is not None, self._pii),
            ("toxicity", self.scorer is not None, self._toxicity),
            ("language", r.language.enabled, self._language),
            ("quality", r.quality.enabled, self._quality),
            ("decontaminate", self.eval_ngrams is not None, self._decontaminate),
        ]
        unredacted: dict[int, dict] = {}
        for stage, enabled, step in steps:
            stats = result["stats"][stage]
            stats["records_in"] = len(items)
            if not enabled:
                stats["disabled"] = True
                continue
            if stage == "pii" and (r.dedup.exact or r.dedup.near):
                # Duplicates are judged on the text as the user wrote it (normalised): two requests that differ
                # only in a name are two examples, even though redaction makes them read alike.
                unredacted = {id(item): copy.deepcopy(item["record"]) for item in items}
            start = time.perf_counter()
            items = self._guarded(stage, step, items, result)
            stats["seconds"] = time.perf_counter() - start
        result["kept"] = items
        as_written = [{**item, "record": unredacted.get(id(item), item["record"])} for item in items]
        result["exact"] = np.array([exact_key(text_of(item)) for item in as_written], dtype=np.uint64)
        result.update(self._near_dedup_keys(as_written, result["exact"]))
        return result

    def _near_dedup_keys(self, items: list[Item], exact: np.ndarray) -> dict[str, Any]:
        """What near-dedup needs of the kept records: MinHash signatures of each record (from its shingles, field by
        field) and, for records with answers, of its prompt and its answers apart; each record's shingle hashes
        (prompt side then answer side, flat, with counts); and the shingles common in this chunk, so that
        prepare.py can find a template shared across the whole input and compare records without it (dedup.py)."""
        config = self.recipe.dedup
        if not items or not config.near:
            return {"signatures": np.zeros((len(items), config.num_perm), dtype=np.uint32)}
        split = [sides(item) for item in items]
        prompts = [record_shingles(prompt, config.shingle_size) for prompt, _ in split]
        answers = [record_shingles(answer, config.shingle_size) if any(a.strip() for a in answer) else set()
                   for _, answer in split]
        hashes = [(shingle_hashes(p), shingle_hashes(a)) for p, a in zip(prompts, answers)]
        signatures, side_signatures = [], []
        for p, a in hashes:
            combined, pair = record_signatures(p, a, config)
            signatures.append(combined)
            if pair is not None:
                side_signatures.append(pair)
        keys = {"signatures": np.stack(signatures),
                "side_signatures": (np.stack(side_signatures) if side_signatures
                                    else np.zeros((0, 2, config.num_perm), dtype=np.uint32)),
                "has_answer": np.array([len(a) > 0 for _, a in hashes]),
                "shingles": np.concatenate([np.concatenate([p, a]) for p, a in hashes]),
                "shingle_counts": np.array([(len(p), len(a)) for p, a in hashes], np.int64)}
        if config.template_share < 1:
            _, first = np.unique(exact, return_index=True)  # an exact duplicate counts once
            # Reported generously (half the share a template needs, at least 2 records): the driver adds up the
            # counts of every chunk, and a template's share varies a little from chunk to chunk.
            floor = max(2, int(config.template_share * len(first) / 2))
            common, counts = common_shingles([np.union1d(*hashes[i]) for i in first], floor)
            keys["common"] = {"hashes": common, "counts": counts, "records": len(first),
                              "names": shingle_names([prompts[i] | answers[i] for i in first], common[:20])}
        return keys

    def _guarded(self, stage: str, step: Callable, items: list[Item], result: dict) -> list[Item]:
        """Run a stage on the chunk; if it raises, run it record by record and drop only the records that fail.

        Each attempt counts into accounts of its own, added to the chunk's only when the attempt succeeds: a
        chunk attempt that fails part-way has already dropped some records, and they must not be counted (and
        written to dropped.jsonl) again when the records are retried one by one.
        """
        attempt = chunk_accounts()
        try:
            kept = step(items, attempt)
        except Exception:  # noqa: BLE001 - any failure of a stage must cost a record, never the run
            kept = []
            for item in items:
                attempt = chunk_accounts()
                try:
                    kept.extend(step([item], attempt))
                except Exception as error:  # noqa: BLE001
                    self._drop(result, item, stage, "error", f"{type(error).__name__}: {error}"[:500], text=None)
                    continue
                add_accounts(result, attempt)
            return kept
        add_accounts(result, attempt)
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
        stats = result["stats"]["normalise"]
        for item in items:
            before = texts(item)
            if config.fix_mojibake and any(repair_mojibake(t) != t for t in before):
                stats["changes"]["mojibake"] += 1
            map_texts(item, lambda text: normalise(text, config))
            changed += texts(item) != before
        stats["modified"] += changed
        return items

    def _pii(self, items: list[Item], result: dict) -> list[Item]:
        # A record's fields are redacted together: a value found in one field is replaced by the same placeholder
        # wherever it occurs in the record (PIIRedactor.redact_records).
        kept = []
        for item, (new, counts) in zip(items, self.redactor.redact_records([texts(item) for item in items])):
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
        whole = self.scorer.score_many([text_of(item) for item in items])
        if self.recipe.toxicity.scope == "answers":
            scores = self.scorer.score_many([answer_in_own_words(item) for item in items])
        else:
            scores = whole
        kept = []
        for item, score, score_whole in zip(items, scores, whole):
            worst = max(score.values(), default=0.0)
            result["toxicity_max"][min(int(worst * 10), 9)] += 1
            flagged = self.scorer.flagged(score)
            if flagged:
                top = max(flagged, key=lambda c: score[c])
                self._drop(result, item, "toxicity", top, ", ".join(f"{c}={score[c]:.2f}" for c in flagged))
            else:
                kept.append(item)
                if self.scorer.flagged(score_whole):  # kept, and counted: the words are the request's, not the answer's
                    result["stats"]["toxicity"]["changes"]["kept: toxic only in the request or copied from it"] += 1
        return kept

    def _quality(self, items: list[Item], result: dict) -> list[Item]:
        kept = []
        for item in items:
            rule = check_record(item, self.recipe.quality, self._clean_ends)
            if rule:
                self._drop(result, item, "quality", rule)
            else:
                kept.append(item)
        return kept

    def _language(self, items: list[Item], result: dict) -> list[Item]:
        kept = []
        for item in items:
            language, reason = check_language(texts(item), self.recipe.language)
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
