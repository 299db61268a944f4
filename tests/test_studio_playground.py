"""The playground's JSON mode and calculator tool: both reach the one decode path (`seedbed.inference`) as the
server's `response_format` and `tools` do, through the studio's own chat endpoint."""

from __future__ import annotations

import json
from types import SimpleNamespace

from fastapi.testclient import TestClient

from seedbed.inference import load
from seedbed.inference.stops import JSON_OBJECT
from seedbed.studio.app import Studio, build_app
from seedbed.studio.playground_page import parts


class ScriptedBackend:
    """The tiny model's tokenizer, and a 'model' that answers from a script; it records each request it decodes."""

    max_batch = 8

    def __init__(self, path, script):
        inner = load(path)
        self.name, self.tokenizer, self.max_context = "scripted", inner.tokenizer, inner.max_context
        self.script, self.requests = script, []

    def decode(self, batch, admit=None):
        for request in batch:
            self.requests.append(request)
            request.completion_tokens = 3
            request.emit(self.script(self.tokenizer.decode(request.prompt_ids), request))
            request.end("stop")


def studio_with(tmp_path, model_path, backend) -> TestClient:
    studio = Studio(tmp_path / "studio")
    client = TestClient(build_app(studio, schedule=False))
    loaded, _ = parts(SimpleNamespace(app=client.app))  # parts() reads only request.app
    loaded.backends[loaded.path_of(str(model_path))] = backend
    return client


def test_the_calculator_completes_annotations_through_the_shared_loop(tmp_path, tiny_model):
    def script(prompt, request):  # writes a wrong value unless the calculator stopped it at `<<EXPR=`
        if prompt.endswith(">>"):
            return "391\n#### 391"
        return "17*23 = <<17*23=" if request.stop_when else "17*23 = <<17*23=390>>390"

    backend = ScriptedBackend(str(tiny_model), script)
    c = studio_with(tmp_path, tiny_model, backend)
    ask = {"model": str(tiny_model), "messages": [{"role": "user", "content": "What is 17 times 23?"}]}
    plain = c.post("/api/chat", json=ask)
    assert plain.status_code == 200 and "<<17*23=390>>" in plain.text  # the model's own (wrong) arithmetic
    tooled = c.post("/api/chat", json={**ask, "tools": ["calculator"]})
    assert tooled.status_code == 200 and tooled.text == "17*23 = <<17*23=391>>391\n#### 391", tooled.text
    assert c.post("/api/chat", json={**ask, "tools": ["shell"]}).status_code == 422  # no other tool
    both = c.post("/api/chat", json={**ask, "tools": ["calculator"], "json_mode": True})
    assert both.status_code == 422 and "json_mode" in both.json()["error"]


def test_json_mode_constrains_the_decode(tmp_path, tiny_model):
    backend = ScriptedBackend(str(tiny_model), lambda prompt, request: "{}")
    c = studio_with(tmp_path, tiny_model, backend)
    ask = {"model": str(tiny_model), "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
    c.post("/api/chat", json={**ask, "json_mode": True})
    c.post("/api/chat", json=ask)
    assert [r.json_schema for r in backend.requests] == [JSON_OBJECT, None]
    # The real tiny model, through the same path: random weights, yet the answer is a JSON object (or its start).
    real = TestClient(build_app(Studio(tmp_path / "real"), schedule=False))
    answer = real.post("/api/chat", json={**ask, "json_mode": True, "max_tokens": 16}).text
    free = real.post("/api/chat", json={**ask, "max_tokens": 16}).text
    assert answer.startswith("{") and not free.startswith("{"), (answer, free)
    try:
        assert isinstance(json.loads(answer), dict)
    except json.JSONDecodeError:  # a random model's key may never close within 16 tokens: then it was cut
        assert len(answer) > 2
