"""Data-curation throughput: Seedbed's `prepare` against datatrove on the same synthetic corpus, in one run.

    python benchmarks/data_throughput.py --records 20000

1. Generates a seeded English corpus (Faker en_US paragraphs, ~1.1 KB `text` per record) with ~10% exact
   duplicates, ~10% near-duplicates (3-8 words replaced) and a little planted PII (emails, phone numbers), as
   two JSONL shards (both sides read the same two files; two shards so that datatrove's two tasks each get one).
2. Seedbed, workers=2: (a) the default pipeline minus NER names and toxicity, `--reps` times (median reported);
   (b) the full default pipeline (names and toxicity on) on the first `--full-records` records.
3. datatrove, 2 tasks/workers with LocalPipelineExecutor: JsonlReader -> PIIFormatter -> exact dedup
   (ExactDedupSignature -> ExactFindDedups -> ExactDedupFilter) -> MinHash dedup (MinhashDedupSignature ->
   Buckets -> Cluster -> Filter) -> JsonlWriter, timed end to end. datatrove is not a Seedbed dependency: it runs
   in its own virtual environment (--dt-python, default /work/dt-venv/bin/python) through a subprocess.
4. Ratio Seedbed/datatrove of end-to-end records/s; near-duplicate recall/precision of Seedbed (and datatrove)
   against the planted pairs.

Writes benchmarks/results/data_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STOP_PHRASES = ["and the", "of the", "to be", "that is", "with the", "in the", "for a", "it is", "on the", "as the"]

# --------------------------------------------------------------------------------------------------- corpus


def make_corpus(n: int, seed: int, folder: Path) -> dict:
    """n records in two shards; returns the ground truth (which ids are planted copies of which)."""
    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(seed)
    rng = random.Random(seed)
    n_exact = n // 10
    n_near = n // 10
    n_base = n - n_exact - n_near

    def paragraph_text() -> str:
        parts, size = [], 0
        target = rng.randint(950, 1150)
        while size < target:
            # Faker's en_US word list has no stop words ("the", "and", ...), which text-quality filters (Gopher's
            # stop-word rule, Seedbed's quality:no_stop_words) rightly reject; splice a few into each sentence.
            sentences = []
            for _ in range(rng.randint(4, 8)):
                words = fake.sentence(nb_words=rng.randint(8, 14)).rstrip(".").split(" ")
                for _ in range(2):
                    words.insert(rng.randint(1, len(words)), rng.choice(STOP_PHRASES))
                sentences.append(" ".join(words) + ".")
            p = " ".join(sentences)
            parts.append(p)
            size += len(p) + 1
        text = " ".join(parts)
        if rng.random() < 0.05:  # planted PII
            pii = rng.choice([f"Contact me at {fake.email()}.", f"Call {fake.phone_number()} after six.",
                              f"Write to {fake.email()} or call {fake.phone_number()}."])
            words = text.split(" ")
            at = rng.randint(0, len(words))
            text = " ".join(words[:at] + [pii] + words[at:])
        return text[:1300]

    vocab = fake.get_words_list()
    records: list[dict] = []
    kinds: dict[str, dict] = {}
    for i in range(n_base):
        rid = f"doc-{i:07d}"
        records.append({"id": rid, "text": paragraph_text()})
        kinds[rid] = {"kind": "base"}
    # duplicates are inserted after their source, so the source is always the first occurrence
    base_ids = [r["id"] for r in records]
    text_of = {r["id"]: r["text"] for r in records}
    plan = [("exact", k) for k in range(n_exact)] + [("near", k) for k in range(n_near)]
    rng.shuffle(plan)
    positions = {}
    for kind, k in plan:
        src_index = rng.randrange(len(base_ids))
        src = base_ids[src_index]
        rid = f"{kind}-{k:07d}"
        if kind == "exact":
            text = text_of[src]
            kinds[rid] = {"kind": "exact", "source": src}
        else:
            words = text_of[src].split(" ")
            changed = rng.randint(3, 8)
            for j in rng.sample(range(len(words)), min(changed, len(words))):
                words[j] = rng.choice(vocab)
            text = " ".join(words)
            kinds[rid] = {"kind": "near", "source": src, "words_changed": changed}
        # somewhere after the source
        positions.setdefault(rng.randint(src_index + 1, len(base_ids)), []).append({"id": rid, "text": text})
    ordered: list[dict] = []
    for i, r in enumerate(records):
        ordered.extend(positions.get(i, []))
        ordered.append(r)
    ordered.extend(positions.get(len(records), []))
    folder.mkdir(parents=True, exist_ok=True)
    half = len(ordered) // 2
    files = []
    for s, part in enumerate((ordered[:half], ordered[half:])):
        path = folder / f"part-{s}.jsonl"
        with path.open("w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")
        files.append(str(path))
    sizes = [len(r["text"].encode()) for r in ordered]
    return {"files": files, "kinds": kinds, "order": [r["id"] for r in ordered],
            "texts": {r["id"]: r["text"] for r in ordered},
            "mean_bytes": sum(sizes) / len(sizes), "n": len(ordered),
            "bytes": sum(os.path.getsize(p) for p in files)}


def subset(corpus: dict, n: int, folder: Path) -> list[str]:
    """The first n records of the corpus (same order), as two shards."""
    ids = corpus["order"][:n]
    folder.mkdir(parents=True, exist_ok=True)
    half = len(ids) // 2
    files = []
    for s, part in enumerate((ids[:half], ids[half:])):
        path = folder / f"part-{s}.jsonl"
        with path.open("w") as f:
            for rid in part:
                f.write(json.dumps({"id": rid, "text": corpus["texts"][rid]}) + "\n")
        files.append(str(path))
    return files


# --------------------------------------------------------------------------------------------------- Seedbed


def run_seedbed(files: list[str], out: Path, full: bool) -> dict:
    from seedbed.curate.prepare import prepare
    from seedbed.recipe import DataRecipe

    shutil.rmtree(out, ignore_errors=True)
    kwargs = {} if full else {"pii": {"names": False}, "toxicity": {"enabled": False}}
    recipe = DataRecipe(inputs=files, out=str(out), workers=2, quiet=True, **kwargs)
    started = time.perf_counter()
    report = prepare(recipe)
    wall = time.perf_counter() - started
    return {"wall_seconds": wall, "report": report}


def summarise_seedbed(runs: list[dict], n: int) -> dict:
    walls = [r["wall_seconds"] for r in runs]
    med = statistics.median(walls)
    stages = {}
    for run in runs:
        for s in run["report"]["stages"]:
            stages.setdefault(s["name"], []).append(s)
    table = []
    for name, reps in stages.items():
        secs = statistics.median(s["seconds"] for s in reps)
        table.append({"stage": name, "records_in": reps[0]["records_in"], "dropped": reps[0].get("dropped"),
                      "seconds_median": round(secs, 4),
                      "records_per_s_median": round(reps[0]["records_in"] / secs, 1) if secs else None})
    first = runs[0]["report"]
    return {"reps": len(runs), "wall_seconds": [round(w, 3) for w in walls], "wall_seconds_median": round(med, 3),
            "records_per_s_median": round(n / med, 1),
            "report_seconds": [r["report"]["seconds"] for r in runs],
            "map_seconds": [r["report"].get("map_seconds") for r in runs],
            "kept": first["kept"]["total"], "dropped": first["dropped"]["total"],
            "dropped_by_stage": {s["name"]: s.get("dropped") for s in first["stages"]},
            "stages": table}


def near_dup_quality(corpus: dict, dropped_path: Path, reached: set[str] | None = None) -> dict:
    """Recall: planted near-duplicate records (each the later member of a (source, copy) pair) whose source reached
    dedup and that were dropped by exact_dedup or near_dedup. Precision: of the records dropped as near-duplicates,
    the share that are planted near-duplicates (strict: and whose named source is the planted source or another
    planted copy of it)."""
    from seedbed.curate.dedup import shingles

    kinds = corpus["kinds"]
    drops = {}
    for line in dropped_path.read_text().splitlines():
        d = json.loads(line)
        drops[str(d["id"])] = d
    near_ids = [i for i, k in kinds.items() if k["kind"] == "near"]
    eligible, detected, detected_jac, eligible_jac = 0, 0, 0, 0
    missed = []
    pre_dedup = ("exact_dedup", "near_dedup", "balance", "split")
    for rid in near_ids:
        src = kinds[rid]["source"]
        d_src, d_self = drops.get(src), drops.get(rid)
        # the pair counts only if both members reached dedup (not dropped by an earlier per-record stage)
        if (d_src and not d_src["reason"].startswith(pre_dedup)) or (d_self and not d_self["reason"].startswith(pre_dedup)):
            continue
        eligible += 1
        a, b = shingles(corpus["texts"][src], 3), shingles(corpus["texts"][rid], 3)
        jac = len(a & b) / len(a | b)
        hit = bool(d_self and d_self["reason"].startswith(("near_dedup", "exact_dedup")))
        detected += hit
        if jac >= 0.7:
            eligible_jac += 1
            detected_jac += hit
        if not hit:
            missed.append({"id": rid, "jaccard_3shingle": round(jac, 3), "words_changed": kinds[rid]["words_changed"]})
    near_drops = {i: d for i, d in drops.items() if d["reason"].startswith("near_dedup")}
    planted = sum(1 for i in near_drops if kinds.get(i, {}).get("kind") in ("near", "exact"))
    strict = 0
    for i, d in near_drops.items():
        k = kinds.get(i, {})
        m = re.search(r"of (\S+)", d.get("detail", ""))
        named = m.group(1) if m else None
        if k.get("kind") in ("near", "exact") and named is not None:
            named_src = named if kinds.get(named, {}).get("kind") == "base" else kinds.get(named, {}).get("source")
            strict += named_src == k["source"]
    jac_all = []
    for rid in near_ids:
        a, b = shingles(corpus["texts"][kinds[rid]["source"]], 3), shingles(corpus["texts"][rid], 3)
        jac_all.append(len(a & b) / len(a | b))
    exact_ids = [i for i, k in kinds.items() if k["kind"] == "exact"]
    exact_caught = sum(1 for i in exact_ids if drops.get(i, {}).get("reason", "").startswith("exact_dedup"))
    base_wrongly = sum(1 for i, d in drops.items() if kinds.get(i, {}).get("kind") == "base"
                       and d["reason"].startswith(("near_dedup", "exact_dedup")))
    return {
        "planted_near_duplicates": len(near_ids),
        "pairs_reaching_dedup": eligible,
        "recall": round(detected / eligible, 4) if eligible else None,
        "detected": detected,
        "recall_pairs_jaccard_ge_0.7": round(detected_jac / eligible_jac, 4) if eligible_jac else None,
        "pairs_jaccard_ge_0.7": eligible_jac,
        "planted_pair_jaccard_3shingle": {"min": round(min(jac_all), 3), "median": round(statistics.median(jac_all), 3),
                                          "max": round(max(jac_all), 3)},
        "dropped_as_near_duplicate": len(near_drops),
        "precision": round(planted / len(near_drops), 4) if near_drops else None,
        "precision_strict_named_source": round(strict / len(near_drops), 4) if near_drops else None,
        "planted_exact_duplicates": len(exact_ids), "exact_caught_by_exact_dedup": exact_caught,
        "base_records_dropped_by_dedup": base_wrongly,
        "missed_examples": sorted(missed, key=lambda m: -m["jaccard_3shingle"])[:10],
    }


# --------------------------------------------------------------------------------------------------- datatrove

DT_RUNNER = r'''
import json, sys, time, shutil
from pathlib import Path


def main():
    inp, work, tasks = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    t_import = time.perf_counter()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.dedup import (MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster,
                                          MinhashDedupFilter)
    from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupSignature, ExactFindDedups,
                                                      ExactDedupFilter)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    import_s = time.perf_counter() - t_import
    shutil.rmtree(work, ignore_errors=True)
    exact_cfg = ExactDedupConfig(content_getter=lambda d: " ".join(d.text.lower().split()))
    mh_cfg = MinhashConfig()  # datatrove defaults: 5-grams, 14 buckets x 8 hashes
    W = str(work)
    def ex(pipeline, n, name):
        return (name, LocalPipelineExecutor(pipeline=pipeline, tasks=n, workers=min(n, tasks),
                                            logging_dir=f"{W}/logs/{name}"))
    steps = [
        ex([JsonlReader(inp), PIIFormatter(), JsonlWriter(f"{W}/pii"),
            ExactDedupSignature(f"{W}/exact_sigs", config=exact_cfg)], tasks, "1_read_pii_exact_signature"),
        ex([ExactFindDedups(f"{W}/exact_sigs", f"{W}/exact_dups", config=exact_cfg)], 1, "2_exact_find"),
        ex([JsonlReader(f"{W}/pii"), ExactDedupFilter(f"{W}/exact_dups", config=exact_cfg,
                                                      exclusion_writer=JsonlWriter(f"{W}/removed_exact")),
            JsonlWriter(f"{W}/exact_out"), MinhashDedupSignature(f"{W}/mh_sigs", config=mh_cfg)], tasks,
           "3_exact_filter_minhash_signature"),
        ex([MinhashDedupBuckets(f"{W}/mh_sigs", f"{W}/mh_buckets", config=mh_cfg)], mh_cfg.num_buckets,
           "4_minhash_buckets"),
        ex([MinhashDedupCluster(f"{W}/mh_buckets", f"{W}/mh_remove", config=mh_cfg)], 1, "5_minhash_cluster"),
        ex([JsonlReader(f"{W}/exact_out"), MinhashDedupFilter(f"{W}/mh_remove",
                                                               exclusion_writer=JsonlWriter(f"{W}/removed_near")),
            JsonlWriter(f"{W}/final")], tasks, "6_minhash_filter_write"),
    ]
    step_seconds = {}
    t0 = time.perf_counter()
    for name, step in steps:
        t1 = time.perf_counter()
        step.run()
        step_seconds[name] = time.perf_counter() - t1
    seconds = time.perf_counter() - t0
    def ids(folder):
        import gzip
        out = []
        for p in sorted(Path(folder).glob("*.jsonl*")):
            opener = gzip.open if p.suffix == ".gz" else open
            with opener(p, "rt") as f:
                out += [json.loads(l)["id"] for l in f]
        return out
    print(json.dumps({"seconds": seconds, "import_seconds": import_s, "kept": len(ids(f"{W}/final")),
                      "removed_exact": ids(f"{W}/removed_exact"), "removed_near": ids(f"{W}/removed_near"),
                      "step_seconds": step_seconds}))


if __name__ == "__main__":
    main()
'''


def run_datatrove(python: str, folder: Path, work: Path, tasks: int) -> dict:
    work.parent.mkdir(parents=True, exist_ok=True)
    runner = work.parent / "dt_runner.py"
    runner.write_text(DT_RUNNER)
    started = time.perf_counter()
    proc = subprocess.run([python, str(runner), str(folder), str(work), str(tasks)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"datatrove run failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["subprocess_wall_seconds"] = wall
    return result


def dt_quality(corpus: dict, res: dict) -> dict:
    kinds = corpus["kinds"]
    removed_near = set(map(str, res["removed_near"]))
    removed_exact = set(map(str, res["removed_exact"]))
    near_ids = [i for i, k in kinds.items() if k["kind"] == "near"]
    hit = sum(1 for i in near_ids if i in removed_near or i in removed_exact)
    planted = sum(1 for i in removed_near if kinds.get(i, {}).get("kind") in ("near", "exact"))
    return {"recall": round(hit / len(near_ids), 4), "detected": hit, "planted_near_duplicates": len(near_ids),
            "dropped_as_near_duplicate": len(removed_near),
            "precision": round(planted / len(removed_near), 4) if removed_near else None,
            "exact_removed": len(removed_exact),
            "planted_exact_caught": sum(1 for i in removed_exact if kinds.get(i, {}).get("kind") == "exact")}


# --------------------------------------------------------------------------------------------------- main


def machine() -> dict:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "")
    except OSError:
        pass
    return {"cpu_model": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--full-records", type=int, default=2000, help="records for the full default pipeline run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dt-reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dt-python", default="/work/dt-venv/bin/python")
    ap.add_argument("--work", default="/tmp/seedbed-data-throughput")
    ap.add_argument("--json", default=str(HERE / "results" / "data_throughput.json"))
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    corpus = make_corpus(args.records, args.seed, work / "input")
    print(f"corpus: {corpus['n']} records, mean {corpus['mean_bytes']:.0f} B text, {corpus['bytes'] / 1e6:.1f} MB "
          f"({time.perf_counter() - t:.1f}s to generate)", flush=True)
    n = corpus["n"]
    results: dict = {"command": "python benchmarks/data_throughput.py " + " ".join(sys.argv[1:]),
                     "machine": machine(), "corpus": {k: corpus[k] for k in ("n", "mean_bytes", "bytes")} |
                     {"seed": args.seed, "exact_duplicates": n // 10, "near_duplicates": n // 10,
                      "files": corpus["files"]}}

    # Seedbed (a): default minus names/toxicity
    runs = []
    for rep in range(args.reps):
        r = run_seedbed(corpus["files"], work / f"seedbed-a-{rep}", full=False)
        print(f"seedbed (no names/toxicity) rep {rep}: {r['wall_seconds']:.2f}s, {n / r['wall_seconds']:.0f} rec/s",
              flush=True)
        runs.append(r)
    results["seedbed_default_minus_names_toxicity"] = summarise_seedbed(runs, n)
    quality = near_dup_quality(corpus, work / "seedbed-a-0" / "dropped.jsonl")
    results["seedbed_near_dup_quality"] = quality
    for rep in range(1, args.reps):
        shutil.rmtree(work / f"seedbed-a-{rep}", ignore_errors=True)

    # Seedbed (b): full default on a subset
    m = min(args.full_records, n)
    sub = subset(corpus, m, work / "input-subset")
    full_runs = [run_seedbed(sub, work / "seedbed-full", full=True)]
    print(f"seedbed (full default, {m} records): {full_runs[0]['wall_seconds']:.2f}s, "
          f"{m / full_runs[0]['wall_seconds']:.0f} rec/s", flush=True)
    results["seedbed_full_default"] = summarise_seedbed(full_runs, m) | {"records": m}

    # datatrove
    dt_runs = []
    for rep in range(args.dt_reps):
        res = run_datatrove(args.dt_python, work / "input", work / "dt" / "work", tasks=2)
        print(f"datatrove rep {rep}: {res['seconds']:.2f}s pipeline, {res['subprocess_wall_seconds']:.2f}s with "
              f"interpreter start/imports, {n / res['seconds']:.0f} rec/s", flush=True)
        dt_runs.append(res)
    dt_secs = statistics.median(r["seconds"] for r in dt_runs)
    dt_wall = statistics.median(r["subprocess_wall_seconds"] for r in dt_runs)
    dt_version = subprocess.run([args.dt_python, "-c", "import datatrove, importlib.metadata as m; "
                                 "print(m.version('datatrove'))"], capture_output=True, text=True).stdout.strip()
    results["datatrove"] = {
        "version": dt_version, "tasks": 2, "workers": 2, "reps": len(dt_runs),
        "pipeline_seconds": [round(r["seconds"], 3) for r in dt_runs], "pipeline_seconds_median": round(dt_secs, 3),
        "records_per_s_median": round(n / dt_secs, 1),
        "subprocess_wall_seconds_median": round(dt_wall, 3),
        "records_per_s_incl_startup_median": round(n / dt_wall, 1),
        "step_seconds_median": {k: round(statistics.median(r["step_seconds"][k] for r in dt_runs), 3)
                                for k in dt_runs[0]["step_seconds"]},
        "import_seconds": round(dt_runs[0]["import_seconds"], 3),
        "kept": dt_runs[0]["kept"], "near_dup_quality": dt_quality(corpus, dt_runs[0]),
    }
    sb = results["seedbed_default_minus_names_toxicity"]
    results["ratio_seedbed_over_datatrove"] = round(sb["records_per_s_median"] / results["datatrove"]["records_per_s_median"], 3)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")

    print(f"\nmachine: {results['machine']['cpu_model']}, {results['machine']['cpus']} CPUs")
    print(f"{'stage':<16}{'records_in':>11}{'dropped':>9}{'seconds':>10}{'rec/s':>11}")
    for s in sb["stages"]:
        print(f"{s['stage']:<16}{s['records_in']:>11}{str(s['dropped']):>9}{s['seconds_median']:>10}"
              f"{str(s['records_per_s_median']):>11}")
    print(f"Seedbed whole (no names/toxicity): {sb['records_per_s_median']} rec/s (median of {sb['reps']})")
    fd = results["seedbed_full_default"]
    print(f"Seedbed whole (full default, {m} records): {fd['records_per_s_median']} rec/s")
    print(f"datatrove whole: {results['datatrove']['records_per_s_median']} rec/s (median of {len(dt_runs)})")
    print(f"ratio Seedbed/datatrove: {results['ratio_seedbed_over_datatrove']}")
    print(f"Seedbed near-dup recall {quality['recall']} precision {quality['precision']} "
          f"(strict {quality['precision_strict_named_source']})")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
