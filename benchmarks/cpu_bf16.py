"""bf16 against fp32 for Gemma 3 270M on this CPU, in one process: greedy decoding (the demo's eval) and one
LoRA training step (the demo's finetune), the two things `models.inference_dtype` and `resolve_precision("auto")`
decide by `models.cpu_has_fast_bf16()`.

    python benchmarks/cpu_bf16.py --repeats 3

Decoding: SNIPS held-out prompts, 48 new tokens, batches of 8 and 32. Training: 4 packed rows of 256 tokens, LoRA
r=16 on every linear layer, logits at ~60% of the positions (answer-only loss), fp32 master weights with and
without bf16 autocast (what the trainer's `bf16=True` does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from peft import LoraConfig, get_peft_model

    from seedbed.chat import render_prompt
    from seedbed.data.readers import read_examples
    from seedbed.inference import Sampling
    from seedbed.inference.generate import generate_requests
    from seedbed.inference.hf import TorchBackend
    from seedbed.models import cpu_has_fast_bf16, load_model
    from seedbed.recipe import FieldMapping

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cpu_has_fast_bf16(): {cpu_has_fast_bf16()}; torch threads: {torch.get_num_threads()}")

    mapping = FieldMapping(prompt="Turn this request into JSON: {text}", response_json=["intent", "slots"])
    examples = read_examples(["seedbed:data/snips_heldout.jsonl"], mapping=mapping).examples
    model, tokenizer = load_model("gemma-3-270m", dtype=torch.float32)
    prompts = [render_prompt(tokenizer, e.prompt_messages()) for e in examples[:32]]
    sampling = Sampling(greedy=True, max_new_tokens=48)
    decode = {}
    for dtype in (torch.float32, torch.bfloat16):
        backend = TorchBackend(model.to(dtype), tokenizer, name="gemma-3-270m")
        for batch in (8, 32):
            seconds = median_time(lambda: generate_requests(backend, prompts[:batch], sampling, batch), args.repeats)
            decode[(dtype, batch)] = batch * 48 / seconds
    for batch in (8, 32):
        fp32, bf16 = decode[(torch.float32, batch)], decode[(torch.bfloat16, batch)]
        print(f"decode, batch {batch:2d}: fp32 {fp32:6.1f} tok/s, bf16 {bf16:6.1f} tok/s ({bf16 / fp32:.2f}x)")

    torch.manual_seed(0)
    lora = get_peft_model(model.to(torch.float32), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                                task_type="CAUSAL_LM"))
    ids = torch.randint(0, 200_000, (4, 256))
    keep = torch.arange(100, 254)

    def step(autocast: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = lora(input_ids=ids, logits_to_keep=keep, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, keep + 1].flatten())
        loss.backward()

    fp32 = median_time(lambda: step(False), args.repeats)
    bf16 = median_time(lambda: step(True), args.repeats)
    print(f"LoRA step (4 x 256 tokens): fp32 {fp32:5.2f} s, bf16 autocast {bf16:5.2f} s ({fp32 / bf16:.2f}x faster)")


if __name__ == "__main__":
    main()
