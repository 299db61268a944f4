"""The record as it travels through `seedbed data prepare`: the user's record in its own shape, plus what
the pipeline needs to know about it (id, where it came from, shape, category).

Stages read and rewrite a record's *text fields*, the fields a shape trains on, and leave everything else as
given, so an output record has the shape and id its input had.

>>> item = to_item({"instruction": "Say hi", "response": "Hi!", "category": "open_qa"}, "raw.jsonl", 3)
>>> item["id"], item["shape"], item["category"], text_of(item)
('raw.jsonl:3', 'dolly', 'open_qa', 'Say hi\\nHi!')
>>> map_texts(item, str.upper)["record"]["response"]
'HI!'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from seedbed.data.shapes import examples_from_record, record_shape

# shape -> the text fields that shape trains on; "[]" walks a list, ".x" a key of each element.
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "openai_chat": ("messages[].content",),
    "sharegpt": ("conversations[].value",),
    "self_instruct": ("instruction", "instances[].input", "instances[].output"),
    "dolly": ("instruction", "context", "response"),
    "alpaca": ("instruction", "input", "output"),
    "gsm8k": ("question", "answer"),
    "text": ("text",),
}
Item = dict[str, Any]  # {"id", "source", "shape", "category", "record"}: plain data, so it pickles across processes


def to_item(record: Any, file: str, line: int) -> Item:
    """Validate a record (raises `shapes.BadField`) and wrap it for the pipeline."""
    default_id = f"{Path(file).name}:{line}"
    _, examples = examples_from_record(record, default_id, f"{file}:{line}")
    shape = record_shape(record)
    category = record.get("category")
    return {
        "id": examples[0].id.split("#")[0] if shape == "self_instruct" else examples[0].id,
        "source": f"{file}:{line}",
        "shape": shape,
        # Records without a category are balanced and stratified by their shape, the next best grouping.
        "category": category if isinstance(category, str) and category.strip() else shape,
        "record": record,
    }


def _walk(record: dict, path: str) -> Iterator[tuple[Any, Any]]:
    """(container, key) pairs where the field `path` holds a string."""
    head, _, rest = path.partition("[].")
    if not rest:
        if isinstance(record.get(head), str):
            yield record, head
        return
    for element in record.get(head) or []:
        if not isinstance(element, dict):
            continue
        value = element.get(rest)
        if isinstance(value, str):
            yield element, rest
        elif isinstance(value, list):  # OpenAI content given as text parts
            for part in value:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part, "text"


def texts(item: Item) -> list[str]:
    """The record's text fields, in order."""
    return [c[k] for path in TEXT_FIELDS[item["shape"]] for c, k in _walk(item["record"], path)]


def text_of(item: Item) -> str:
    """All of a record's text as one string: what filters score and what dedup compares."""
    return "\n".join(t for t in texts(item) if t)


def map_texts(item: Item, change: Callable[[str], str]) -> Item:
    """Apply `change` to every text field in place; returns the item."""
    for path in TEXT_FIELDS[item["shape"]]:
        for container, key in list(_walk(item["record"], path)):
            container[key] = change(container[key])
    return item


def set_texts(item: Item, new: list[str]) -> Item:
    """Write back texts in the order `texts` gave them."""
    values = iter(new)
    return map_texts(item, lambda _old: next(values))


def output_record(item: Item) -> dict:
    """The record as written out: its own shape, with its id made explicit so dropped.jsonl and outputs agree."""
    record = item["record"]
    return record if record.get("id") not in (None, "") else {"id": item["id"], **record}
