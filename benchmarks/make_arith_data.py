"""Build the arithmetic task of the compression benchmark from GSM8K's calculator annotations (run once; the
output is committed under benchmarks/data with its license note).

    python benchmarks/make_arith_data.py ../shared/data/gsm8k_train.jsonl benchmarks/data

GSM8K solutions mark each calculation as <<48/2=24>>. We keep single-operation integer calculations (+ - * /)
with operands below 1000, de-duplicate them, and split them so no expression is in both files: the task a
calculator tool takes over in `seedbed serve`, and one where a 270M model's accuracy is not zero.
"""

import json
import random
import re
import sys
from pathlib import Path

ANNOTATION = re.compile(r"<<(\d{1,3})\s*([-+*/])\s*(\d{1,3})=(-?\d+)>>")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


def main(source: str, out: str, n_train: int = 600, n_heldout: int = 100) -> None:
    found = {}
    for line in Path(source).read_text().splitlines():
        for a, op, b, result in ANNOTATION.findall(json.loads(line)["answer"]):
            if OPS[op](int(a), int(b)) == int(result):  # a few annotations are wrong; keep only true ones
                found[f"{a}{op}{b}"] = int(result)
    items = sorted(found.items())
    random.Random(0).shuffle(items)
    records = [{"question": f"Compute {expr}.", "answer": f"#### {value}"} for expr, value in items]
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, part in (("arith_train.jsonl", records[:n_train]),
                       ("arith_heldout.jsonl", records[n_train:n_train + n_heldout])):
        (Path(out) / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    print(f"{len(items)} distinct calculations; wrote {n_train} train and {n_heldout} held-out to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
