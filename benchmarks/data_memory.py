"""Peak memory of `seedbed data prepare` as the input grows: the driver's RSS should stay flat.

    python benchmarks/data_memory.py 100000

Makes N synthetic ~1.1 KB English records (Faker paragraphs, words shuffled), runs the pipeline with 2 workers and
person names off, and samples the RSS of the driver and of all its processes every 0.2 s.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from faker import Faker

from seedbed.curate.prepare import prepare
from seedbed.recipe import DataRecipe


def main(n: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="seedbed-mem-"))
    rng, fake = random.Random(0), Faker()
    Faker.seed(1)
    paragraphs = [" ".join(fake.paragraphs(nb=12)) for _ in range(2000)]
    data = work / "in.jsonl"
    with data.open("w") as out:
        for i in range(n):
            words = paragraphs[i % 2000].split()
            rng.shuffle(words)
            out.write(json.dumps({"id": f"b{i}", "text": " ".join(words)[:1100]}) + "\n")
    peak = {"driver": 0, "all": 0}
    done = threading.Event()

    def watch():
        me = psutil.Process()
        while not done.is_set():
            try:
                rss = me.memory_info().rss
                total = rss + sum(c.memory_info().rss for c in me.children(recursive=True))
                peak["driver"], peak["all"] = max(peak["driver"], rss), max(peak["all"], total)
            except psutil.Error:
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    report = prepare(DataRecipe(inputs=[str(data)], out=str(work / "out"), workers=2, pii={"names": False}, quiet=True))
    done.set()
    thread.join()
    return {"records": n, "input_mb": round(data.stat().st_size / 1e6, 1), "seconds": report["seconds"],
            "records_per_s": report["records_per_s"], "peak_driver_mb": round(peak["driver"] / 1e6),
            "peak_all_processes_mb": round(peak["all"] / 1e6)}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)))
