"""The record as it travels through `seedbed data prepare`: the user's record in its own shape, plus what
the pipeline needs to know about it (id, where it came from, shape, category).

Stages read and rewrite a record's *text fields*, the fields a shape trains on, and leave everything else as
given, so an output record has the shape and id its input had.

>>> item = to_item({"instruction": "Say hi", "response": "Hi!", "category": "open_qa"}, "raw.jsonl", 3)
>>> item["id"], item["shape"], item["category"], text_of(item)
('raw.jsonl:3', 'dolly', 'open_qa', 'Say hi\\nHi!')
>>> map_texts(item, str.upper)["record"]["response"]
'HI!'
>>> turns(item)
[Turn(instruction='SAY HI', context='', response='HI!')]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from seedbed.data.shapes import SHAREGPT_ROLES, examples_from_record, record_shape

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


def to_item(record: Any, file: str, line: int, id_prefix: str | None = None) -> Item:
    """Validate a record (raises `shapes.BadField`) and wrap it for the pipeline. A record without an id is given
    `ID_PREFIX:LINE` (`readers.id_prefixes`; the file's name by default)."""
    default_id = f"{id_prefix or Path(file).name}:{line}"
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


@dataclass(frozen=True)
class Turn:
    """One answer of an instruction or chat record, with what it answers: the instruction (the user's turn), the
    context given with it (dolly's context, alpaca's input, a chat's system prompt), and the response."""

    instruction: str
    context: str
    response: str


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content given as text parts
        return "\n".join(p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def turns(item: Item) -> list[Turn]:
    """The record's (instruction, context, response) turns; none for a `text` record, which has no answer.

    >>> turns(to_item({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
    ...                             {"role": "assistant", "content": "Hello."}]}, "chat.jsonl", 1))
    [Turn(instruction='Hi', context='Be brief.', response='Hello.')]
    """
    record, shape = item["record"], item["shape"]
    fields = {"dolly": ("instruction", "context", "response"), "alpaca": ("instruction", "input", "output"),
              "gsm8k": ("question", None, "answer")}
    if shape in fields:
        instruction, context, response = fields[shape]
        return [Turn(_text(record.get(instruction)), _text(record.get(context)) if context else "",
                     _text(record.get(response)))]
    if shape == "self_instruct":
        instruction = _text(record.get("instruction"))
        return [Turn(instruction, _text(i.get("input")), _text(i.get("output")))
                for i in record.get("instances") or [] if isinstance(i, dict)]
    if shape in ("openai_chat", "sharegpt"):
        key, role_key, content_key = (("messages", "role", "content") if shape == "openai_chat"
                                      else ("conversations", "from", "value"))
        found, system, user = [], [], ""
        for message in record.get(key) or []:
            if not isinstance(message, dict):
                continue
            role, content = message.get(role_key), _text(message.get(content_key))
            role = SHAREGPT_ROLES.get(role, role) if shape == "sharegpt" else role
            if role == "system":
                system.append(content)
            elif role == "user":
                user = content
            elif role == "assistant" and content.strip():
                found.append(Turn(user, "\n".join(system), content))
        return found
    return []


ANSWER_FIELDS = {"dolly": "response", "alpaca": "output", "gsm8k": "answer", "self_instruct": "instances[].output"}


def sides(item: Item) -> tuple[list[str], list[str]]:
    """The record's text fields split into what it asks (instruction, context, input, system and user turns) and
    what it answers (response, output, assistant turns); a `text` record is all prompt and no answer.

    >>> sides(to_item({"instruction": "Say hi", "context": "", "response": "Hi!"}, "f.jsonl", 1))
    (['Say hi', ''], ['Hi!'])
    """
    record, shape = item["record"], item["shape"]
    if shape in ("openai_chat", "sharegpt"):
        key, role_key, content_key = (("messages", "role", "content") if shape == "openai_chat"
                                      else ("conversations", "from", "value"))
        prompt, answers = [], []
        for message in record.get(key) or []:
            if isinstance(message, dict):
                role = message.get(role_key)
                role = SHAREGPT_ROLES.get(role, role) if shape == "sharegpt" else role
                (answers if role == "assistant" else prompt).append(_text(message.get(content_key)))
        return prompt, answers
    answer_path = ANSWER_FIELDS.get(shape)
    prompt = [c[k] for path in TEXT_FIELDS[shape] if path != answer_path for c, k in _walk(record, path)]
    return prompt, ([c[k] for c, k in _walk(record, answer_path)] if answer_path else [])


def is_json(text: str) -> bool:
    """Whether a text field holds a JSON object or array (a structured answer), not prose.

    >>> is_json('{"intent": "PlayMusic"}'), is_json("[1, 2]"), is_json("{not json")
    (True, True, False)
    """
    stripped = text.strip()
    if stripped[:1] not in ("{", "["):
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


def output_record(item: Item) -> dict:
    """The record as written out: its own shape, with its id made explicit so dropped.jsonl and outputs agree."""
    record = item["record"]
    return record if record.get("id") not in (None, "") else {"id": item["id"], **record}


_WORD = re.compile(r"\w+|[^\w\s]+")


def answer_in_own_words(item: Item) -> str:
    """What a record teaches a model to say on its own: its answers, less every word they copy from its prompt
    (in order, as difflib aligns them); a record with no answer is all its text.

    Fine-tuning trains on the answer, so a request that quotes a song called "Bitch Please II" and an answer
    that copies the title into a slot teach the model to extract, not to swear; an answer that adds its own
    insult is still all there to be scored.

    >>> answer_in_own_words(to_item({"instruction": "play Bitch Please II", "context": "",
    ...                              "response": '{"track": "Bitch Please II"}'}, "f.jsonl", 1))
    '{" track ": " "}'
    """
    prompt, answers = sides(item)
    if not any(a.strip() for a in answers):
        return text_of(item)
    from difflib import SequenceMatcher

    asked = [w.lower() for w in _WORD.findall("\n".join(prompt))]
    own = []
    for answer in answers:
        words = _WORD.findall(answer)
        copied = [False] * len(words)
        matcher = SequenceMatcher(None, asked, [w.lower() for w in words], autojunk=False)
        for block in matcher.get_matching_blocks():
            copied[block.b:block.b + block.size] = [True] * block.size
        own.append(" ".join(w for w, c in zip(words, copied) if not c))
    return "\n".join(own)
