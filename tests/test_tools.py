"""The tool protocol without HTTP serving: declarations, YAML and entry-point tools, parsing calls, the tool loop."""

from __future__ import annotations

import asyncio
import doctest
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.metadata import EntryPoint

import pytest

from seedbed.serve import tools as tools_module
from seedbed.serve.tools import (
    CALCULATOR, Tool, ToolError, load_entry_point_tools, load_tools_yaml, messages_for_template, parse_tool_calls,
    run_tool_loop, tool_from_openai, tools_system_prompt,
)

CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def loop(generate_reply, messages, tools, **kwargs):
    """`run_tool_loop` with a plain function as the model."""
    async def ask(conversation):
        return generate_reply(conversation)

    return asyncio.run(run_tool_loop(ask, messages, tools, **kwargs))


def _block(name: str, arguments: dict) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_spec_is_an_openai_function_tool():
    assert CALCULATOR.spec() == {"type": "function", "function": {
        "name": "calculator", "description": CALCULATOR.description, "parameters": CALCULATOR.parameters}}
    assert CALCULATOR.parameters["required"] == ["expression"]
    assert CALCULATOR.parameters["properties"]["expression"]["type"] == "string"
    assert CALCULATOR.run({"expression": "48/2"}) == "24"


def test_openai_declarations_round_trip_and_default_to_no_arguments():
    tool = tool_from_openai(CALCULATOR.spec())
    assert (tool.name, tool.parameters, tool.run) == ("calculator", CALCULATOR.parameters, None)  # the client's
    assert tool_from_openai({"type": "function", "function": {"name": "now"}}).parameters["type"] == "object"


@pytest.mark.parametrize("spec, field", [
    ("calculator", "tools\\[\\].type"),
    ({"type": "retrieval"}, "tools\\[\\].type"),
    ({"type": "function"}, "tools\\[\\].function:"),
    ({"type": "function", "function": {"name": "bad name!"}}, "tools\\[\\].function.name"),
    ({"type": "function", "function": {"name": "x" * 65}}, "tools\\[\\].function.name"),
    ({"type": "function", "function": {"name": "calc\n"}}, "tools\\[\\].function.name"),
    ({"type": "function", "function": {"name": "f", "description": 3}}, "tools\\[\\].function.description"),
    ({"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}, "function.parameters"),
    ({"type": "function", "function": {"name": "f", "parameters": ["a"]}}, "function.parameters"),
])
def test_openai_declarations_are_validated(spec, field):
    with pytest.raises(ToolError, match=field):
        tool_from_openai(spec)


class _Endpoint(BaseHTTPRequestHandler):
    """Answers POST /result with {"result": ...}, /text with plain text, /fail with 500; records what it got."""

    received: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, self.headers["Content-Type"], body))
        if self.path == "/trickle":  # one byte at a time, each well inside httpx's per-read timeout
            self.send_response(200)
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
            return
        if self.path == "/result":
            status, reply = 200, json.dumps({"result": f"order {body['id']} shipped"})
        elif self.path == "/big":
            status, reply = 200, "y" * (tools_module.MAX_TOOL_REPLY_BYTES + 1)
        else:
            status, reply = (200, "plain answer") if self.path == "/text" else (500, "broken")
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), _Endpoint)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _Endpoint.received = []
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_yaml_tools_post_their_arguments(tmp_path, endpoint):
    path = tmp_path / "tools.yaml"
    path.write_text(f"""
- name: order_status
  description: Where an order is.
  parameters: {{type: object, properties: {{id: {{type: integer}}}}, required: [id]}}
  endpoint: {endpoint}/result
- name: plain
  endpoint: {endpoint}/text
- name: broken
  endpoint: {endpoint}/fail
""")
    status, plain, broken = load_tools_yaml(path)
    assert status.spec()["function"]["parameters"]["required"] == ["id"] and plain.description == ""
    assert status.run({"id": 7}) == "order 7 shipped"  # the JSON reply's 'result' field
    assert plain.run({"q": "hi"}) == "plain answer"  # otherwise the reply's text
    assert _Endpoint.received == [("/result", "application/json", {"id": 7}),
                                  ("/text", "application/json", {"q": "hi"})]

    # An HTTP error is a tool failure, which the loop hands to the model as an error result.
    script = iter([_block("broken", {})])
    final, appended = loop(lambda m: next(script, "gave up"), [], {"broken": broken})
    assert final == "gave up" and appended[1]["content"].startswith("error:") and "500" in appended[1]["content"]


@pytest.mark.parametrize("text, message", [
    ("name: x", "expected a YAML list"),
    ("- just a string", "tool 0: expected a mapping"),
    ("- {endpoint: 'http://h'}", "tool 0: field 'name'"),
    ("- {name: ok, endpoint: 'http://h'}\n- {name: 'bad name', endpoint: 'http://h'}", "tool 1: field 'name'"),
    ("- {name: t}", r"tool 0 \(t\): field 'endpoint'"),
    ("- {name: t, endpoint: 'file:///etc/passwd'}", "field 'endpoint'"),
    ("- {name: t, endpoint: 'http://h', description: [1]}", "field 'description'"),
    ("- {name: t, endpoint: 'http://h', parameters: {type: array}}", "field 'parameters'"),
    ("- [unclosed", "cannot read tools"),
])
def test_yaml_tool_errors_name_the_entry_and_field(tmp_path, text, message):
    path = tmp_path / "tools.yaml"
    path.write_text(text)
    with pytest.raises(ToolError, match=message):
        load_tools_yaml(path)
    with pytest.raises(ToolError, match="cannot read tools"):
        load_tools_yaml(tmp_path / "missing.yaml")


def make_echo_tool() -> Tool:
    return Tool("echo", "Says it back.", {"type": "object"}, run=lambda arguments: json.dumps(arguments))


def test_entry_point_tools(monkeypatch):
    points = [EntryPoint("calculator", "seedbed.serve.tools:CALCULATOR", "seedbed.tools"),
              EntryPoint("echo", f"{__name__}:make_echo_tool", "seedbed.tools")]
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: points if group == "seedbed.tools" else [])
    assert [tool.name for tool in load_entry_point_tools()] == ["calculator", "echo"]
    assert load_entry_point_tools("other.group") == []
    points.append(EntryPoint("junk", "seedbed.serve.tools:EMPTY_SCHEMA", "seedbed.tools"))
    with pytest.raises(ToolError, match="entry point junk"):
        load_entry_point_tools()


def test_system_prompt_describes_each_tool_and_the_call_format():
    prompt = tools_system_prompt([CALCULATOR, make_echo_tool()])
    assert json.dumps(CALCULATOR.spec()["function"]) in prompt and '"name": "echo"' in prompt
    assert '<tool_call>{"name": NAME, "arguments": {...}}</tool_call>' in prompt


def test_parse_one_block():
    text, calls = parse_tool_calls("Let me compute. " + _block("calculator", {"expression": "12*(3+4)"}))
    assert text == "Let me compute." and len(calls) == 1
    assert calls[0].name == "calculator" and json.loads(calls[0].arguments) == {"expression": "12*(3+4)"}
    assert CALL_ID.fullmatch(calls[0].id)


def test_parse_two_blocks():
    text, calls = parse_tool_calls(_block("a", {"x": 1}) + "\n and \n" + _block("b", {}))
    assert text == "and" and [c.name for c in calls] == ["a", "b"] and calls[0].id != calls[1].id


def test_parse_bare_json_reply():
    text, calls = parse_tool_calls(' {"name": "calculator", "arguments": {"expression": "1+1"}} ')
    assert text == "" and calls[0].name == "calculator"
    # JSON that merely has a "name" is an answer, not a call
    assert parse_tool_calls('{"name": "Alice", "age": 3}') == ('{"name": "Alice", "age": 3}', [])


def test_parse_invalid_json_stays_in_the_text():
    reply = "Trying <tool_call>{not json}</tool_call> " + _block("ok", {})
    text, calls = parse_tool_calls(reply)
    assert text == "Trying <tool_call>{not json}</tool_call>" and [c.name for c in calls] == ["ok"]
    assert parse_tool_calls("no calls at all") == ("no calls at all", [])
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert calls[0].arguments == '{"a": 1}'  # arguments already given as JSON text are kept as they are


def test_tool_loop_answers_with_the_tool_result():
    seen = []

    def generate_reply(messages):
        seen.append(messages)
        results = [m["content"] for m in messages if m["role"] == "tool"]
        if not results:
            return "I will compute. " + _block("calculator", {"expression": "12*(3+4)"})
        return f"12 times 7 is {results[-1]}."

    question = [{"role": "user", "content": "What is 12 times 7?"}]
    final, appended = loop(generate_reply, question, {"calculator": CALCULATOR})
    assert final == "12 times 7 is 84." and len(seen) == 2 and question == [seen[0][0]]
    turn, result = appended
    call = turn["tool_calls"][0]
    assert turn["role"] == "assistant" and turn["content"] == "I will compute."
    assert call["type"] == "function" and CALL_ID.fullmatch(call["id"])
    assert call["function"] == {"name": "calculator", "arguments": '{"expression": "12*(3+4)"}'}
    assert result == {"role": "tool", "tool_call_id": call["id"], "name": "calculator", "content": "84"}
    assert seen[1] == question + appended


def test_tool_loop_is_bounded():
    asked = []
    call = _block("calculator", {"expression": "1+1"})
    final, appended = loop(lambda m: asked.append(m) or call, [], {"calculator": CALCULATOR}, max_steps=3)
    assert len(asked) == 4 and final == call  # 3 rounds of tools, then the last reply as it is
    assert [m["role"] for m in appended] == ["assistant", "tool"] * 3


def test_tool_failures_become_error_results():
    def explode(arguments):
        raise RuntimeError("disk on fire")

    tools = {"calculator": CALCULATOR, "explode": Tool("explode", "", {"type": "object"}, run=explode)}
    script = iter([_block("calculator", {"expression": "1/0"}) + _block("explode", {})
                   + _block("calculator", {}) + '<tool_call>{"name": "calculator", "arguments": "1+1"}</tool_call>'])
    final, appended = loop(lambda m: next(script, "done"), [], tools)
    assert final == "done" and len(appended[0]["tool_calls"]) == 4
    errors = [m["content"] for m in appended[1:]]
    assert errors[0] == "error: division by zero" and errors[1] == "error: disk on fire"
    assert "'expression'" in errors[2] and errors[3].startswith("error:")  # missing argument; arguments not JSON


def test_client_side_or_unknown_tools_end_the_loop():
    weather = tool_from_openai({"type": "function", "function": {"name": "get_weather"}})  # no run: the client's
    for reply in (_block("get_weather", {"city": "Tallinn"}),
                  _block("calculator", {"expression": "1"}) + _block("get_weather", {}),
                  _block("unknown", {})):
        final, appended = loop(lambda m: reply, [], {"calculator": CALCULATOR, "get_weather": weather})
        assert final == reply and appended == []
    assert loop(lambda m: "plain answer", [], {"calculator": CALCULATOR}) == ("plain answer", [])


def test_messages_for_template():
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "12*7 and weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "calculator", "arguments": '{"expression": "12*7"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "84"},  # clients usually send no name: found by id
        {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "84, and sunny."},
    ]
    assert messages_for_template(conversation) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "12*7 and weather?"},
        {"role": "assistant", "content": '<tool_call>{"name": "calculator", "arguments": {"expression": "12*7"}}'
                                         '</tool_call>\n<tool_call>{"name": "get_weather", "arguments": "not json"}'
                                         "</tool_call>"},
        {"role": "user", "content": "<tool_response>calculator: 84</tool_response>"},
        {"role": "user", "content": "<tool_response>get_weather: sunny</tool_response>"},
        {"role": "assistant", "content": "84, and sunny."},
    ]
    # What the template shows the model is what parse_tool_calls reads back.
    _, calls = parse_tool_calls(messages_for_template(conversation)[2]["content"])
    assert [(c.name, c.arguments) for c in calls] == [("calculator", '{"expression": "12*7"}'),
                                                     ("get_weather", "not json")]


def test_docstring_examples():
    assert doctest.testmod(tools_module).failed == 0


def test_http_tool_replies_are_bounded_in_size_and_time(tmp_path, endpoint, monkeypatch):
    """A reply past the size cap, or one trickling past the deadline (each read inside httpx's timeout), is an
    error result for the model; neither holds the server's thread for longer than the deadline."""
    monkeypatch.setattr(tools_module, "HTTP_TIMEOUT_S", 1)
    path = tmp_path / "tools.yaml"
    path.write_text(f"- {{name: big, endpoint: {endpoint}/big}}\n- {{name: slow, endpoint: {endpoint}/trickle}}\n")
    big, slow = load_tools_yaml(path)
    script = iter([_block("big", {}) + _block("slow", {})])
    started = time.monotonic()
    _, appended = loop(lambda m: next(script, "done"), [], {"big": big, "slow": slow})
    assert time.monotonic() - started < 3.5  # the trickle alone takes 4 s
    assert "over 100000 bytes" in appended[1]["content"] and "took over 1 s" in appended[2]["content"]


def test_arguments_the_schema_refuses_never_reach_the_tool():
    ran = []
    lookup = Tool("lookup", "", {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
                                 "additionalProperties": False}, run=lambda arguments: ran.append(arguments) or "ok")
    script = iter([_block("lookup", {"id": "../../etc"}) + _block("lookup", {"id": 3, "url": "http://evil"})
                   + _block("lookup", {"id": 3})])
    _, appended = loop(lambda m: next(script, "done"), [], {"lookup": lookup})
    results = [m["content"] for m in appended[1:]]
    assert results[0].startswith("error: arguments do not fit lookup's schema: id:") and "integer" in results[0]
    assert results[1].startswith("error: arguments do not fit") and "url" in results[1]
    assert results[2] == "ok" and ran == [{"id": 3}]

