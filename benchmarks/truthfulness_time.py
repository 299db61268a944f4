"""Time TruthfulQA MC1 + MC2 by likelihood (the model card's figure) on seeded subsets of questions.

    PYTHONPATH=src python benchmarks/truthfulness_time.py 10 50                       # torch, Gemma 3 270M
    ENGINE=llama.cpp MODEL=runs/q4 PYTHONPATH=src python benchmarks/truthfulness_time.py 10   # a GGUF directory

Prints, per subset size, the figures and both wall and process CPU time: on a shared machine the wall time
depends on the other jobs, the CPU time much less (divide by the threads for an idle machine's wall time).
"""

import json
import os
import sys
import time

import torch

from seedbed.evaluate.likelihood import truthfulness
from seedbed.inference import load

engine, model = os.environ.get("ENGINE", "torch"), os.environ.get("MODEL", "gemma-3-270m")
started = time.time()
backend = load(model, engine, threads=2)
dtype = getattr(getattr(backend, "model", None), "dtype", engine)
print("load", round(time.time() - started, 1), dtype, "torch threads", torch.get_num_threads(), flush=True)
for n in map(int, sys.argv[1:]):
    wall, cpu = time.time(), time.process_time()
    figures = truthfulness(backend, n)
    print(n, json.dumps(figures), "wall", round(time.time() - wall, 1), "cpu", round(time.process_time() - cpu, 1),
          "loadavg", os.getloadavg()[0], flush=True)
