"""The tool protocol, independent of HTTP: tools, how a model is told about them, how its calls are read.

A model calls a tool by writing `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes / Qwen
format, which open tool-calling models are trained on); results go back as `<tool_response>` turns. Tools:
the built-in `calculator`, HTTP tools declared in YAML, and Python entry points in the group `seedbed.tools`.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from seedbed.serve.calculator import calculate

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


class ToolError(ValueError):
    """A tool declaration or call that cannot be used; the message names the field."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict
    run: Callable[[dict], str] | None = None  # None: the client runs it

    def spec(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


CALCULATOR = Tool(
    "calculator", "Exact arithmetic: + - * / // % ** and parentheses on integers and decimals.",
    {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 48/2 + 3*(4-1)"}},
     "required": ["expression"]},
    run=lambda arguments: calculate(str(arguments.get("expression", ""))),
)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text, as OpenAI sends it


def tool_from_openai(spec: dict) -> Tool:
    """A tool from an OpenAI request's `tools` entry, validated."""
    if not isinstance(spec, dict) or spec.get("type") != "function":
        raise ToolError("tools[].type: only 'function' tools are supported")
    function = spec.get("function")
    if not isinstance(function, dict) or not NAME.match(str(function.get("name", ""))):
        raise ToolError("tools[].function.name: 1-64 letters, digits, '_' or '-'")
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise ToolError(f"tools[].function.parameters: must be a JSON schema of type object ({function['name']})")
    return Tool(function["name"], str(function.get("description") or ""), parameters)


def _http_tool(entry: dict) -> Tool:
    import httpx

    def run(arguments: dict) -> str:
        reply = httpx.post(entry["endpoint"], json=arguments, timeout=10)
        reply.raise_for_status()
        try:
            body = reply.json()
        except ValueError:
            return reply.text
        return str(body["result"]) if isinstance(body, dict) and "result" in body else json.dumps(body)

    return Tool(entry["name"], entry.get("description", ""), entry.get("parameters") or {"type": "object"}, run)


def load_tools_yaml(path: str | Path) -> list[Tool]:
    """HTTP tools: a YAML list of {name, description, parameters, endpoint}; run() POSTs the arguments as JSON."""
    try:
        entries = yaml.safe_load(Path(path).read_text()) or []
    except (OSError, yaml.YAMLError) as e:
        raise ToolError(f"{path}: {e}") from None
    if not isinstance(entries, list):
        raise ToolError(f"{path}: expected a list of tools")
    tools = []
    for i, entry in enumerate(entries):
        for field in ("name", "endpoint"):
            if not isinstance(entry, dict) or not isinstance(entry.get(field), str):
                raise ToolError(f"{path}: tool {i}: field '{field}' is required")
        if not NAME.match(entry["name"]) or not entry["endpoint"].startswith(("http://", "https://")):
            raise ToolError(f"{path}: tool {i}: bad name or endpoint (need 1-64 [a-zA-Z0-9_-] and an http(s) URL)")
        tools.append(_http_tool(entry))
    return tools


def load_entry_point_tools(group: str = "seedbed.tools") -> list[Tool]:
    from importlib.metadata import entry_points

    tools = []
    for point in entry_points(group=group):
        found = point.load()
        tools.append(found if isinstance(found, Tool) else found())
    return tools


def tools_system_prompt(tools: list[Tool]) -> str:
    """What a model without a native tool template is told about the tools and how to call them."""
    listing = "\n".join(json.dumps(t.spec()["function"]) for t in tools)
    return (
        "You can call these tools:\n" + listing + "\n\nTo call a tool, reply with exactly "
        '<tool_call>{"name": NAME, "arguments": {...}}</tool_call> and nothing else. '
        "Tool results come back as <tool_response> messages."
    )


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """The reply's text without its tool-call blocks, and the calls (a bare JSON call as the whole reply too)."""
    calls, kept = [], text
    for block in CALL.finditer(text):
        call = _call(block.group(1))
        if call:
            calls.append(call)
            kept = kept.replace(block.group(0), "", 1)
    if not calls and text.strip().startswith("{"):
        call = _call(text.strip())
        if call:
            return "", [call]
    return kept.strip(), calls


def _call(payload: str) -> ToolCall | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", {})
    return ToolCall("call_" + secrets.token_hex(12), data["name"],
                    arguments if isinstance(arguments, str) else json.dumps(arguments))


def run_tool_loop(generate_reply: Callable[[list[dict]], str], messages: list[dict], tools: dict[str, Tool],
                  max_steps: int = 4) -> tuple[str, list[dict]]:
    """Ask for a reply; while it calls only server-side tools, run them and ask again (at most max_steps rounds)."""
    appended: list[dict] = []
    reply = generate_reply(messages)
    for _ in range(max_steps):
        _, calls = parse_tool_calls(reply)
        if not calls or any(c.name not in tools or tools[c.name].run is None for c in calls):
            break
        turn = {"role": "assistant", "content": "", "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]}
        results = []
        for c in calls:
            try:
                result = tools[c.name].run(json.loads(c.arguments or "{}"))
            except Exception as e:  # a failing tool is information for the model, not a server error
                result = f"error: {e}"
            results.append({"role": "tool", "tool_call_id": c.id, "name": c.name, "content": str(result)})
        appended += [turn, *results]
        reply = generate_reply(messages + appended)
    return reply, appended


def messages_for_template(messages: list[dict]) -> list[dict]:
    """Tool turns as plain user/assistant turns: many base templates know only system, user and assistant."""
    names = {}
    out = []
    for m in messages:
        if m.get("tool_calls"):
            blocks = []
            for call in m["tool_calls"]:
                function = call.get("function", {})
                names[call.get("id")] = function.get("name", "tool")
                arguments = function.get("arguments") or "{}"
                try:
                    arguments = json.loads(arguments)
                except (TypeError, ValueError):
                    pass
                blocks.append("<tool_call>" + json.dumps({"name": function.get("name"), "arguments": arguments})
                              + "</tool_call>")
            out.append({"role": "assistant", "content": ((m.get("content") or "") + "".join(blocks)).strip()})
        elif m["role"] == "tool":
            name = m.get("name") or names.get(m.get("tool_call_id"), "tool")
            out.append({"role": "user", "content": f"<tool_response>{name}: {m.get('content') or ''}</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out
