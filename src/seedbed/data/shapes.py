"""Record shapes: turn one instruction-data record, whatever shape it has, into canonical `Example`s.

Shapes are tried in this order; the first whose keys all hold something wins (then, failing that, the first
whose keys are all present, so that an empty answer is reported as empty rather than as an unknown shape):

| shape           | keys                               | becomes                                          |
|-----------------|------------------------------------|--------------------------------------------------|
| `openai_chat`   | `messages` [{role, content}]       | the messages, as {role, content}; category kept  |
| `sharegpt`      | `conversations` [{from, value}]    | human/user -> user, gpt/assistant, system        |
| `self_instruct` | `instruction`, `instances`         | one example per instance {input, output}         |
| `dolly`         | `instruction`, `response`          | user: instruction + context; category kept       |
| `alpaca`        | `instruction`, `output`            | user: instruction + input                        |
| `gsm8k`         | `question`, `answer`               | answer kept verbatim (`<<48/2=24>>`, `#### 72`)  |
| `text`          | `text`                             | raw text, trained on whole                       |

Required text must be a non-empty string; it is checked, never stripped or otherwise changed.

A recipe's `mapping` reads records of any other shape by naming their fields (`mapping.py`).
"""

from __future__ import annotations

import math
from typing import Any

from seedbed.chat import ROLES, Example

SHAPES = {  # shape name -> keys that must all be present, in order of precedence
    "openai_chat": ("messages",),
    "sharegpt": ("conversations",),
    "self_instruct": ("instruction", "instances"),
    "dolly": ("instruction", "response"),
    "alpaca": ("instruction", "output"),
    "gsm8k": ("question", "answer"),
    "text": ("text",),
}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class BadField(Exception):
    """What is wrong with a record, and in which field ("-" when no single field is to blame)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"field '{field_name}': {message}")
        self.field, self.message = field_name, message


def examples_from_record(record: Any, default_id: str, source: str) -> tuple[str, list[Example]]:
    """The record's shape name and the examples it gives; raises `BadField` if it is malformed.

    >>> record = {"question": "What is 2+3?", "answer": "2+3=<<2+3=5>>5 #### 5"}
    >>> shape, [example] = examples_from_record(record, "f.jsonl:1", "data/f.jsonl:1")
    >>> shape, example.id, example.messages[1]
    ('gsm8k', 'f.jsonl:1', {'role': 'assistant', 'content': '2+3=<<2+3=5>>5 #### 5'})
    """
    shape = record_shape(record)
    base_id = record_id(record, default_id)
    if shape == "text":
        return shape, [Example(base_id, source, messages=[], text=_text(record, "text"))]
    if shape == "self_instruct":
        return shape, [Example(f"{base_id}#{k}", source, chat) for k, chat in enumerate(_self_instruct(record))]
    # Dolly records have a category; so do chat records a mapping made (`seedbed.data.mapping`).
    category = (_optional_text(record, "category") or None) if shape in ("dolly", "openai_chat") else None
    converters = {"openai_chat": _openai_chat, "sharegpt": _sharegpt, "dolly": _dolly, "alpaca": _alpaca,
                  "gsm8k": _gsm8k}
    return shape, [Example(base_id, source, converters[shape](record), category=category)]


def is_absent(value: Any) -> bool:
    """Missing as far as shapes go: CSV and Parquet give None or NaN for cells that a record does not have."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def kind_of(value: Any) -> str:
    """What a JSON value is, in words, for error messages: "text", "a number", "a list", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    kinds = {str: "text", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return next((name for t, name in kinds.items() if isinstance(value, t)), type(value).__name__)


def record_shape(record: Any) -> str:
    if not isinstance(record, dict):
        raise BadField("-", f"expected a record (a JSON object), got {kind_of(record)}")
    present = {k for k, v in record.items() if not is_absent(v)}
    # Keys with something in them decide first: a CSV or Parquet table holding several shapes has empty cells in
    # the columns of the others. Only then do empty values count, so that an empty answer is named as such.
    filled = {k for k in present if not (isinstance(record[k], str) and not record[k].strip())}
    for keys_found in (filled, present):
        for shape, keys in SHAPES.items():
            if keys_found.issuperset(keys):
                return shape
    partial = [(shape, keys) for shape, keys in SHAPES.items() if present & set(keys)]
    if len(partial) == 1:  # e.g. a question with no answer: name the missing field, not the shape list
        shape, keys = partial[0]
        missing = next(k for k in keys if k not in present)
        raise BadField(missing, f"missing (a {shape} record needs {' and '.join(keys)})")
    accepted = "; ".join(f"{shape}: {' + '.join(keys)}" for shape, keys in SHAPES.items())
    raise BadField("-", f"no known record shape for keys {sorted(present)}; accepted shapes are {accepted}")


def record_id(record: dict, default: str) -> str:
    """The record's own `id` (text or an integer), or `default` (the file's name and line) when it has none."""
    value = record.get("id")
    if is_absent(value) or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadField("id", f"expected text or an integer, got {kind_of(value)}")
    return str(value)


def _text(mapping: dict, key: str, name: str | None = None) -> str:
    """A required text field, returned as is (checks strip; the text itself is never normalised)."""
    value = mapping.get(key)
    if is_absent(value):
        raise BadField(name or key, "missing")
    if not isinstance(value, str):
        raise BadField(name or key, f"expected text, got {kind_of(value)}")
    if not value.strip():
        raise BadField(name or key, "empty")
    return value


def _optional_text(mapping: dict, key: str, name: str | None = None) -> str:
    value = mapping.get(key)
    if is_absent(value):
        return ""
    if not isinstance(value, str):
        raise BadField(name or key, f"expected text, got {kind_of(value)}")
    return value if value.strip() else ""


def _turns(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def _joined(first: str, extra: str) -> str:
    return f"{first}\n\n{extra}" if extra else first


def _dolly(record: dict) -> list[dict[str, str]]:
    prompt = _joined(_text(record, "instruction"), _optional_text(record, "context"))
    return _turns(prompt, _text(record, "response"))


def _alpaca(record: dict) -> list[dict[str, str]]:
    return _turns(_joined(_text(record, "instruction"), _optional_text(record, "input")), _text(record, "output"))


def _gsm8k(record: dict) -> list[dict[str, str]]:
    return _turns(_text(record, "question"), _text(record, "answer"))


def _self_instruct(record: dict) -> list[list[dict[str, str]]]:
    instruction = _text(record, "instruction")
    instances = _list(record, "instances")
    chats = []
    for k, instance in enumerate(instances):
        name = f"instances[{k}]"
        if not isinstance(instance, dict):
            raise BadField(name, f"expected an object with input and output, got {kind_of(instance)}")
        prompt = _joined(instruction, _optional_text(instance, "input", f"{name}.input"))
        chats.append(_turns(prompt, _text(instance, "output", f"{name}.output")))
    return chats


def _list(record: dict, key: str) -> list:
    value = record[key]
    if not isinstance(value, list):
        raise BadField(key, f"expected a list, got {kind_of(value)}")
    if not value:
        raise BadField(key, "empty list")
    return value


def _openai_chat(record: dict) -> list[dict[str, str]]:
    messages = []
    for i, message in enumerate(_list(record, "messages")):
        if not isinstance(message, dict):
            raise BadField(f"messages[{i}]", f"expected an object with role and content, got {kind_of(message)}")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise BadField(f"messages[{i}].role", f"{role!r} is not one of {', '.join(ROLES)}")
        messages.append({"role": role, "content": _content(message.get("content"), f"messages[{i}].content")})
    return _with_answer(messages, "messages")


def _content(content: Any, name: str) -> str:
    if is_absent(content):
        return ""  # OpenAI allows null content on an assistant turn that only calls tools
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadField(name, f"expected text or a list of text parts, got {kind_of(content)}")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = f"a {part.get('type')!r} part" if isinstance(part, dict) else kind_of(part)
            raise BadField(f"{name}[{j}]", f"only text parts can be trained on, got {kind}")
        if not isinstance(part.get("text"), str):
            raise BadField(f"{name}[{j}].text", f"expected text, got {kind_of(part.get('text'))}")
        texts.append(part["text"])
    return "\n".join(texts)  # joined by newlines, as vLLM's OpenAI server joins text parts


def _sharegpt(record: dict) -> list[dict[str, str]]:
    messages = []
    for i, turn in enumerate(_list(record, "conversations")):
        if not isinstance(turn, dict):
            raise BadField(f"conversations[{i}]", f"expected an object with from and value, got {kind_of(turn)}")
        speaker = turn.get("from")
        if not isinstance(speaker, str) or speaker not in SHAREGPT_ROLES:
            raise BadField(f"conversations[{i}].from", f"{speaker!r} is not one of {', '.join(SHAREGPT_ROLES)}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise BadField(f"conversations[{i}].value", f"expected text, got {kind_of(value)}")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": value})
    return _with_answer(messages, "conversations")


def _with_answer(messages: list[dict[str, str]], name: str) -> list[dict[str, str]]:
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise BadField(name, "no assistant message with content, so nothing to learn from")
    return messages
