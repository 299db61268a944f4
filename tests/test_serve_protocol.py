"""Every OpenAI field the server supports, round-tripped through the official `openai` SDK against the real
server on the tiny model: n, prompt lists (streamed too), logit_bias, presence/frequency penalties, tool_choice
(none / auto / required / named), parallel_tool_calls; and a field we do not support is a 400 naming it."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import running_server
from seedbed.inference import load
from seedbed.serve.app import Limits, ServerConfig, create_app
from seedbed.serve.engine import Engine

CHAT = [{"role": "user", "content": "What is two plus three?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                          "required": ["city"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now.",
         "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}


@pytest.fixture(scope="module")
def client(tiny_model):
    engine = Engine("tiny", load(str(tiny_model)), max_batch=8, batch_window_ms=5)
    with running_server(create_app(ServerConfig({"tiny": engine}, limits=Limits(max_tokens=64)))) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0), engine


def test_n_choices_whole_and_streamed(client):
    client, _ = client
    one = client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=8)
    three = client.chat.completions.create(model="tiny", messages=CHAT, temperature=0, max_tokens=8, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert {c.message.content for c in three.choices} == {one.choices[0].message.content}  # greedy: all alike
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the choices share the prompt
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    sampled = dict(model="tiny", messages=CHAT, temperature=1.0, max_tokens=8, n=2, seed=7)
    whole = client.chat.completions.create(**sampled)
    assert whole.choices[0].message.content != whole.choices[1].message.content  # seeds 7 and 8
    texts = {0: "", 1: ""}
    for chunk in client.chat.completions.create(**sampled, stream=True):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    assert texts == {c.index: c.message.content for c in whole.choices}


def test_prompt_lists_stream_each_choice_by_index(client):
    client, _ = client
    prompts = ["Two plus three", "Count the apples", "Hello"]
    whole = client.completions.create(model="tiny", prompt=prompts, temperature=0, max_tokens=6, n=2)
    assert [c.index for c in whole.choices] == list(range(6))
    texts: dict[int, str] = {}
    finished = set()
    for chunk in client.completions.create(model="tiny", prompt=prompts, temperature=0, max_tokens=6, n=2,
                                           stream=True):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                finished.add(c.index)
    assert finished == set(range(6))
    assert texts == {c.index: c.text for c in whole.choices}
    assert [texts[2 * i] for i in range(3)] == [texts[2 * i + 1] for i in range(3)]  # greedy: n choices alike


def test_logit_bias_bans_and_forces_tokens(client):
    client, engine = client
    tokenizer = engine.tokenizer
    plain = client.completions.create(model="tiny", prompt="Two plus three", temperature=0, max_tokens=6)
    first = tokenizer(plain.choices[0].text, add_special_tokens=False)["input_ids"][0]
    banned = client.completions.create(model="tiny", prompt="Two plus three", temperature=0, max_tokens=6,
                                       logit_bias={str(first): -100})
    assert not banned.choices[0].text.startswith(tokenizer.decode([first]))
    forced_id = tokenizer("apples", add_special_tokens=False)["input_ids"][0]
    forced = client.completions.create(model="tiny", prompt="Two plus three", temperature=0, max_tokens=4,
                                       logit_bias={str(forced_id): 100})
    assert forced.choices[0].text == tokenizer.decode([forced_id] * 4)


def test_presence_and_frequency_penalties_stop_repeats(client):
    client, engine = client
    forced_id = engine.tokenizer("apples", add_special_tokens=False)["input_ids"][0]
    ask = dict(model="tiny", prompt="Two plus three", temperature=0, max_tokens=6, logit_bias={str(forced_id): 10})
    repeated = client.completions.create(**ask).choices[0].text
    assert repeated == engine.tokenizer.decode([forced_id] * 6)  # the bias alone wins every step
    for penalty in ({"presence_penalty": 2.0, "frequency_penalty": 2.0},):
        text = client.completions.create(**ask, **penalty).choices[0].text  # 10 - 2 - 2n falls behind
        ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids.count(forced_id) < 6 and ids[0] == forced_id


def test_tool_choice_named_and_required_make_a_valid_call(client):
    client, _ = client
    named = client.chat.completions.create(model="tiny", messages=CHAT, tools=[WEATHER, CLOCK], temperature=0,
                                           max_tokens=40, tool_choice={"type": "function",
                                                                       "function": {"name": "get_weather"}})
    choice = named.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"
    arguments = json.loads(choice.message.tool_calls[0].function.arguments)
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)
    required = client.chat.completions.create(model="tiny", messages=CHAT, tools=[WEATHER, CLOCK], temperature=0,
                                              max_tokens=64, tool_choice="required", parallel_tool_calls=False)
    calls = required.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name in ("get_weather", "get_time")
    none = client.chat.completions.create(model="tiny", messages=CHAT, tools=[WEATHER], temperature=0,
                                          max_tokens=8, tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason != "tool_calls"


@pytest.mark.parametrize("extra, param", [
    ({"frobnicate": 1}, "frobnicate"),
    ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]}, "tool_choice"),
])
def test_an_unsupported_field_is_a_400_naming_it(client, extra, param):
    client, _ = client
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, extra_body=extra)
    assert refused.value.body["param"] == param
