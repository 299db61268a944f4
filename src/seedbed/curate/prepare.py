"""`seedbed data prepare`: curate instruction or text data before training, accounting for every record.

    seedbed data prepare raw.jsonl more/ --out data/clean --recipe recipes/data.yaml

Stages, in order: normalise, pii, toxicity, language, quality, decontaminate (per record, in parallel over
chunks: `stages.py`), then exact_dedup, near_dedup, balance, split (over the survivors' compact keys: an
8-byte hash, the LSH band hashes, id and category). Records in flight spill to a work folder, so memory
stays bounded on inputs larger than RAM.

Writes to OUT: train.jsonl and validation.jsonl (records in their input shape, with their ids), dropped.jsonl
(id, source file:line, stage, reason and detail of every dropped record, and the record itself), report.json
(counts that reconcile: input = kept + dropped, and per stage records_in - dropped = records_out), report.html (the
datasheet), and recipe.yaml. All are written in a work folder beside OUT that takes OUT's place at the end, so OUT
never holds half a run; an OUT that is, holds or sits inside an input is refused, and an existing OUT is replaced
only if Seedbed wrote it (`seedbed.atomic`). A run killed part-way leaves OUT as it was; the next run removes its
work folder and, on the same inputs and recipe, writes the same records.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from seedbed.atomic import atomic_dir, check_output_dir
from seedbed.curate.balance import balance, histogram, split
from seedbed.curate.dedup import band_keys, near_duplicate_clusters, record_signatures, without_template
from seedbed.curate.engines import default_workers, run_local, run_ray
from seedbed.curate.records import Item, output_record, text_of, to_item
from seedbed.curate.stages import STAGES, TOXICITY_EDGES, dropped_entry, new_stats
from seedbed.data.mapping import apply_mapping
from seedbed.data.readers import Problem, data_error, data_files, id_prefixes, stream_records
from seedbed.data.shapes import BadField
from seedbed.recipe import DataRecipe, save_recipe

TEMPLATE_SHARE_TO_RESIGN = 0.1  # see _compare_without_template
LENGTH_EDGES = [0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
OUTPUTS = ("train.jsonl", "validation.jsonl", "dropped.jsonl", "report.json", "report.html", "recipe.yaml")


def prepare(recipe: DataRecipe, on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the report (also written to OUT/report.json).

    >>> from seedbed.recipe import DataRecipe
    >>> report = prepare(DataRecipe(inputs=["raw.jsonl"], out="clean"))  # doctest: +SKIP
    >>> report["input_records"] == report["kept"]["total"] + report["dropped"]["total"]  # doctest: +SKIP
    True
    """
    if not recipe.inputs:
        raise data_error([Problem("-", 0, "inputs", "no input files given")])
    check_output_dir(recipe.out, recipe.inputs)  # never over, around or inside the data it reads
    with atomic_dir(recipe.out, replace=True) as work:  # OUT is the old run or this one, whole, never a mix
        report = _run(recipe, work, on_progress)
    return report


def _chunks(recipe: DataRecipe, problems: list[Problem], inputs: list[dict]) -> Iterator[list[Item]]:
    """Validated records in chunks. After the first malformed record nothing more is sent to the stages, but the
    files are still read to the end so that the error lists every problem, not just the first."""
    chunk: list[Item] = []
    files: dict[str, dict] = {}
    prefixes = id_prefixes(data_files(recipe.inputs))
    for file, line, record in stream_records(recipe.inputs, problems):
        summary = files.get(file)
        if summary is None:
            summary = files[file] = {"path": file, "records": 0, "shapes": Counter()}
            inputs.append(summary)
        summary["records"] += 1
        try:
            if recipe.mapping is not None:  # the user's own fields, as a chat (seedbed.data.mapping)
                record = apply_mapping(record, recipe.mapping, f"{prefixes.get(file, Path(file).name)}:{line}")
            item = to_item(record, file, line, prefixes.get(file))
        except BadField as bad:
            problems.append(Problem(file, line, bad.field, bad.message))
            continue
        summary["shapes"][item["shape"]] += 1
        if problems:
            continue
        chunk.append(item)
        if len(chunk) >= recipe.chunk_size:
            yield chunk
            chunk = []
    if chunk and not problems:
        yield chunk


class _Accounts:
    """Everything the report needs, gathered from chunk results and global stages."""

    def __init__(self, recipe: DataRecipe, work: Path):
        self.stats = {stage: new_stats() for stage in STAGES}
        self.redactions: Counter[str] = Counter()
        self.languages: Counter[str] = Counter()
        self.toxicity = [0] * (len(TOXICITY_EDGES) - 1)
        self.length_before = [0] * len(LENGTH_EDGES)
        self.examples: dict[str, list[dict]] = {}
        self.examples_per_reason = recipe.examples_per_reason
        self.dropped_file = (work / "dropped.jsonl").open("w", encoding="utf-8")
        self.dropped = 0

    def add_dropped(self, entry: dict) -> None:
        snippet = entry.pop("snippet", None)
        self.dropped_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.dropped += 1
        shown = self.examples.setdefault(entry["reason"], [])
        if snippet is not None and len(shown) < self.examples_per_reason:
            shown.append({"id": entry["id"], "text": snippet, **({"detail": entry["detail"]} if "detail" in entry else {})})

    def add_chunk(self, result: dict) -> None:
        for stage, chunk_stats in result["stats"].items():
            total = self.stats[stage]
            for key in ("records_in", "dropped", "modified", "seconds"):
                total[key] += chunk_stats[key]
            total["reasons"].update(chunk_stats["reasons"])
            total["changes"].update(chunk_stats.get("changes", {}))
            total["disabled"] = chunk_stats.get("disabled", False)
        for entry in result["dropped"]:
            self.add_dropped(entry)
        self.redactions.update(result["redactions"])
        self.languages.update(result["languages"])
        self.toxicity = [a + b for a, b in zip(self.toxicity, result["toxicity_max"])]
        for length in result["lengths_before"]:
            self.length_before[_bin(length)] += 1


def _bin(length: int) -> int:
    return int(np.searchsorted(LENGTH_EDGES, length, side="right")) - 1


def _run(recipe: DataRecipe, work: Path, on_progress) -> dict[str, Any]:
    started = time.perf_counter()
    workers = recipe.workers or default_workers()
    problems: list[Problem] = []
    inputs: list[dict] = []
    accounts = _Accounts(recipe, work)
    kept_file = (work / "kept.jsonl").open("w", encoding="utf-8")
    signatures_file = (work / "signatures.u32").open("wb")
    shingles_file = (work / "shingles.u32").open("wb")
    sides_file = (work / "sides.u32").open("wb")
    shingle_counts: list[np.ndarray] = []  # (records, 2): prompt and answer shingles of each kept record
    has_answer: list[np.ndarray] = []
    common = _CommonShingles()
    ids: list[str] = []
    categories: list[str] = []
    exact_keys: list[np.ndarray] = []
    bands: list[np.ndarray] = []

    chunks = _chunks(recipe, problems, inputs)
    if recipe.engine == "ray":
        results = run_ray(recipe, chunks, workers, recipe.ray_address)
    else:
        results = run_local(recipe, chunks, workers)
    map_started = time.perf_counter()
    for result in results:
        accounts.add_chunk(result)
        for item in result["kept"]:
            kept_file.write(json.dumps(item, ensure_ascii=False) + "\n")
            ids.append(item["id"])
            categories.append(item["category"])
        exact_keys.append(result["exact"])
        if recipe.dedup.near and len(result["kept"]):
            result["signatures"].astype(np.uint32).tofile(signatures_file)
            bands.append(band_keys(result["signatures"], recipe.dedup))
            result["shingles"].astype(np.uint32).tofile(shingles_file)
            result["side_signatures"].astype(np.uint32).tofile(sides_file)
            shingle_counts.append(result["shingle_counts"])
            has_answer.append(result["has_answer"])
            if "common" in result:
                common.add(result["common"])
        if on_progress:
            on_progress(result["stats"]["normalise"]["records_in"])
    kept_file.close()
    signatures_file.close()
    shingles_file.close()
    sides_file.close()
    map_seconds = time.perf_counter() - map_started
    if problems:
        accounts.dropped_file.close()
        raise data_error(problems)

    n = len(ids)
    drop_stage: dict[int, tuple[str, str, str | None]] = {}  # index -> (stage, reason, detail)
    clusters: list[dict] = []

    # exact_dedup: the first record of each hash is kept
    start = time.perf_counter()
    keys = np.concatenate(exact_keys) if exact_keys else np.zeros(0, np.uint64)
    if recipe.dedup.exact and n:
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        firsts = first[inverse]
        for i in np.flatnonzero(firsts != np.arange(n)):
            drop_stage[int(i)] = ("exact_dedup", "duplicate", f"duplicate of {ids[firsts[i]]}")
        groups = Counter(int(f) for f in firsts[firsts != np.arange(n)])
        clusters += [{"kind": "exact", "kept": ids[k], "size": c + 1, "similarity": 1.0} for k, c in groups.items()]
    _global_stats(accounts, "exact_dedup", n, drop_stage, start, disabled=not recipe.dedup.exact)

    # near_dedup over the exact survivors
    start = time.perf_counter()
    survivors = np.array([i for i in range(n) if i not in drop_stage], dtype=np.int64)
    template: dict[str, Any] = {}
    if recipe.dedup.near and len(survivors) > 1:
        num_perm = recipe.dedup.num_perm
        signatures = np.memmap(work / "signatures.u32", dtype=np.uint32, mode="r+").reshape(n, num_perm)
        answered = np.concatenate(has_answer)
        side_row = np.where(answered, np.cumsum(answered) - 1, -1)
        sides = (np.memmap(work / "sides.u32", dtype=np.uint32, mode="r+").reshape(-1, 2, num_perm)
                 if answered.any() else np.zeros((0, 2, num_perm), np.uint32))
        all_bands = np.concatenate(bands)
        counts = np.concatenate(shingle_counts)
        compared = counts.copy()  # shingles each side is compared on, the template's left out below
        template = _compare_without_template(recipe, work, common, counts, survivors, signatures, sides, side_row,
                                             all_bands, compared)
        found = near_duplicate_clusters(all_bands[survivors], _Rows(signatures, survivors), recipe.dedup.threshold,
                                        sides=_SideRows(sides, side_row, survivors, compared),
                                        prompt_threshold=recipe.dedup.prompt_threshold)
        near_groups: dict[int, list] = {}
        for local, (root, similarity) in found.items():
            i, kept = int(survivors[local]), int(survivors[root])
            drop_stage[i] = ("near_dedup", "near_duplicate", f"near-duplicate of {ids[kept]} (Jaccard ~{similarity:.2f})")
            near_groups.setdefault(kept, []).append((ids[i], similarity))
        clusters += [{"kind": "near", "kept": ids[k], "size": len(v) + 1, "dropped": [d for d, _ in v][:10],
                      "similarity": round(min(s for _, s in v), 3)} for k, v in near_groups.items()]
        del signatures, sides
    _global_stats(accounts, "near_dedup", len(survivors), drop_stage, start, disabled=not recipe.dedup.near)

    # balance: caps per category (and upsampling copies, train only)
    start = time.perf_counter()
    remaining = [i for i in range(n) if i not in drop_stage]
    category_before = histogram(categories[i] for i in remaining)
    copies: dict[int, int] = {}
    if recipe.balance.enabled:
        capped, local_copies = balance([ids[i] for i in remaining], [categories[i] for i in remaining], recipe.balance)
        for local in capped:
            drop_stage[remaining[local]] = ("balance", "category_cap", f"category {categories[remaining[local]]!r} over its cap")
        copies = {remaining[local]: c for local, c in local_copies.items()}
    _global_stats(accounts, "balance", len(remaining), drop_stage, start, disabled=not recipe.balance.enabled)

    # split
    start = time.perf_counter()
    final = [i for i in range(n) if i not in drop_stage]
    validation = {final[local] for local in split([ids[i] for i in final], [categories[i] for i in final], recipe.split)}
    _global_stats(accounts, "split", len(final), drop_stage, start)

    # write outputs, streaming the spilled records once
    counts = Counter()
    length_after = [0] * len(LENGTH_EDGES)
    with (work / "kept.jsonl").open(encoding="utf-8") as kept_in, \
            (work / "train.jsonl").open("w", encoding="utf-8") as train_out, \
            (work / "validation.jsonl").open("w", encoding="utf-8") as val_out:
        for i, line in enumerate(kept_in):
            if i in drop_stage:
                stage, reason, detail = drop_stage[i]
                item = json.loads(line)
                accounts.add_dropped(dropped_entry(item, stage, reason, detail, text_of(item)))
                continue
            item = json.loads(line)
            record = json.dumps(output_record(item), ensure_ascii=False)
            length_after[_bin(len(text_of(item)))] += 1  # measured as length_before is, on the record's text
            if i in validation:
                val_out.write(record + "\n")
                counts["validation"] += 1
            else:
                for _ in range(1 + copies.get(i, 0)):
                    train_out.write(record + "\n")
                counts["train"] += 1
                counts["train_copies"] += copies.get(i, 0)
    accounts.dropped_file.close()
    (work / "kept.jsonl").unlink()
    (work / "signatures.u32").unlink()
    (work / "shingles.u32").unlink()
    (work / "sides.u32").unlink()

    total_seconds = time.perf_counter() - started
    report = _report(recipe, inputs, accounts, counts, clusters, category_before,
                     histogram(categories[i] for i in final), LENGTH_EDGES, length_after, workers, total_seconds,
                     map_seconds, template)
    (work / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    from seedbed.curate.datasheet import render_datasheet

    (work / "report.html").write_text(render_datasheet(report), encoding="utf-8")
    save_recipe(recipe, work / "recipe.yaml", "data")
    return report


class _CommonShingles:
    """Shingle counts the chunks report (each chunk: the shingles common in it), added up over the input."""

    def __init__(self):
        self.counts: Counter[int] = Counter()
        self.names: dict[int, str] = {}
        self.records = 0

    def add(self, chunk: dict) -> None:
        self.counts.update(dict(zip(chunk["hashes"].tolist(), chunk["counts"].tolist())))
        self.names.update(chunk["names"])
        self.records += chunk["records"]

    def template(self, share: float, min_records: int) -> tuple[np.ndarray, int]:
        """(sorted hashes of the template's shingles, the count that made a shingle template)."""
        needed = max(min_records, int(np.ceil(share * self.records)))
        return np.array(sorted(h for h, c in self.counts.items() if c >= needed), dtype=np.uint32), needed


def _compare_without_template(recipe: DataRecipe, work: Path, common: _CommonShingles, shingle_counts: np.ndarray,
                              survivors: np.ndarray, signatures: np.ndarray, sides: np.ndarray, side_row: np.ndarray,
                              all_bands: np.ndarray, compared: np.ndarray) -> dict[str, Any]:
    """Find the shingles shared by a large share of the input's records (a template: dedup.py) and give every
    surviving record that holds some new signatures (whole, prompt, answer), band keys and `compared` counts
    from its other shingles, side by side (a side made of nothing but template keeps all its shingles); returns
    what the report says about it."""
    config = recipe.dedup
    template, needed = common.template(config.template_share, config.template_min_records)
    out: dict[str, Any] = {"records_needed": needed, "shingles": int(len(template)), "records_compared_without": 0}
    if not len(template):
        return out
    sizes = shingle_counts.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    flat = np.memmap(work / "shingles.u32", dtype=np.uint32, mode="r")
    # Template shingles that are a small part of a record cannot make it anyone's duplicate (two records sharing
    # only a tenth of their shingles have a Jaccard of ~0.05), so only records that are TEMPLATE_SHARE_TO_RESIGN
    # template or more are signed again: all of a templated dataset, none of ordinary prose where a few common
    # phrases ("the of the") pass the share.
    shared = np.zeros(len(sizes), np.int64)
    for lo in range(0, len(sizes), 100_000):  # in blocks, so memory stays bounded on large inputs
        hi = min(lo + 100_000, len(sizes))
        hits = np.isin(np.asarray(flat[offsets[lo]:offsets[hi]]), template).astype(np.int64)
        starts = np.minimum(offsets[lo:hi] - offsets[lo], max(len(hits) - 1, 0))
        shared[lo:hi] = np.add.reduceat(hits, starts) if len(hits) else 0
        shared[lo:hi][sizes[lo:hi] == 0] = 0
    candidates = [int(i) for i in survivors if shared[i] >= TEMPLATE_SHARE_TO_RESIGN * sizes[i] and shared[i]]
    changed = []
    for i in candidates:
        start, n_prompt, n_answer = offsets[i], shingle_counts[i, 0], shingle_counts[i, 1]
        prompt = np.asarray(flat[start:start + n_prompt])
        answer = np.asarray(flat[start + n_prompt:start + n_prompt + n_answer])
        new_prompt = without_template(prompt, template)
        new_answer = without_template(answer, template) if n_answer else None
        if new_prompt is None and new_answer is None:
            continue
        combined, pair = record_signatures(prompt if new_prompt is None else new_prompt,
                                           answer if new_answer is None else new_answer, config)
        signatures[i] = combined
        if pair is not None:
            sides[side_row[i]] = pair
        compared[i] = (n_prompt if new_prompt is None else len(new_prompt),
                       n_answer if new_answer is None else len(new_answer))
        changed.append(int(i))
    if changed:
        all_bands[changed] = band_keys(np.asarray(signatures[changed]), config)
    del flat
    named = sorted(((-common.counts[h], common.names[h]) for h in template.tolist() if h in common.names))[:10]
    out.update(records_compared_without=len(changed),
               examples=[{"shingle": name, "records": -count} for count, name in named])
    return out


class _SideRows:
    """(prompt signature, answer signature, prompt shingles, answer shingles) of the surviving records that have
    answers, None for the others."""

    def __init__(self, sides: np.ndarray, side_row: np.ndarray, survivors: np.ndarray, compared: np.ndarray):
        self.sides, self.side_row, self.survivors, self.compared = sides, side_row, survivors, compared

    def __getitem__(self, local: int):
        i = self.survivors[local]
        row = self.side_row[i]
        if row < 0:
            return None
        return self.sides[row, 0], self.sides[row, 1], int(self.compared[i, 0]), int(self.compared[i, 1])


class _Rows:
    """Signatures of the surviving records, indexed by their position among survivors."""

    def __init__(self, signatures: np.ndarray, survivors: np.ndarray):
        self.signatures, self.survivors = signatures, survivors

    def __getitem__(self, local: int) -> np.ndarray:
        return self.signatures[self.survivors[local]]


def _global_stats(accounts: _Accounts, stage: str, records_in: int, drop_stage: dict, start: float,
                  disabled: bool = False) -> None:
    stats = accounts.stats[stage]
    reasons = Counter(f"{s}:{r}" for s, r, _ in drop_stage.values() if s == stage)
    stats.update(records_in=records_in, dropped=sum(reasons.values()), reasons=reasons,
                 seconds=time.perf_counter() - start, disabled=disabled)


def _report(recipe, inputs, accounts: _Accounts, counts, clusters, category_before, category_after, edges,
            length_after, workers, total_seconds, map_seconds, template: dict) -> dict[str, Any]:
    from seedbed.version import __version__

    input_records = sum(f["records"] for f in inputs)
    stages = []
    for stage in STAGES:
        s = accounts.stats[stage]
        entry = {"name": stage, "records_in": s["records_in"], "records_out": s["records_in"] - s["dropped"],
                 "dropped": s["dropped"], "modified": s["modified"], "reasons": dict(s["reasons"].most_common()),
                 "seconds": round(s["seconds"], 4),
                 # map stages: seconds summed over worker processes, so this is a per-core rate
                 "records_per_s": round(s["records_in"] / s["seconds"], 1) if s["seconds"] > 0 else None,
                 "enabled": not s.get("disabled", False)}
        if s["changes"]:
            entry["changes"] = dict(s["changes"].most_common())
        stages.append(entry)
    by_stage = {s["name"]: s["dropped"] for s in stages if s["dropped"]}
    by_reason: Counter[str] = Counter()
    for s in stages:
        by_reason.update(s["reasons"])
    kept_total = counts["train"] + counts["validation"]
    largest = sorted(clusters, key=lambda c: -c["size"])[:20]
    return {
        "seedbed_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "engine": recipe.engine, "workers": workers,
        "inputs": [{"path": f["path"], "records": f["records"], "shapes": dict(f["shapes"])} for f in inputs],
        "input_records": input_records,
        "kept": {"train": counts["train"], "validation": counts["validation"], "total": kept_total,
                 "train_upsampled_copies": counts["train_copies"]},
        "dropped": {"total": accounts.dropped, "by_stage": by_stage, "by_reason": dict(by_reason.most_common())},
        "stages": stages,
        "redactions": dict(accounts.redactions.most_common()),
        "duplicates": {"exact_clusters": sum(c["kind"] == "exact" for c in clusters),
                       "near_clusters": sum(c["kind"] == "near" for c in clusters), "largest": largest,
                       **({"template": template} if template else {})},
        "histograms": {
            "category_before": category_before, "category_after": category_after,
            "language": dict(accounts.languages.most_common()),
            "length_chars": {"edges": edges, "before": accounts.length_before, "after": length_after},
            "toxicity_max": {"edges": TOXICITY_EDGES, "counts": accounts.toxicity},
        },
        "examples": accounts.examples,
        "split": recipe.split.model_dump(),
        "seconds": round(total_seconds, 3),
        "map_seconds": round(map_seconds, 3),
        "records_per_s": round(input_records / total_seconds, 1) if total_seconds else None,
        "recipe": json.loads(recipe.model_dump_json()),
    }
