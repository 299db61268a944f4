"""Precision, recall and speed of Seedbed's toxicity stage, per backend and combined, at the default thresholds.

    python benchmarks/toxicity_eval.py                 # writes benchmarks/results/toxicity_eval.json
    python benchmarks/toxicity_eval.py --out /tmp/t.json --records 1000

Data: `benchmarks/data/toxicity_labelled.jsonl` (origin, licenses and labelling rule in toxicity_labelled.SOURCES.md
beside it): human turns of Anthropic's HH red-team "harmless-base" test dialogues, labelled toxic or not by the
project (split "dev": the 400 turns read while the word list's patterns and the thresholds were chosen; "heldout":
200 turns labelled after they were frozen), and 200 benign GSM8K questions and self-instruct instructions.

A text counts as flagged when any category crosses its threshold. Reported: precision / recall / F1 with 95% Wilson
intervals, the false-positive rate on benign text and on the red-team turns labelled non-toxic, recall when one
toxic turn sits inside ~1.1 KB of benign text, a classifier threshold sweep, and records/s on ~1.1 KB texts.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import random
import statistics
import time
from pathlib import Path

from seedbed.curate.toxicity import CATEGORIES, ToxicityConfig, ToxicityScorer

HERE = Path(__file__).parent
BACKENDS = {"wordlist": ["wordlist"], "classifier": ["classifier"], "combined": ["wordlist", "classifier"]}
LONG_CHARS = 1100  # "~1.1 KB" records, the size the pipeline's throughput target is stated for


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval for k successes in n trials (sound for small n and rates near 0 or 1)."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def metrics(truth: list[bool], predicted: list[bool]) -> dict:
    tp = sum(t and p for t, p in zip(truth, predicted))
    fp = sum(p and not t for t, p in zip(truth, predicted))
    fn = sum(t and not p for t, p in zip(truth, predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(truth), "positives": tp + fn, "tp": tp, "fp": fp, "fn": fn,
            "precision": round(precision, 3), "precision_ci": wilson(tp, tp + fp),
            "recall": round(recall, 3), "recall_ci": wilson(tp, tp + fn), "f1": round(f1, 3)}


def false_positive_rate(predicted: list[bool]) -> dict:
    k = sum(predicted)
    return {"n": len(predicted), "flagged": k, "rate": round(k / len(predicted), 3), "ci": wilson(k, len(predicted))}


def long_texts(core: list[str], filler: list[str], seed: int) -> list[str]:
    """Each core text inside benign filler, half before and half after, cut to ~LONG_CHARS at a word boundary."""
    rng = random.Random(seed)
    out = []
    for text in core:
        before, after = [], []
        while len(text) + sum(map(len, before + after)) + len(before + after) < LONG_CHARS:
            (before if len(before) <= len(after) else after).append(rng.choice(filler))
        head = " ".join(before + [text])
        whole = " ".join([head] + after)
        cut = whole[:LONG_CHARS].rsplit(" ", 1)[0] if len(whole) > LONG_CHARS else whole
        out.append(cut if len(cut) >= len(head) else head)  # never cut into the core text
    return out


def evaluate(scorer: ToxicityScorer, records: list[dict]) -> dict:
    scores = scorer.score_many([r["text"] for r in records])
    flagged = [scorer.flagged(s) for s in scores]
    result: dict = {}
    for split in ("dev", "heldout", "all_hh"):
        rows = [(r, f) for r, f in zip(records, flagged) if r["split"] != "benign" and split in ("all_hh", r["split"])]
        if rows:
            result[split] = metrics([r["toxic"] for r, _ in rows], [bool(f) for _, f in rows])
    result["fpr_benign"] = false_positive_rate([bool(f) for r, f in zip(records, flagged) if r["split"] == "benign"])
    result["fpr_hh_nontoxic"] = false_positive_rate(
        [bool(f) for r, f in zip(records, flagged) if r["split"] != "benign" and not r["toxic"]])
    per_category = {}
    for c in CATEGORIES:
        rows = [(r, f) for r, f in zip(records, flagged) if c in r["categories"]]
        if rows:
            per_category[c] = {"n": len(rows), "flagged_any": sum(bool(f) for _, f in rows),
                               "flagged_as_this": sum(c in f for _, f in rows)}
    result["per_category_recall"] = per_category
    result["flags_on_benign_by_category"] = {
        c: sum(c in f for r, f in zip(records, flagged) if not r["toxic"]) for c in CATEGORIES}
    return result


def throughput(scorer: ToxicityScorer, texts: list[str], batch: int, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            scorer.score_many(texts[i : i + batch])
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {"records": len(texts), "mean_chars": round(statistics.mean(map(len, texts))), "batch": batch,
            "seconds_median": round(median, 3), "records_per_s": round(len(texts) / median)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(HERE / "data" / "toxicity_labelled.jsonl"))
    parser.add_argument("--out", default=str(HERE / "results" / "toxicity_eval.json"))
    parser.add_argument("--records", type=int, default=2000, help="~1.1 KB texts timed for throughput")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes; the median is reported")
    args = parser.parse_args()

    records = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    benign = [r["text"] for r in records if r["split"] == "benign"]
    toxic = [r for r in records if r["toxic"]]
    rng = random.Random(2026)
    # Throughput corpus: benign texts joined to ~1.1 KB, 1 in 10 with a toxic turn inside (as real data might be).
    cores = [rng.choice(toxic)["text"] if i % 10 == 0 else rng.choice(benign) for i in range(args.records)]
    corpus = long_texts(cores, benign, seed=1)

    results: dict = {
        "command": "python benchmarks/toxicity_eval.py",
        "machine": {"cpus": os.cpu_count(), "processor": cpu_name(), "python": platform.python_version(),
                    **{p: importlib.metadata.version(p) for p in ("alt-profanity-check", "scikit-learn")}},
        "data": {"file": "benchmarks/data/toxicity_labelled.jsonl",
                 "splits": {s: sum(r["split"] == s for r in records) for s in ("dev", "heldout", "benign")},
                 "toxic": len(toxic)},
        "thresholds": ToxicityConfig().thresholds,
        "backends": {},
    }
    for name, backends in BACKENDS.items():
        started = time.perf_counter()
        scorer = ToxicityScorer(ToxicityConfig(backends=backends))
        load_s = time.perf_counter() - started
        entry = evaluate(scorer, records)
        entry["load_seconds"] = round(load_s, 2)
        entry["throughput_1.1kb"] = throughput(scorer, corpus, batch=1000, repeats=args.repeats)
        results["backends"][name] = entry
        print(f"{name:10s} heldout {entry.get('heldout', {}).get('f1')} all_hh P={entry['all_hh']['precision']} "
              f"R={entry['all_hh']['recall']} F1={entry['all_hh']['f1']} FPR benign={entry['fpr_benign']['rate']} "
              f"FPR hh={entry['fpr_hh_nontoxic']['rate']} {entry['throughput_1.1kb']['records_per_s']} rec/s")

    # One toxic turn inside ~1.1 KB of benign text: does the classifier still see it? (windows vs whole text)
    hh = [r for r in records if r["split"] != "benign"]
    long_toxic = long_texts([r["text"] for r in toxic], benign, seed=2)
    long_benign = long_texts([r["text"] for r in hh if not r["toxic"]], benign, seed=3)
    results["long_text"] = {}
    for window in (0, ToxicityConfig().classifier_window_words):
        for name in ("classifier", "combined"):
            scorer = ToxicityScorer(ToxicityConfig(backends=BACKENDS[name], classifier_window_words=window))
            hit = [bool(scorer.flagged(s)) for s in scorer.score_many(long_toxic)]
            miss = [bool(scorer.flagged(s)) for s in scorer.score_many(long_benign)]
            results["long_text"][f"{name}_window_{window}"] = {
                "recall": round(sum(hit) / len(hit), 3), "recall_ci": wilson(sum(hit), len(hit)),
                "fpr": round(sum(miss) / len(miss), 3), "fpr_ci": wilson(sum(miss), len(miss))}

    # The profanity threshold's trade-off (the classifier's only category): classifier alone, and the combined stage.
    texts = [r["text"] for r in records]
    probability = [s["profanity"] for s in ToxicityScorer(ToxicityConfig(backends=["classifier"])).score_many(texts)]
    sweep = {}
    for threshold in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        combined = ToxicityScorer(ToxicityConfig(thresholds={"profanity": threshold}))
        flagged = [bool(combined.flagged(s)) for s in combined.score_many(texts)]
        entry = {}
        for name, predicted in (("classifier", [p >= threshold for p in probability]), ("combined", flagged)):
            rows = [(r, p) for r, p in zip(records, predicted)]
            entry[name] = {}
            for split, keep in (("dev", ("dev",)), ("all_hh", ("dev", "heldout"))):
                chosen = [(r["toxic"], p) for r, p in rows if r["split"] in keep]
                entry[name][split] = metrics([t for t, _ in chosen], [p for _, p in chosen])
            entry[name]["fpr_benign"] = false_positive_rate([p for r, p in rows if r["split"] == "benign"])
        sweep[str(threshold)] = entry
    results["profanity_threshold_sweep"] = sweep

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("long text", {k: (v["recall"], v["fpr"]) for k, v in results["long_text"].items()})
    for name in ("classifier", "combined"):
        print(f"sweep {name}", {t: (v[name]["all_hh"]["precision"], v[name]["all_hh"]["recall"], v[name]["dev"]["f1"],
                                    v[name]["all_hh"]["fp"]) for t, v in sweep.items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
