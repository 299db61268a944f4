"""The tool protocol, independent of HTTP: tools, how a model is told about them, how its calls are read and run.

A model calls a tool by writing `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes / Qwen
format, which open tool-calling models are trained on); results go back to it as `<tool_response>` turns.
Tools come from three places: the built-in `calculator`, HTTP tools declared in YAML (`seedbed serve --tools
FILE`), and Python entry points in the group `seedbed.tools`. A tool without `run` is the client's to execute
(OpenAI's protocol: the reply carries `tool_calls` and the client sends back `tool` messages).

    >>> _, calls = parse_tool_calls('<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>')
    >>> CALCULATOR.run(json.loads(calls[0].arguments))
    '42'
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import yaml

from seedbed.errors import ToolError
from seedbed.inference.calculator import calculate
from seedbed.inference.stops import pending_stop_prefix

NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for function names
CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
HTTP_TIMEOUT_S = 10  # the whole of one HTTP tool call: connecting, and reading however slowly the reply trickles
MAX_TOOL_REPLY_BYTES = 100_000  # an HTTP tool's reply; past it the call is an error (the model reads it all)
EMPTY_SCHEMA = {"type": "object", "properties": {}}


@dataclass
class Tool:
    """A function a model may call. `parameters` is the JSON schema of its arguments object.

    >>> Tool("echo", "Says it back.", EMPTY_SCHEMA).spec()["function"]["name"]
    'echo'
    """

    name: str
    description: str
    parameters: dict
    run: Callable[[dict], str] | None = None  # None: the client runs it and sends the result back

    def spec(self) -> dict:
        """The tool as an entry of an OpenAI request's `tools` list."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def _calculator(arguments: dict) -> str:
    if not isinstance(arguments.get("expression"), (str, int, float)):
        raise ToolError("the argument 'expression' (a string such as \"48/2\") is missing")
    return calculate(str(arguments["expression"]))


CALCULATOR = Tool(
    "calculator", "Exact arithmetic: + - * / // % ** and parentheses on integers and decimals.",
    {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 48/2 + 3*(4-1)"}},
     "required": ["expression"]},
    run=_calculator,
)


@dataclass
class ToolCall:
    """One call a model made. `arguments` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


def tool_from_openai(spec: dict) -> Tool:
    """A client-side tool from an OpenAI request's `tools` entry, validated.

    >>> tool_from_openai({"type": "function", "function": {"name": "get_weather"}}).parameters
    {'type': 'object', 'properties': {}}
    """
    if not isinstance(spec, dict) or spec.get("type") != "function":
        raise ToolError("tools[].type: only 'function' tools are supported")
    function = spec.get("function")
    if not isinstance(function, dict):
        raise ToolError("tools[].function: must be an object with name, description and parameters")
    name = function.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ToolError(f"tools[].function.name: {name!r} is not 1-64 letters, digits, '_' or '-'")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise ToolError(f"tools[].function.description: must be a string ({name})")
    parameters = function.get("parameters", dict(EMPTY_SCHEMA))
    if not _is_object_schema(parameters):
        raise ToolError(f"tools[].function.parameters: must be a JSON schema of type object ({name})")
    return Tool(name, description, parameters)


def _is_object_schema(schema) -> bool:
    # `{}` (no arguments) is accepted too: some clients send it for functions without parameters.
    return isinstance(schema, dict) and schema.get("type", "object") == "object"


def load_tools_yaml(path: str | Path) -> list[Tool]:
    """Server-side HTTP tools from a YAML list of {name, description, parameters, endpoint}.

    A tool's run() POSTs its arguments as JSON to `endpoint` and returns the reply's `result` field when the
    reply is a JSON object that has one, else the reply's text.

    >>> load_tools_yaml("tools.yaml")  # doctest: +SKIP
    [Tool(name='lookup_order', description='Order status by id.', parameters={...}, run=<function ...>)]
    """
    try:
        entries = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ToolError(f"{path}: cannot read tools: {e}") from None
    if not isinstance(entries, list):
        raise ToolError(f"{path}: expected a YAML list of tools, each with name, description, parameters, endpoint")
    tools = []
    for i, entry in enumerate(entries):
        where = f"{path}: tool {i}"
        if not isinstance(entry, dict):
            raise ToolError(f"{where}: expected a mapping with name, description, parameters, endpoint")
        name, endpoint = entry.get("name"), entry.get("endpoint")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ToolError(f"{where}: field 'name': {name!r} is not 1-64 letters, digits, '_' or '-'")
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ToolError(f"{where} ({name}): field 'endpoint': {endpoint!r} is not an http(s) URL")
        description = entry.get("description") or ""
        if not isinstance(description, str):
            raise ToolError(f"{where} ({name}): field 'description': must be a string")
        parameters = entry.get("parameters", dict(EMPTY_SCHEMA))
        if not _is_object_schema(parameters):
            raise ToolError(f"{where} ({name}): field 'parameters': must be a JSON schema of type object")
        tools.append(Tool(name, description, parameters, _http_runner(endpoint)))
    return tools


def _http_runner(endpoint: str) -> Callable[[dict], str]:
    def run(arguments: dict) -> str:
        import time

        import httpx

        # httpx's timeout bounds each read, not the reply: one byte every 9 s never timed out. So the reply is read
        # in pieces against one deadline and one size cap.
        deadline, body = time.monotonic() + HTTP_TIMEOUT_S, bytearray()
        with httpx.stream("POST", endpoint, json=arguments, timeout=HTTP_TIMEOUT_S) as reply:
            reply.raise_for_status()  # an HTTP error becomes the tool's 'error: ...' result in run_tool_loop
            for piece in reply.iter_bytes():
                body += piece
                if len(body) > MAX_TOOL_REPLY_BYTES:
                    raise ToolError(f"the tool's reply is over {MAX_TOOL_REPLY_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ToolError(f"the tool took over {HTTP_TIMEOUT_S} s to reply")
        text = body.decode(reply.encoding or "utf-8", errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            return text
        if isinstance(data, dict) and "result" in data:
            result = data["result"]
            return result if isinstance(result, str) else json.dumps(result)
        return text

    return run


def load_entry_point_tools(group: str = "seedbed.tools") -> list[Tool]:
    """Tools other packages register: each entry point names a Tool, or a function with no arguments returning one.

    In the registering package's pyproject.toml: `[project.entry-points."seedbed.tools"] weather = "mypkg:WEATHER"`.
    """
    from importlib.metadata import entry_points

    tools = []
    for point in entry_points(group=group):
        found = point.load()
        tool = found if isinstance(found, Tool) else found() if callable(found) else None
        if not isinstance(tool, Tool):
            raise ToolError(f"entry point {point.name} = {point.value} ({group}): gives no seedbed Tool")
        tools.append(tool)
    return tools


def tools_system_prompt(tools: list[Tool]) -> str:
    """Instructions for a model without a native tool template: the tools, and the exact form of a call.

    >>> print(tools_system_prompt([CALCULATOR]).splitlines()[0])
    You can call these tools (name, description and JSON schema of the arguments):
    """
    listing = "\n".join(json.dumps(tool.spec()["function"]) for tool in tools)
    return (
        "You can call these tools (name, description and JSON schema of the arguments):\n" + listing + "\n\n"
        'To call a tool, reply with exactly <tool_call>{"name": NAME, "arguments": {...}}</tool_call>, one block '
        "per call, and nothing else. Each result comes back in a <tool_response> message; then answer the user."
    )


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """The reply's text without its tool-call blocks, and the calls in them.

    A bare JSON object `{"name": ..., "arguments": ...}` as the whole reply is a call too. A block whose JSON
    does not parse stays in the text and makes no call.

    >>> parse_tool_calls('Hm. <tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>')
    ... # doctest: +ELLIPSIS
    ('Hm.', [ToolCall(id='call_...', name='calculator', arguments='{"expression": "1+1"}')])
    """
    calls, kept, end = [], [], 0
    for block in CALL_BLOCK.finditer(text):
        call = _call(block.group(1), arguments_required=False)
        if call:
            calls.append(call)
            kept.append(text[end : block.start()])
            end = block.end()
    kept.append(text[end:])
    if not calls:
        # A bare reply must have both keys, so that an answer which merely is JSON with a "name" is not a call.
        bare = _call(text.strip(), arguments_required=True) if text.strip().startswith("{") else None
        if bare:
            return "", [bare]
    return "".join(kept).strip(), calls


def _call(payload: str, arguments_required: bool) -> ToolCall | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    if arguments_required and "arguments" not in data:
        return None
    arguments = data.get("arguments", {})
    return ToolCall("call_" + secrets.token_hex(12), data["name"],
                    arguments if isinstance(arguments, str) else json.dumps(arguments))


async def run_tool_loop(generate_reply: Callable[[list[dict]], Awaitable[str]], messages: list[dict],
                        tools: dict[str, Tool], max_steps: int = 4) -> tuple[str, list[dict]]:
    """Server-side tool use: while the model's reply calls only tools that have `run`, run them and ask again.

    Each round appends the assistant's tool-call turn and one `tool` message per call. At most `max_steps`
    rounds run (so `generate_reply` is awaited at most max_steps + 1 times); then the last reply is returned as
    it is. A reply that calls a client-side or unknown tool ends the loop too: the caller hands those calls back.
    A coroutine, so that a request using tools holds no thread while the model answers (the server's loop ran
    in a thread of a 6-thread pool: a 7th tool request, and /v1/embeddings, waited for one to finish). Tools run
    in a thread each (`run_tool`), bounded in time by the tool itself. Returns (the last reply's text, the
    messages appended).

    >>> script = iter(['<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>'])
    >>> async def ask(m): return next(script, "It is " + m[-1]["content"])
    >>> import asyncio
    >>> asyncio.run(run_tool_loop(ask, [{"role": "user", "content": "6 times 7?"}], {"calculator": CALCULATOR}))[0]
    'It is 42'
    """
    import asyncio

    appended: list[dict] = []
    reply = await generate_reply(messages)
    for _ in range(max_steps):
        content, calls = parse_tool_calls(reply)
        if not calls or any(tools.get(call.name) is None or tools[call.name].run is None for call in calls):
            break
        appended.append({"role": "assistant", "content": content, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in calls]})
        results = [await asyncio.to_thread(run_tool, tools[call.name], call) for call in calls]
        appended += [{"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result}
                     for call, result in zip(calls, results)]
        reply = await generate_reply(messages + appended)
    return reply, appended


def run_tool(tool: Tool, call: ToolCall) -> str:
    """The tool's result for `call`, or 'error: ...': arguments that are not a JSON object or that the tool's
    schema refuses never reach the tool (a model, or a client naming a server tool, may send anything)."""
    try:
        arguments = json.loads(call.arguments or "{}")
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments must be a JSON object, got {call.arguments[:80]}")
        problem = _schema_problem(tool.parameters, arguments)
        if problem:
            raise ToolError(f"arguments do not fit {tool.name}'s schema: {problem}")
        return str(tool.run(arguments))
    except Exception as e:  # a failing tool is information for the model to act on, not a server error
        return f"error: {e}" if str(e) else f"error: {type(e).__name__}"


def _schema_problem(schema: dict, arguments: dict) -> str | None:
    import jsonschema

    try:
        error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(arguments))
    except jsonschema.exceptions.SchemaError as e:  # the tool's own schema is broken: say so, run nothing
        return f"the tool's parameters are not a valid JSON schema ({e.message})"
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def messages_for_template(messages: list[dict]) -> list[dict]:
    """OpenAI tool-call and tool turns as plain {role, content} turns, in the Hermes format the model is told.

    Many base templates (ours included) know only system, user and assistant, and would drop or reject a
    `tool` turn or an assistant turn whose `tool_calls` carry the content; so calls become `<tool_call>`
    blocks in an assistant turn, and results become user turns.

    >>> messages_for_template([{"role": "tool", "tool_call_id": "call_1", "name": "calculator", "content": "42"}])
    [{'role': 'user', 'content': '<tool_response>calculator: 42</tool_response>'}]
    """
    names: dict[str, str] = {}  # tool_call_id -> tool name: a client's tool message usually has no name
    out = []
    for message in messages:
        if message.get("tool_calls"):
            blocks = []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                names[call.get("id")] = function.get("name", "tool")
                arguments = function.get("arguments") or "{}"
                try:
                    arguments = json.loads(arguments)
                except (TypeError, ValueError):
                    pass  # not JSON: shown as the string it is
                blocks.append("<tool_call>" + json.dumps({"name": function.get("name"), "arguments": arguments})
                              + "</tool_call>")
            text = message.get("content") or ""
            out.append({"role": "assistant", "content": "\n".join([text, *blocks] if text else blocks)})
        elif message["role"] == "tool":
            name = message.get("name") or names.get(message.get("tool_call_id"), "tool")
            out.append({"role": "user",
                        "content": f"<tool_response>{name}: {message.get('content') or ''}</tool_response>"})
        else:
            out.append({"role": message["role"], "content": message.get("content") or ""})
    return out


def messages_for_native_template(messages: list[dict]) -> list[dict]:
    """OpenAI messages as a tool-aware chat template takes them (transformers' convention): each call's
    `arguments` a mapping, not JSON text; `tool` turns kept as they are.

    >>> messages_for_native_template([{"role": "assistant", "content": "", "tool_calls": [
    ...     {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]}])[0]["tool_calls"]
    [{'id': 'c1', 'type': 'function', 'function': {'name': 'f', 'arguments': {'x': 1}}}]
    """
    out = []
    for message in messages:
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call.get("function") or {})
                try:
                    function["arguments"] = json.loads(function.get("arguments") or "{}")
                except (TypeError, ValueError):
                    pass  # not JSON: the template shows the string it is
                calls.append({**call, "function": function})
            message = {**message, "tool_calls": calls}
        out.append(message)
    return out


class ToolCallStream:
    """Reads a reply as it is decoded: text outside `<tool_call>` blocks comes out as it arrives, each call the
    moment its block closes, so a streamed reply shows what the model writes while it writes it.

    What `parse_tool_calls` decides for a whole reply, this decides piece by piece: a block whose JSON does not
    parse is text; a reply that is a bare JSON object (it starts with `{`) is held to its end, then is a call or
    text. Text that may be the start of `<tool_call>` is held until the next piece says.

    >>> stream = ToolCallStream()
    >>> stream.feed('Let me look. <tool_')
    [('text', 'Let me look. ')]
    >>> [kind for kind, _ in stream.feed('call>{"name": "f", "arguments": {}}</tool_call>')]
    ['call']
    """

    OPEN, CLOSE = "<tool_call>", "</tool_call>"

    def __init__(self):
        self.held, self.started, self.bare = "", False, False

    def feed(self, piece: str) -> list[tuple[str, object]]:
        """Events for the text so far: ("text", str) and ("call", ToolCall), in order."""
        self.held += piece
        if not self.started:
            if not self.held.strip():
                return []
            self.started, self.bare = True, self.held.lstrip().startswith("{")
        if self.bare:
            return []
        events = []
        while True:
            start = self.held.find(self.OPEN)
            if start < 0:
                keep = pending_stop_prefix(self.held, [self.OPEN])  # a block may be opening at the end
                if len(self.held) > keep:
                    events.append(("text", self.held[: len(self.held) - keep]))
                    self.held = self.held[len(self.held) - keep :]
                return events
            if start:
                events.append(("text", self.held[:start]))
                self.held = self.held[start:]
            end = self.held.find(self.CLOSE)
            if end < 0:
                return events  # the block is still being written
            block, self.held = self.held[: end + len(self.CLOSE)], self.held[end + len(self.CLOSE) :]
            call = _call(block[len(self.OPEN) : -len(self.CLOSE)].strip(), arguments_required=False)
            events.append(("call", call) if call else ("text", block))

    def close(self) -> list[tuple[str, object]]:
        """Events for what was held back at the end of the reply."""
        held, self.held = self.held, ""
        if self.bare:
            text, calls = parse_tool_calls(held)
            return [("call", call) for call in calls] if calls else [("text", held)]
        return [("text", held)] if held else []



class AssistantTurn:
    """What the client is shown of one assistant turn, read as it is decoded: the text outside tool-call blocks and
    the calls the client is to run. A turn may span several replies of the model (server tools run between them,
    `run_tool_loop`); each reply is a round (`start_round`, `feed`..., `end_round`). A call to a tool in
    `server_tools` is the server's business and not shown; with `parallel` false, only the first client call is.
    The same reading makes a streamed reply's deltas and a whole reply's message, so the two agree.

    >>> turn = AssistantTurn({"calculator"})
    >>> turn.start_round(); turn.feed('Let me see. <tool_call>{"name": "calculator", "arguments": {}}</tool_call>')
    [('text', 'Let me see. ')]
    >>> turn.end_round(); turn.start_round(); turn.feed("It is 4."); turn.end_round()
    []
    [('text', '\\n\\nIt is 4.')]
    []
    >>> turn.content
    'Let me see. \\n\\nIt is 4.'
    """

    def __init__(self, server_tools=(), parallel: bool = True):
        self.server_tools, self.parallel = set(server_tools), parallel
        self.text, self.calls = "", []  # everything shown so far; the client's calls, in order
        self.reader, self.fresh = ToolCallStream(), True

    @property
    def content(self) -> str:
        return self.text.strip()

    def start_round(self) -> None:
        self.reader, self.fresh = ToolCallStream(), True

    def feed(self, piece: str) -> list[tuple[str, object]]:
        """Events to show for the next piece of the round's text: ("text", str) and ("call", ToolCall)."""
        return self._shown(self.reader.feed(piece))

    def end_round(self) -> list[tuple[str, object]]:
        """Events for what the round's reader held back to its end."""
        return self._shown(self.reader.close())

    def _shown(self, events) -> list[tuple[str, object]]:
        shown = []
        for kind, value in events:
            if kind == "text":
                if self.fresh:  # a later round's text starts a paragraph of its own
                    value = value.lstrip()
                    if not value:
                        continue
                    value = ("\n\n" if self.text.strip() else "") + value
                    self.fresh = False
                self.text += value
            elif value.name in self.server_tools or (self.calls and not self.parallel):
                continue
            else:
                self.calls.append(value)
            shown.append((kind, value))
        return shown
