"""Users' own record fields as a chat, with no code: a recipe's `mapping` (`seedbed.recipe.FieldMapping`).

    mapping:
      prompt: "Turn this request into JSON: {text}"
      response_json: [intent, slots]

turns the SNIPS record `{"id": "train-GetWeather-790", "text": "What's the weather in Andorra", "intent":
"GetWeather", "slots": [{"name": "country", "value": "Andorra"}]}` into the chat record

    {"id": "train-GetWeather-790", "messages": [
        {"role": "user", "content": "Turn this request into JSON: What's the weather in Andorra"},
        {"role": "assistant", "content": "{\"intent\": \"GetWeather\", \"slots\": [{\"name\": \"country\", ...}]}"}]}

which every stage reads as an `openai_chat` record (`shapes.py`): the readers (`read_examples(paths, mapping)`)
and `seedbed data prepare`, whose output then needs no mapping to train on.

In a template, `{field}` is the record's field; `{meta.title}` a field of an object in it (a key that itself holds
a dot is found first), `{turns.0}` an element of a list. Text goes in as it is, numbers and true/false as JSON
writes them, objects and lists as JSON. Every field a mapping names must be in every record: one that is absent,
null or an empty cell of a Parquet table is reported as `file:line: field 'x': missing`, blank text (an empty CSV
cell) as `file:line: field 'x': empty`. An empty list is a value like any other (a SNIPS request with no slots).
"""

from __future__ import annotations

import json
from typing import Any

from seedbed.data.shapes import BadField, is_absent, kind_of, record_id
from seedbed.recipe import FieldMapping, template_pieces


def apply_mapping(record: Any, mapping: FieldMapping, default_id: str) -> dict:
    """The chat record (`{"id", "messages"[, "category"]}`) that `mapping` makes of `record`; raises `BadField`
    naming the first field it cannot use. `default_id` is the id of a record without one (the readers and
    `data prepare` use the file's name and line, `train.jsonl:7`).

    >>> mapping = FieldMapping(prompt="Turn this request into JSON: {text}", response_json=["intent", "slots"])
    >>> mapped = apply_mapping({"text": "Play some jazz", "intent": "PlayMusic", "slots": []}, mapping, "f.jsonl:1")
    >>> mapped["id"], [m["content"] for m in mapped["messages"]]
    ('f.jsonl:1', ['Turn this request into JSON: Play some jazz', '{"intent": "PlayMusic", "slots": []}'])
    """
    if not isinstance(record, dict):
        raise BadField("-", f"expected a record (a JSON object), got {kind_of(record)}")
    messages = []
    if mapping.system is not None:
        messages.append({"role": "system", "content": render(mapping.system, record)})
    messages.append({"role": "user", "content": render(mapping.prompt, record)})
    if mapping.response is not None:
        answer = render(mapping.response, record)
    else:
        fields = {path.rsplit(".", 1)[-1]: field_value(record, path) for path in mapping.response_json}
        try:
            answer = json.dumps(fields, ensure_ascii=False)
        except (TypeError, ValueError) as e:  # e.g. bytes from a Parquet binary column
            raise BadField("-", f"the answer cannot be written as JSON: {e}") from None
    messages.append({"role": "assistant", "content": answer})
    mapped = {"id": record_id(record, default_id), "messages": messages}
    if mapping.category is not None:
        mapped["category"] = as_text(field_value(record, mapping.category), mapping.category)
    return mapped


def render(template: str, record: dict) -> str:
    """The template with each `{field}` replaced by the record's value.

    >>> render("{question} ({meta.level})", {"question": "2+2?", "meta": {"level": 1}})
    '2+2? (1)'
    """
    return "".join(as_text(field_value(record, piece), piece) if is_field else piece
                   for piece, is_field in template_pieces(template))


def field_value(record: dict, path: str) -> Any:
    """The value at `path` in the record: a key, else a dotted path through objects and lists; BadField if it is
    absent or blank text.

    >>> field_value({"a": {"b": [10, 20]}, "c.d": 1}, "a.b.1"), field_value({"c.d": 1}, "c.d")
    (20, 1)
    """
    value: Any = record
    parts = [path] if path in record else path.split(".")
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise BadField(path, "missing")
    if is_absent(value):
        raise BadField(path, "missing")
    if isinstance(value, str) and not value.strip():
        raise BadField(path, "empty")
    return value


def as_text(value: Any, path: str) -> str:
    """A field's value as it goes into a template: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # e.g. bytes from a Parquet binary column
        raise BadField(path, f"cannot be written as text: {kind_of(value)}") from None
