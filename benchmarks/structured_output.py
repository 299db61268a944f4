"""Structured output: decode speed with and without a JSON-schema constraint, and how many answers are valid.

    python benchmarks/structured_output.py --engine torch --model tiny            # the random 2-layer Llama
    python benchmarks/structured_output.py --engine torch --model gemma-3-270m    # Gemma 3 270M in transformers
    python benchmarks/structured_output.py --engine llama.cpp --model gemma-3-270m --threads 2   # the Q4_K_M GGUF

One process, one loaded model, the same SNIPS-like prompts: every repeat decodes them all without the constraint
and with SNIPS's schema (the order alternating between repeats, so drift in a shared machine's load hits both
alike), after one warm-up pass of each. Decode speed is a request's tokens per second from its first shown piece
to its `--window`-th token (or its end), so prompt evaluation is left out and both conditions are timed at the
same positions; the medians over requests and repeats are reported, and their ratio. Every constrained answer of the last repeat is checked against the schema
(jsonschema). Greedy throughout, so repeats decode the same tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

INTENTS = ["AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook", "SearchCreativeWork",
           "SearchScreeningEvent"]
SNIPS = {
    "type": "object", "additionalProperties": False, "required": ["intent", "slots"],
    "properties": {
        "intent": {"type": "string", "enum": INTENTS},
        "slots": {"type": "array", "maxItems": 3, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "value"],
            "properties": {"name": {"type": "string", "maxLength": 24}, "value": {"type": "string", "maxLength": 24}},
        }},
    },
}
UTTERANCES = [
    "Add Blue Monday to my workout playlist", "Book a table for two at an Italian place tonight",
    "What's the weather in Berlin tomorrow?", "Play some jazz by Miles Davis", "Rate this novel four out of six",
    "Find the TV series Dark", "When is Dune showing at the Odeon?", "Will it rain in Paris on Sunday?",
    "Put Yesterday on my road trip list", "Reserve a restaurant in Chicago for six people",
    "Play the latest album by Adele", "Give The Hobbit five stars", "Find me the soundtrack of Amelie",
    "What movies are playing near me tonight?", "Is it going to snow in Denver this weekend?",
    "Add this artist to my chill playlist", "Book a sushi bar for Friday at eight", "Play rock music from the 80s",
    "I rate this textbook a two", "Search for the game Hollow Knight", "Show me the schedule at the Rex cinema",
    "How hot will it be in Cairo at noon?", "Play something by Nina Simone on Spotify", "Book a pub for 4 on Monday",
]


def prompt_text(utterance: str) -> str:
    return ("Classify this request for a voice assistant. Answer with JSON: its intent (one of "
            f"{', '.join(INTENTS)}) and its slots (name and value).\nRequest: {utterance}")


def load_backend(engine: str, model: str, threads: int | None):
    from seedbed.inference import load

    if model == "tiny":
        from seedbed.tiny import build_tiny_llama

        model = str(build_tiny_llama(Path(tempfile.mkdtemp()) / "tiny"))
        if engine == "llama.cpp":
            from seedbed.quantize.gguf_export import write_gguf_model

            model = str(write_gguf_model(Path(model), Path(tempfile.mkdtemp()) / "f32", "f32").parent)
    return load(model, engine, threads)


def decode_all(backend, prompts: list[list[int]], schema: dict | None, max_tokens: int, batch: int,
               window: int) -> list[dict]:
    """Decode every prompt greedily (`batch` at a time); per request: text, tokens, finish reason, and decode speed
    over its first `window` tokens (from its first shown piece; the same positions with and without a schema)."""
    from seedbed.inference.request import Request

    done = []
    for start in range(0, len(prompts), batch):
        requests, marks = [], []
        for ids in prompts[start : start + batch]:
            mark: list[tuple[float, int]] = []  # (time, completion tokens) at each shown piece and at the end
            request = Request(ids, max_tokens=max_tokens, temperature=0, json_schema=schema)

            def seen(*_piece, mark=mark, request=request):
                mark.append((time.perf_counter(), request.completion_tokens))

            request.on_piece, request.on_end = seen, seen
            requests.append(request)
            marks.append(mark)
        backend.decode(requests)
        for request, mark in zip(requests, marks):
            inside = [m for m in mark if m[1] <= window] or mark[:1]
            (t0, n0), (t1, n1) = mark[0], inside[-1]
            done.append({"text": request.text, "tokens": request.completion_tokens, "finish": request.finish_reason,
                         "tok_s": (n1 - n0) / (t1 - t0) if n1 > n0 and t1 > t0 else None})
    return done


def through_the_api(backend, utterances: list[str], max_tokens: int) -> dict:
    """Every utterance through `seedbed serve`'s app on a localhost port with the official `openai` SDK, greedy
    and sampled (temperature 1, a seed each), `response_format` json_schema: how many answers the schema accepts."""
    import socket
    import threading

    import openai
    import uvicorn

    from seedbed.serve.app import Limits, ServerConfig, create_app
    from seedbed.serve.engine import Engine

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ServerConfig({"m": Engine("m", backend)}, limits=Limits(max_tokens=max_tokens))
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    response_format = {"type": "json_schema", "json_schema": {"name": "snips", "schema": SNIPS, "strict": True}}
    counts = {}
    try:
        for name, settings in (("greedy", {"temperature": 0}), ("sampled", {"temperature": 1.0})):
            valid = stopped = 0
            for i, utterance in enumerate(utterances):
                reply = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": prompt_text(utterance)}], max_tokens=max_tokens,
                    response_format=response_format, seed=i, **settings)
                valid += problem(reply.choices[0].message.content) is None
                stopped += reply.choices[0].finish_reason == "stop"
            counts[name] = {"valid": valid, "stop": stopped, "requests": len(utterances)}
            print(f"api {name}: {valid}/{len(utterances)} valid", file=sys.stderr)
    finally:
        server.should_exit = True
    return counts


def problem(text: str) -> str | None:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), SNIPS)
    except (json.JSONDecodeError, jsonschema.ValidationError) as e:
        return str(e).splitlines()[0]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["torch", "llama.cpp"], default="torch")
    parser.add_argument("--model", default="tiny", help="'tiny' (built on the fly), gemma-3-270m, or a path")
    parser.add_argument("--prompts", type=int, default=len(UTTERANCES), help="how many of the utterances to use")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--window", type=int, default=48, help="decode speed is measured over the first N tokens")
    parser.add_argument("--batch", type=int, default=1, help="torch: requests decoded together")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads, either engine (default: all cores)")
    parser.add_argument("--api", action="store_true", help="also send every prompt through the server's API")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    from seedbed.chat import render_prompt

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    backend = load_backend(args.engine, args.model, args.threads)
    print(f"loaded {args.model} on {args.engine} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    tokenizer = backend.tokenizer
    prompts = [tokenizer(render_prompt(tokenizer, [{"role": "user", "content": prompt_text(u)}]),
                         add_special_tokens=False)["input_ids"] for u in UTTERANCES[: args.prompts]]
    started = time.perf_counter()
    backend.compile_schema(SNIPS)
    compile_s = time.perf_counter() - started
    batch = args.batch if args.engine == "torch" else 1
    for schema in (None, SNIPS):  # warm-up: first calls allocate, and llama.cpp's threads settle
        decode_all(backend, prompts[:2], schema, 16, batch, args.window)

    speeds: dict[str, list[float]] = {"free": [], "json": []}
    answers = []
    for repeat in range(args.repeats):
        order = [("free", None), ("json", SNIPS)]
        for name, schema in order if repeat % 2 == 0 else order[::-1]:
            results = decode_all(backend, prompts, schema, args.max_tokens, batch, args.window)
            speeds[name] += [r["tok_s"] for r in results if r["tok_s"]]
            print(f"repeat {repeat} {name}: median {statistics.median(speeds[name][-len(results):]):.1f} tok/s",
                  file=sys.stderr)
            if name == "json":
                answers = results
    invalid = [(a["text"], problem(a["text"])) for a in answers if problem(a["text"])]
    free, constrained = statistics.median(speeds["free"]), statistics.median(speeds["json"])
    report = {
        "engine": args.engine, "model": args.model, "threads": args.threads or torch.get_num_threads(), "batch": batch,
        "prompts": len(prompts), "repeats": args.repeats, "max_tokens": args.max_tokens, "window": args.window,
        "schema_compile_s": round(compile_s, 3),
        "free_tok_s": round(free, 2), "json_tok_s": round(constrained, 2), "ratio": round(constrained / free, 3),
        "valid": len(answers) - len(invalid), "answers": len(answers),
        "mean_json_tokens": round(statistics.mean(a["tokens"] for a in answers), 1),
        "finish_stop": sum(a["finish"] == "stop" for a in answers),
        "examples": [a["text"] for a in answers[:3]], "invalid": invalid[:3],
    }
    if args.api:
        report["api"] = through_the_api(backend, UTTERANCES[: args.prompts], args.max_tokens)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"\n| {args.engine} | {args.model} | {batch} | {free:.1f} | {constrained:.1f} | "
          f"**{constrained / free:.2f}x** | {report['valid']}/{report['answers']} | {compile_s * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
