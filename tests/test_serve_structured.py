"""Structured output: `response_format` through the real server and the official `openai` SDK (torch engine).

The tiny Llama is randomly initialised: nothing but constrained decoding makes its answers JSON, let alone JSON
that a schema accepts, so every valid answer here is the constraint's doing. Its strings and lists are bounded in
the schema so that a random model finishes within max_tokens (a trained model closes them by itself).
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from conftest import running_server
from seedbed.inference import load
from seedbed.inference.request import Request
from seedbed.serve.app import Limits, ServerConfig, create_app
from seedbed.serve.engine import Engine

INTENTS = ["AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook", "SearchCreativeWork",
           "SearchScreeningEvent"]
SNIPS = {  # SNIPS's intents and slots, in OpenAI's strict style (every object closed)
    "type": "object", "additionalProperties": False, "required": ["intent", "slots"],
    "properties": {
        "intent": {"type": "string", "enum": INTENTS},
        "slots": {"type": "array", "maxItems": 2, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "value"],
            "properties": {"name": {"type": "string", "maxLength": 8}, "value": {"type": "string", "maxLength": 8}},
        }},
    },
}
REQUESTS = [  # SNIPS-like utterances, one or more per intent
    "Add Blue Monday to my workout playlist", "Book a table for two at an Italian place tonight",
    "What's the weather in Berlin tomorrow?", "Play some jazz by Miles Davis", "Rate this novel four out of six",
    "Find the TV series Dark", "When is Dune showing at the Odeon?", "Will it rain in Paris on Sunday?",
]
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "snips", "schema": SNIPS, "strict": True}}
KEY = "sk-test-key"


def snips_problem(text: str) -> str | None:
    """Why `text` is not an answer SNIPS's schema accepts, or None: jsonschema's verdict, and our own check."""
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not JSON: {e}"
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        try:
            jsonschema.validate(answer, SNIPS)
        except jsonschema.ValidationError as e:
            return e.message
    ok = (isinstance(answer, dict) and set(answer) == {"intent", "slots"} and answer["intent"] in INTENTS
          and isinstance(answer["slots"], list) and len(answer["slots"]) <= 2
          and all(isinstance(s, dict) and set(s) == {"name", "value"}
                  and all(isinstance(v, str) and len(v) <= 8 for v in s.values()) for s in answer["slots"]))
    return None if ok else "does not match the SNIPS schema"


def messages(utterance: str) -> list[dict]:
    return [{"role": "user", "content": f"Give the intent and slots of: {utterance}"}]


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine("tiny", load(str(tiny_model)), max_batch=8, batch_window_ms=20)


@pytest.fixture(scope="module")
def server(engine):
    config = ServerConfig({"tiny": engine}, api_keys=[KEY], limits=Limits(max_prompt_tokens=200, max_tokens=256))
    with running_server(create_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


def test_every_answer_keeps_to_the_json_schema(client):
    """Greedy and sampled, every answer of a random model is JSON that the schema accepts, and ends with "stop"."""
    for i, utterance in enumerate(REQUESTS):
        sampled = {"temperature": 0} if i % 2 else {"temperature": 1.0, "seed": i}
        reply = client.chat.completions.create(model="tiny", messages=messages(utterance), max_tokens=256,
                                               response_format=RESPONSE_FORMAT, **sampled)
        content = reply.choices[0].message.content
        assert snips_problem(content) is None, (utterance, content, snips_problem(content))
        assert reply.choices[0].finish_reason == "stop"


def test_streamed_json_joins_to_the_whole_answer(client):
    kwargs = dict(model="tiny", messages=messages(REQUESTS[0]), max_tokens=256, temperature=0,
                  response_format=RESPONSE_FORMAT)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason == "stop" and snips_problem(whole) is None


def test_json_object_and_text_completions(client):
    # Any JSON object: a random model's first key may never close, so only its start and a clean cut are certain.
    reply = client.chat.completions.create(model="tiny", messages=messages(REQUESTS[1]), max_tokens=16,
                                           temperature=0, response_format={"type": "json_object"})
    content, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
    assert content.startswith('{"') and (finish == "length" or isinstance(json.loads(content), dict))
    text = client.completions.create(model="tiny", prompt="JSON:", max_tokens=256, temperature=0,
                                     extra_body={"response_format": RESPONSE_FORMAT})
    assert snips_problem(text.choices[0].text) is None and text.choices[0].finish_reason == "stop"
    plain = client.chat.completions.create(model="tiny", messages=messages(REQUESTS[1]), max_tokens=8,
                                           temperature=0, response_format={"type": "text"})
    assert plain.choices[0].message.content == client.chat.completions.create(
        model="tiny", messages=messages(REQUESTS[1]), max_tokens=8, temperature=0).choices[0].message.content


@pytest.mark.parametrize("response_format, says", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, "Invalid type"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
        "a": {"$ref": "#/$defs/missing"}}}}}, "missing"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(("}}}, "regex"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1, 2]}}, "dict"),
    ({"type": "json_schema"}, "needs a json_schema"),
    ({"type": "xml"}, "json_object"),
])
def test_a_bad_schema_is_a_400_naming_response_format(server, response_format, says):
    reply = httpx.post(f"{server}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                       json={"model": "tiny", "messages": messages("hi"), "response_format": response_format})
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["param"].startswith("response_format"), error
    assert says in error["message"] and error["type"] == "invalid_request_error"


def test_tools_and_a_schema_together_are_refused(client):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny", messages=messages("hi"), tools=[tool],
                                       response_format={"type": "json_object"})
    assert error.value.body["param"] == "response_format"


def test_rows_with_and_without_a_schema_share_a_batch(engine):
    """A batch mixing constrained and free rows gives each row what it gets decoded alone."""
    backend, tokenizer = engine.backend, engine.tokenizer
    from seedbed.chat import render_prompt

    ids = [tokenizer(render_prompt(tokenizer, messages(u)), add_special_tokens=False)["input_ids"]
           for u in REQUESTS[:4]]
    schemas = [SNIPS, None, SNIPS, None]

    def requests():
        return [Request(i, max_tokens=256 if s else 24, temperature=0, json_schema=s) for i, s in zip(ids, schemas)]

    together = requests()
    backend.decode(together)
    alone = requests()
    for r in alone:
        backend.decode([r])
    assert [r.text for r in together] == [r.text for r in alone]
    assert all(snips_problem(r.text) is None and r.finish_reason == "stop" for r in together if r.json_schema)
    assert all(snips_problem(r.text) is not None for r in together if not r.json_schema)  # free rows: not JSON
