"""Tiny models built on the fly: a 2-layer Llama with a small byte-level BPE tokenizer and a chat template,
saved in standard Hugging Face format, so every path runs in seconds with no download."""

from __future__ import annotations

import time
import json
import os
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no hub look-ups in tests
from pathlib import Path

import pytest

from seedbed.tiny import build_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A freshly initialised 2-layer Llama directory with a chat template."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory) -> Path:
    """The same, with no chat template, as a base model has."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama-base", chat_template=None)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep caches and MLflow runs of a test inside its own temporary directory."""
    monkeypatch.setenv("SEEDBED_HOME", str(tmp_path / "seedbed_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _short_truthfulness(monkeypatch):
    """Model cards' TruthfulQA figures on at most 2 questions, not the recipe default: each tiny fine-tune in the
    suite would otherwise score hundreds (test_likelihood.py asks for the count it checks)."""
    from seedbed.train import truthfulness

    real = truthfulness.measure
    monkeypatch.setattr(truthfulness, "measure",
                        lambda model_dir, base, questions, seed=truthfulness.SUBSET_SEED:
                        real(model_dir, base, min(questions, 2), seed))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def qa_records(n: int = 40) -> list[dict]:
    """GSM8K-shaped records about small sums: learnable in a few steps by a tiny model."""
    return [
        {"question": f"What is {a} plus {b}?", "answer": f"{a} plus {b} is <<{a}+{b}={a + b}>>{a + b}.\n#### {a + b}"}
        for a, b in [(i % 7, (3 * i) % 5) for i in range(n)]
    ]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app):
    """Serve an ASGI app with uvicorn on a free localhost port in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{srv.config.port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def wait_for(predicate, timeout=120.0, every=0.2):
    """Poll `predicate` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(every)
    raise AssertionError("timed out")
