"""Fuzz the HTTP API with schemathesis against our own OpenAPI schema: no input may produce a 5xx.

    python benchmarks/fuzz_api.py --max-examples 100

Serves a freshly built tiny Llama (so each generated request is cheap) on a localhost port with an API key and
tight limits, then runs `schemathesis run` with the `not_a_server_error` check over every operation, in every
phase (examples, coverage, fuzzing, stateful) with positive and negative data.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=100, help="generated requests per operation")
    args = parser.parse_args()

    import uvicorn

    from seedbed.inference import load
    from seedbed.serve.app import Limits, ServerConfig, create_app
    from seedbed.serve.engine import Engine
    from seedbed.serve.tools import CALCULATOR
    from seedbed.tiny import build_tiny_llama

    model = build_tiny_llama(tempfile.mkdtemp() + "/tiny")
    config = ServerConfig({"tiny": Engine("tiny", load(str(model)))}, api_keys=["fuzz"],
                          tools={"calculator": CALCULATOR}, limits=Limits(max_prompt_tokens=256, max_tokens=16, default_max_tokens=8))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    cmd = ["schemathesis", "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "not_a_server_error",
           "--max-examples", str(args.max_examples), "--header", "Authorization: Bearer fuzz",
           "--request-timeout", "60", "--generation-deterministic",
           # every phase (stateful included) and both modes: valid data, and data the schema forbids
           "--phases", "examples,coverage,fuzzing,stateful", "--mode", "all"]
    print("+", " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    server.should_exit = True
    sys.exit(code)


if __name__ == "__main__":
    main()
