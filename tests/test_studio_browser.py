"""Seedbed Studio end to end in real headless Chromium (Playwright driving Debian's chromium; no browser download):
upload a small dataset, prepare it, start a LoRA job on a tiny model, close the page, restart the studio process,
re-open: the job finished (or runs) and its loss curve is drawn; chat with the result; an A/B vote changes the
leaderboard; export to GGUF. `STUDIO_SCREENSHOTS=docs pytest tests/test_studio_browser.py` refreshes the README's
screenshots."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

CHROMIUM = "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra) for browser tests")
# In CI (the acceptance): three jobs, each a process loading torch, and two model loads, kept short: the
# smallest tiny model, 8 training steps of 64 tokens, 16-token answers. Skips without playwright or chromium.
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                                 reason="needs Debian's chromium (apt install chromium)")]
SRC = Path(__file__).parents[1] / "src"


def start_studio(data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "seedbed.cli", "studio", "--data-dir", str(data_dir), "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs", timeout=2)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("the studio did not start")


def stop_studio(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def wait_for_job(page, url: str, timeout_s: float = 300) -> str:
    """Open a job's page until it is done (the page re-renders itself while the job runs)."""
    page.goto(url)
    page.wait_for_selector('#job-state[data-state="done"], #job-state[data-state="failed"], '
                           '#job-state[data-state="cancelled"]', timeout=timeout_s * 1000)
    state = page.get_attribute("#job-state", "data-state")
    assert state == "done", page.inner_text("#job-log")[-3000:]
    return state


def new_page(browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(120_000)  # a shared 2-core machine: a page that loads a tokenizer can take a while
    return page


def shot(page, name: str) -> None:
    where = os.environ.get("STUDIO_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"studio-{name}.png"), full_page=True)


def test_the_lifecycle_in_a_browser(tmp_path, tiny_model):
    lifecycle(tmp_path, str(tiny_model))


@pytest.mark.slow
def test_the_lifecycle_with_the_embedded_default_model(tmp_path):
    """The same path with Gemma 3 270M base on the CPU (issue 15: "works ... with the embedded default model"):
    its tokenizer in the preview, a LoRA job on it, chat and A/B through it, a GGUF of the result. ~10 minutes on
    2 cores."""
    lifecycle(tmp_path, "gemma-3-270m")


def lifecycle(tmp_path: Path, base_model: str) -> None:
    data_dir, port = tmp_path / "studio", free_port()
    base = f"http://127.0.0.1:{port}"
    records = [{"question": f"What is {a} plus {b}?", "answer": f"{a} plus {b} is {a + b}.\n#### {a + b}"}
               for a in range(12) for b in range(5)]
    upload = tmp_path / "sums.jsonl"
    upload.write_text("".join(json.dumps(r) + "\n" for r in records))
    studio = start_studio(data_dir, port)
    try:
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                         args=["--no-sandbox", "--disable-gpu"])
            page = new_page(browser)
            # Datasets: upload, detected shape, the template preview through the tiny model, prepare.
            page.goto(f"{base}/datasets")
            page.set_input_files("#upload-file", str(upload))
            page.click("#upload-button")
            page.wait_for_url("**/datasets/view?path=datasets/sums.jsonl")
            assert page.inner_text("#dataset-shape") == "gsm8k" and page.inner_text("#dataset-count") == "60"
            page.fill("#m-model", base_model)
            page.click("#mapping-apply")
            page.wait_for_selector("#preview .tok-trained")
            assert "#### 0" in page.inner_text("#preview .tok-trained")  # the answer is what trains
            assert "What is 0 plus 0?" in page.inner_text("#preview .tok-context")  # the prompt is not
            shot(page, "datasets")
            page.click("#prepare-button")
            page.wait_for_url("**/jobs/*")
            wait_for_job(page, page.url)
            assert page.is_visible("text=report.html")
            datasheet = page.frame_locator("#datasheet")  # the datasheet, inside the job's page
            assert datasheet.locator("h1").inner_text().startswith("Datasheet: ")
            shot(page, "prepare")

            # Jobs: a LoRA job from the form, which shows its command; the page closes, the studio restarts.
            fields = (f"base={base_model}&data=runs/data-sums/train.jsonl&val_data=runs/data-sums/validation.jsonl"
                      "&max_steps=8&batch_size=4&max_length=64&lr=0.002&logging_steps=1&eval_steps=4&out=runs/sums-lora"
                      "&truthfulness_questions=0")
            page.goto(f"{base}/jobs/new?verb=finetune&{fields}")
            page.wait_for_function("document.getElementById('recipe-command').textContent.includes('--max-steps 8')")
            assert "training time" in page.inner_text("#recipe-estimate")  # the estimate, before it starts
            page.click("#submit-job")
            page.wait_for_url("**/jobs/*")
            job_url = page.url
            page.close()
            stop_studio(studio)
            studio = start_studio(data_dir, port)
            page = new_page(browser)
            wait_for_job(page, job_url)
            train = page.get_attribute('polyline.curve.now[data-name="train"]', "points")
            assert len(train.split()) >= 6  # a drawn curve, one point a logged step
            assert page.locator('polyline.curve.now[data-name="validation"]').count() == 1
            shot(page, "job")
            page.goto(f"{base}/jobs")
            assert page.locator("#jobs .state.done").count() == 2
            shot(page, "jobs")

            # Playground: chat with the result (streamed), then a blind A/B vote moves the leaderboard.
            page.goto(f"{base}/playground?model={base_model}")
            page.select_option("#chat-model", "runs/sums-lora")
            page.fill("#chat-max-tokens", "16")
            page.fill("#chat-input", "What is 3 plus 1?")
            page.click("#chat-send")
            page.wait_for_selector(".turn.assistant[data-done]", timeout=120_000)
            assert page.locator("#chat-log .error").count() == 0
            page.check("#chat-json")  # JSON mode: constrained decoding, so even noise starts as a JSON object
            page.fill("#chat-input", "Answer in JSON.")
            page.click("#chat-send")
            page.wait_for_selector(".turn.assistant:nth-child(4)[data-done]")
            assert page.locator(".turn.assistant").nth(1).locator("span").inner_text().startswith("{")
            page.uncheck("#chat-json")
            page.select_option("#ab-model-1", "runs/sums-lora")
            page.select_option("#ab-model-2", base_model)
            assert page.is_visible("#no-votes")
            page.fill("#ab-prompt", "What is 2 plus 2?")
            page.click("#ab-ask")
            page.wait_for_selector("#ab-answers:not([hidden])", timeout=120_000)
            page.click('#ab-answers [data-vote="A"]')
            page.wait_for_selector("#leaderboard table")
            rows = page.locator("#leaderboard tbody tr")
            assert rows.count() == 2
            winner = page.inner_text("#ab-result").split("A was ")[1].split(",")[0]
            assert rows.nth(0).locator("td").nth(0).inner_text() == winner  # the voted-for model leads
            shot(page, "playground")

            # Models: the registry shows the LoRA model's lineage; export it to GGUF.
            page.goto(f"{base}/models")
            page.click("text=runs/sums-lora")
            assert base_model in page.inner_text("body")  # lineage: from the base
            shot(page, "models")
            page.select_option("#gguf-method", "f16")
            page.click("#export-gguf")
            page.wait_for_url("**/jobs/*")
            wait_for_job(page, page.url)
            assert list((data_dir / "runs" / "sums-lora-f16").glob("*.gguf"))

            # The size / quality plot (the LoRA run's validation loss; the GGUF has none, named as not measured),
            # then both ticked and compared.
            page.goto(f"{base}/models")
            assert "runs/sums-lora" in page.inner_text("#pareto-front")
            assert "runs/sums-lora-f16" in page.inner_text("#pareto-missing")
            assert page.locator("svg.scatter-chart circle.point.front").count() == 1
            shot(page, "models-list")
            page.check('input[name="model"][value="runs/sums-lora"]')
            page.check('input[name="model"][value="runs/sums-lora-f16"]')
            page.click("#compare-models")
            page.wait_for_url("**/compare?*")
            assert "quantize" in page.inner_text("#recipe-diff")  # what made each differs
            assert "runs/sums-lora ─▶ runs/sums-lora-f16" in page.inner_text("#compare-lineage")
            shot(page, "compare")
            browser.close()
    finally:
        stop_studio(studio)
