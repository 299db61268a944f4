"""What training two template-token rows costs per micro-batch at Gemma 3 270M's vocabulary (262,144 x 640, tied):
PEFT's `trainable_token_indices` (the whole matrix rebuilt with `index_copy`, a dense gradient for it) against
`seedbed.train.trainable_rows` (k extra rows only), and the plain frozen matrix as the baseline, in one process.

    python benchmarks/template_rows.py --repeats 5

The shapes are the demo's: 4 packed rows of 256 tokens in, logits at ~400 answer positions out (answer-only loss).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from seedbed.train.trainable_rows import EmbeddingRows, OutputRows

VOCAB, HIDDEN, IDS = 262_144, 640, [105, 106]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weight = torch.randn(VOCAB, HIDDEN) * 0.02
    tokens = torch.randint(0, VOCAB, (4, 256))
    hidden = torch.randn(400, HIDDEN, requires_grad=True)
    ids = torch.tensor(IDS)

    def plain():
        (F.embedding(tokens, weight).sum() + F.linear(hidden, weight).sum()).backward()

    peft_delta = torch.zeros(len(IDS), HIDDEN, requires_grad=True)

    def peft_style():  # what PEFT 0.21's TrainableTokensLayer does in forward, for the input and the tied output
        merged = weight.index_copy(0, ids, peft_delta)
        (F.embedding(tokens, merged).sum() + F.linear(hidden, merged).sum()).backward()

    delta = nn.Parameter(torch.zeros(len(IDS), HIDDEN))
    embed, head = nn.Embedding(VOCAB, HIDDEN, _weight=weight), nn.Linear(HIDDEN, VOCAB, bias=False)
    head.weight = embed.weight
    embed.weight.requires_grad_(False)
    rows_in, rows_out = EmbeddingRows(embed, ids, delta), OutputRows(head, ids, delta)

    def ours():
        (rows_in(tokens).sum() + rows_out(hidden).sum()).backward()

    results = {}
    for name, fn in (("frozen matrix (baseline)", plain), ("PEFT trainable_token_indices", peft_style),
                     ("seedbed trainable_rows", ours)):
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        results[name] = statistics.median(times)
    base = results["frozen matrix (baseline)"]
    for name, seconds in results.items():
        print(f"{name:32s} median {seconds:6.2f} s  ({seconds / base:.2f}x the frozen matrix)")


if __name__ == "__main__":
    main()
