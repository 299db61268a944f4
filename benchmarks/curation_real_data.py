"""`seedbed data prepare` on real instruction data: SNIPS mapped to an instruction shape, and GSM8K.

    python benchmarks/curation_real_data.py --snips /work/shared/data/snips_train.jsonl \\
        --gsm8k /work/shared/data/gsm8k_train.jsonl            # writes benchmarks/results/curation_real_data.json
    python benchmarks/curation_real_data.py --snips ... --sample 1000 --variants snips_short

The project never reads data outside itself at run time; this script is given the files' paths.

Inputs, written to a work folder as JSONL and curated with the default recipe (`seedbed data prepare IN --out OUT
--workers 2 --quiet`; the exact command is recorded in the results):

- `snips_bare`: SNIPS (sonos/nlu-benchmark 2017, CC0-1.0; fields id, text, intent, slots) as dolly records:
  instruction = the request, response = the JSON `{"intent": ..., "slots": [...]}`, category = the intent.
- `snips_template`: the same with one long instruction template (TEMPLATE, ~90 words) in front of every request.
- `snips_short`: the same with "Turn this request into JSON: " in front (the user's report of issue 11).
- `gsm8k`: GSM8K train as given (question/answer).

Measured from OUT (report.json, train/validation.jsonl, dropped.jsonl) against the input:

- the funnel: records in/out, dropped and modified per stage, with reasons;
- duplicates: each record dropped by exact_dedup or near_dedup is compared with the record it duplicates (named in
  dropped.jsonl's detail): "same request" when the two requests are equal up to case, punctuation and spacing
  (a true duplicate); a request worded a little apart with the same answer (the same example twice) is listed
  apart; a different request with a different answer is a false duplicate;
- PII on SNIPS: every placeholder in a kept record is traced back to the words it replaced and to the gold slot
  those words fill. SNIPS requests hold public names (artists, titles, places, restaurants); the only slot that
  can hold a private person is `party_size_description` ("me, clarice and debbie"), so a placeholder anywhere
  else is a false redaction. Also counted: records where a slot value is redacted in the instruction but kept in
  the response, or the reverse (inconsistent redaction);
- mojibake: requests that ftfy repairs, and whether the kept record carries the repaired text.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "curation_real_data.json"
TEMPLATE = (
    "You are the language-understanding component of a voice assistant. Read the user's request below and turn it "
    "into a JSON object with exactly two keys. The first key, \"intent\", names what the user wants, one of "
    "AddToPlaylist, BookRestaurant, GetWeather, PlayMusic, RateBook, SearchCreativeWork or SearchScreeningEvent. "
    "The second key, \"slots\", is a list with one object for each part of the request that fills a slot, each "
    "object holding the slot's \"name\" (such as artist, playlist, city or timeRange) and its \"value\", copied "
    "exactly as the user wrote it. Answer with the JSON object only, with no explanation.\n\nRequest: ")
SHORT_TEMPLATE = "Turn this request into JSON: "
VARIANTS = {"snips_bare": "", "snips_template": TEMPLATE, "snips_short": SHORT_TEMPLATE}
PRIVATE_SLOTS = {"party_size_description"}  # the one SNIPS slot that can name private people
PLACEHOLDER = re.compile(r"<(SECRET|URL_CREDENTIALS|EMAIL|IBAN|CREDIT_CARD|US_SSN|IP_ADDRESS|PHONE|ADDRESS|PERSON)>")


def clean(text: str) -> str:
    """The request as the normalise stage leaves it (mojibake repaired, NFC, spaces collapsed), for comparisons."""
    import unicodedata

    import ftfy

    config = ftfy.TextFixerConfig(unescape_html=False, remove_terminal_escapes=False, fix_latin_ligatures=False,
                                  fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
                                  remove_control_chars=False, normalization=None, explain=False)
    return " ".join(unicodedata.normalize("NFC", ftfy.fix_text(text, config)).split())


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def snips_record(record: dict, prefix: str) -> dict:
    response = json.dumps({"intent": record["intent"], "slots": record["slots"]}, ensure_ascii=False)
    return {"id": record["id"], "instruction": prefix + record["text"], "response": response,
            "category": record["intent"]}


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def run_prepare(input_path: Path, out: Path, workers: int) -> dict:
    seedbed = Path(sys.executable).with_name("seedbed")
    command = [str(seedbed), "data", "prepare", str(input_path), "--out", str(out), "--workers", str(workers),
               "--quiet"]
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {"command": " ".join(command), "wall_seconds": round(seconds, 1)}


def funnel(report: dict) -> list[dict]:
    return [{"stage": s["name"], "in": s["records_in"], "out": s["records_out"], "dropped": s["dropped"],
             "modified": s["modified"], "reasons": s["reasons"], **({"changes": s["changes"]} if s.get("changes") else {})}
            for s in report["stages"] if s["enabled"]]


def outputs(out: Path) -> tuple[dict, list[dict], list[dict]]:
    report = json.loads((out / "report.json").read_text())
    kept = read_jsonl(out / "train.jsonl") + read_jsonl(out / "validation.jsonl")
    dropped = read_jsonl(out / "dropped.jsonl")
    return report, kept, dropped


DUP_OF = re.compile(r"duplicate of (\S+)")


def duplicates(dropped: list[dict], request_of: dict[str, str], label_of: dict[str, str]) -> dict:
    verdicts: Counter[str] = Counter()
    false_dups, reworded = [], []
    for entry in dropped:
        if entry["stage"] not in ("exact_dedup", "near_dedup"):
            continue
        other = DUP_OF.search(entry.get("detail", ""))
        if not other:
            verdicts["unnamed"] += 1
            continue
        a, b = entry["id"], other.group(1)
        same_request = words(request_of[a]) == words(request_of[b])
        same_label = label_of.get(a) == label_of.get(b)
        pair = {"dropped": request_of[a], "kept": request_of[b], "detail": entry.get("detail")}
        if same_request:
            verdicts["same request, same answer" if same_label else "same request, different answer"] += 1
        elif same_label:  # worded a little apart ("... to my Reggae Classics" / "... playlist"), answered the same
            verdicts["reworded request, same answer"] += 1
            reworded.append(pair)
        else:  # two examples: what the dropped one taught is lost
            verdicts["different request, different answer"] += 1
            false_dups.append(pair)
    return {"verdicts": dict(verdicts), "false_duplicates": len(false_dups), "false_duplicate_examples": false_dups[:25],
            "reworded_examples": reworded[:25]}


def replaced_spans(original: str, redacted: str) -> list[tuple[int, int, str]]:
    """(start, end, type) in `original` of each placeholder in `redacted`."""
    pieces = PLACEHOLDER.split(redacted)  # literal, type, literal, type, ...
    pattern = "".join(re.escape(p) if i % 2 == 0 else "(.+?)" for i, p in enumerate(pieces))
    m = re.fullmatch(pattern, original, re.S)
    if m:
        return [(m.start(k + 1), m.end(k + 1), pieces[2 * k + 1]) for k in range(len(pieces) // 2)]
    spans = []  # fall back to a character diff
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, original, redacted, autojunk=False).get_opcodes():
        for found in PLACEHOLDER.finditer(redacted[j1:j2]) if op != "equal" else []:
            spans.append((i1, i2, found.group(1)))
    return spans


def slot_spans(text: str, slots: list[dict]) -> list[tuple[int, int, str]]:
    spans, start = [], 0
    for slot in slots:
        value = clean(slot["value"])
        at = text.find(value, start)
        at = text.find(value) if at < 0 else at
        if at >= 0:
            spans.append((at, at + len(value), slot["name"]))
            start = at + len(value)
    return spans


def snips_pii(kept: list[dict], source: dict[str, dict], prefix: str) -> dict:
    with_placeholder = false_records = inconsistent = 0
    by_slot: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    examples, inconsistent_examples = [], []
    clean_prefix = clean(prefix) if prefix else ""
    for record in kept:
        original = source[record["id"]]
        request_in = clean(original["text"])
        instruction = " ".join(record["instruction"].split())
        request_out = instruction[len(clean_prefix):].lstrip() if instruction.startswith(clean_prefix) else instruction
        try:
            response_slots = json.loads(record["response"]).get("slots", [])
        except (json.JSONDecodeError, AttributeError):
            response_slots = []
        found = replaced_spans(request_in, request_out) if PLACEHOLDER.search(request_out) else []
        in_response = [s for s in response_slots if PLACEHOLDER.search(str(s.get("value", "")))]
        if found or in_response or PLACEHOLDER.search(record["response"]):
            with_placeholder += 1
        gold = slot_spans(request_in, original["slots"])
        record_false = False
        for start, end, kind in found:
            slots = [name for s, e, name in gold if s < end and start < e] or ["(no slot)"]
            by_type[kind] += 1
            for name in slots:
                by_slot[name] += 1
            if not set(slots) & PRIVATE_SLOTS:
                record_false = True
        if record_false:
            false_records += 1
            if len(examples) < 25:
                examples.append({"in": request_in, "out": request_out})
        # consistency: a slot value redacted on one side only
        values_out = {clean(str(s.get("value", ""))) for s in response_slots}
        for slot in original["slots"]:
            value = clean(slot["value"])
            if value not in request_in:
                continue
            redacted_in_request = value not in request_out
            redacted_in_response = value not in values_out
            if redacted_in_request != redacted_in_response:
                inconsistent += 1
                if len(inconsistent_examples) < 10:
                    inconsistent_examples.append({"request": request_out, "response": record["response"]})
                break
    n = len(kept)
    return {"kept": n, "records_with_placeholder": with_placeholder,
            "records_with_placeholder_pct": round(100 * with_placeholder / n, 2) if n else None,
            "records_with_false_redaction": false_records,
            "false_redaction_pct_of_kept": round(100 * false_records / n, 2) if n else None,
            "placeholders_by_slot": dict(by_slot.most_common()), "placeholders_by_type": dict(by_type.most_common()),
            "records_inconsistent": inconsistent, "false_redaction_examples": examples,
            "inconsistent_examples": inconsistent_examples}


def mojibake(records: list[dict], kept: list[dict], dropped: list[dict]) -> dict:
    broken = {r["id"]: clean(r["text"]) for r in records if clean(r["text"]) != " ".join(r["text"].split())}
    kept_by_id = {r["id"]: r for r in kept}
    repaired = sum(1 for rid, fixed in broken.items()
                   if rid in kept_by_id and fixed in " ".join(kept_by_id[rid]["instruction"].split()))
    dropped_ids = {d["id"] for d in dropped}
    return {"records_with_mojibake": len(broken), "kept_and_repaired": repaired,
            "dropped": sorted(set(broken) & dropped_ids)}


def dropped_summary(dropped: list[dict], text_of, limit: int = 12) -> dict:
    by_reason: dict[str, list] = {}
    for entry in dropped:
        shown = by_reason.setdefault(entry["reason"], [])
        if len(shown) < limit:
            shown.append(text_of(entry))
    return by_reason


def run_snips(path: Path, variant: str, work: Path, workers: int, sample: int | None, seed: int) -> dict:
    records = read_jsonl(path)
    if sample:
        keep = sorted(random.Random(seed).sample(range(len(records)), min(sample, len(records))))
        records = [records[i] for i in keep]
    prefix = VARIANTS[variant]
    input_path = work / f"{variant}.jsonl"
    write_jsonl(input_path, [snips_record(r, prefix) for r in records])
    out = work / f"{variant}_out"
    run = run_prepare(input_path, out, workers)
    report, kept, dropped = outputs(out)
    source = {r["id"]: r for r in records}
    request_of = {r["id"]: r["text"] for r in records}
    label_of = {r["id"]: json.dumps([r["intent"], r["slots"]], sort_keys=True) for r in records}
    result = {
        "run": run, "input_records": report["input_records"], "kept": report["kept"]["total"],
        "kept_pct": round(100 * report["kept"]["total"] / report["input_records"], 2),
        "dropped_by_reason": report["dropped"]["by_reason"], "funnel": funnel(report),
        "records_per_s": report["records_per_s"],
        "duplicates": duplicates(dropped, request_of, label_of),
        "pii": snips_pii(kept, source, prefix),
        "mojibake": mojibake(records, kept, dropped),
        "dropped_examples": dropped_summary(dropped, lambda e: request_of[e["id"]]),
    }
    print(f"{variant}: kept {result['kept']}/{result['input_records']} ({result['kept_pct']}%), "
          f"dropped {result['dropped_by_reason']}, false redactions {result['pii']['records_with_false_redaction']} "
          f"({result['pii']['false_redaction_pct_of_kept']}%), placeholders {result['pii']['records_with_placeholder']}, "
          f"inconsistent {result['pii']['records_inconsistent']}, dups {result['duplicates']['verdicts']}, "
          f"mojibake {result['mojibake']}, {run['wall_seconds']} s", flush=True)
    return result


def run_gsm8k(path: Path, work: Path, workers: int, sample: int | None, seed: int) -> dict:
    records = read_jsonl(path)
    if sample:
        keep = sorted(random.Random(seed).sample(range(len(records)), min(sample, len(records))))
        records = [records[i] for i in keep]
    input_path = work / "gsm8k.jsonl"
    write_jsonl(input_path, records)
    out = work / "gsm8k_out"
    run = run_prepare(input_path, out, workers)
    report, kept, dropped = outputs(out)
    question_of = {f"gsm8k.jsonl:{i}": r["question"] for i, r in enumerate(records, 1)}
    result = {"run": run, "input_records": report["input_records"], "kept": report["kept"]["total"],
              "kept_pct": round(100 * report["kept"]["total"] / report["input_records"], 2),
              "dropped_by_reason": report["dropped"]["by_reason"], "funnel": funnel(report),
              "records_per_s": report["records_per_s"], "redactions": report["redactions"],
              "dropped_examples": dropped_summary(dropped, lambda e: question_of.get(e["id"], e["id"])[:200])}
    print(f"gsm8k: kept {result['kept']}/{result['input_records']} ({result['kept_pct']}%), "
          f"dropped {result['dropped_by_reason']}, {run['wall_seconds']} s", flush=True)
    return result


ABLATION = [  # (template_share, prompt_threshold): what each part of the near-duplicate design buys
    (1.0, 0.7), (1.0, 0.9), (0.1, 0.7), (0.1, 0.8), (0.1, 0.9)]


def dedup_ablation(path: Path, work: Path, workers: int) -> list[dict]:
    """Near-duplicate drops on SNIPS (bare and templated) for each ABLATION setting, the other stages that do not
    touch dedup switched off (PII names, toxicity) so that each run takes seconds; prepare() in-process."""
    from seedbed.curate.prepare import prepare
    from seedbed.recipe import DataRecipe

    records = read_jsonl(path)
    request_of = {r["id"]: r["text"] for r in records}
    label_of = {r["id"]: json.dumps([r["intent"], r["slots"]], sort_keys=True) for r in records}
    rows = []
    for variant in ("snips_bare", "snips_template"):
        input_path = work / f"{variant}.jsonl"
        write_jsonl(input_path, [snips_record(r, VARIANTS[variant]) for r in records])
        for share, prompt in ABLATION:
            out = work / f"ablation_{variant}_{share}_{prompt}"
            report = prepare(DataRecipe(inputs=[str(input_path)], out=str(out), workers=workers, quiet=True,
                                        pii={"names": False}, toxicity={"enabled": False},
                                        dedup={"template_share": share, "prompt_threshold": prompt}))
            dropped = read_jsonl(out / "dropped.jsonl")
            verdicts = duplicates(dropped, request_of, label_of)["verdicts"]
            rows.append({"variant": variant, "template_share": share, "prompt_threshold": prompt,
                         "exact": report["dropped"]["by_reason"].get("exact_dedup:duplicate", 0),
                         "near": report["dropped"]["by_reason"].get("near_dedup:near_duplicate", 0),
                         "kept_pct": round(100 * report["kept"]["total"] / report["input_records"], 2),
                         "verdicts": verdicts})
            print(rows[-1], flush=True)
            shutil.rmtree(out, ignore_errors=True)
    return rows


def markdown(results: dict) -> str:
    """The funnels and rates of a results JSON as Markdown (for BENCHMARKS.md)."""
    lines = []
    for name in [k for k in results if k.startswith("snips") or k == "gsm8k"]:
        r = results[name]
        lines += [f"**{name}**: {r['input_records']:,} in, **{r['kept']:,} kept ({r['kept_pct']}%)**, "
                  f"{r['records_per_s']} records/s (`{r['run']['command']}`, {r['run']['wall_seconds']} s)", "",
                  "| stage | in | out | dropped | modified | reasons |", "|---|---:|---:|---:|---:|---|"]
        for s in r["funnel"]:
            reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in s["reasons"].items())
            if s.get("changes"):
                reasons += (", " if reasons else "") + ", ".join(f"{k}: {v} changed" for k, v in s["changes"].items())
            lines.append(f"| {s['stage']} | {s['in']:,} | {s['out']:,} | {s['dropped']:,} | {s['modified']:,} | "
                         f"{reasons} |")
        if "pii" in r:
            p = r["pii"]
            lines += ["", f"PII: {p['records_with_placeholder']} kept records carry a placeholder "
                      f"({p['records_with_placeholder_pct']}%); {p['records_with_false_redaction']} of them a false "
                      f"redaction ({p['false_redaction_pct_of_kept']}% of kept); {p['records_inconsistent']} "
                      f"redacted in one field and not the other. Duplicates dropped: {r['duplicates']['verdicts']}. "
                      f"Mojibake: {r['mojibake']['records_with_mojibake']} records, "
                      f"{r['mojibake']['kept_and_repaired']} kept repaired."]
        lines.append("")
    if "dedup_ablation" in results:
        lines += ["| input | template_share | prompt_threshold | exact | near | kept % | verdicts on exact + near drops |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for row in results["dedup_ablation"]:
            lines.append(f"| {row['variant']} | {row['template_share']} | {row['prompt_threshold']} | {row['exact']} | "
                         f"{row['near']} | {row['kept_pct']} | {row['verdicts']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snips", type=Path, help="SNIPS JSONL: id, text, intent, slots [{name, value}]")
    parser.add_argument("--gsm8k", type=Path, help="GSM8K JSONL: question, answer")
    parser.add_argument("--variants", default="snips_bare,snips_template",
                        help=f"SNIPS variants to run, from {', '.join(VARIANTS)}")
    parser.add_argument("--sample", type=int, help="a seeded random sample of this many records of each input")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/curation_real_data"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--markdown", type=Path, help="print the Markdown summary of this results JSON and exit")
    parser.add_argument("--dedup-ablation", action="store_true",
                        help="also run the near-duplicate ablation on --snips (names and toxicity off)")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "python": platform.python_version()},
                     "sample": args.sample, "seed": args.seed, "template": TEMPLATE}
    if args.snips:
        for variant in args.variants.split(","):
            results[variant] = run_snips(args.snips, variant.strip(), args.work, args.workers, args.sample, args.seed)
    if args.gsm8k:
        results["gsm8k"] = run_gsm8k(args.gsm8k, args.work, args.workers, args.sample, args.seed)
    if args.dedup_ablation and args.snips:
        results["dedup_ablation"] = dedup_ablation(args.snips, args.work, args.workers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(markdown(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
