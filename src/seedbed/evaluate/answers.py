"""Scoring a model's answers: the task's metrics (GSM8K numbers or JSON objects) and usability (repetition).

**gsm8k.** References end with `#### <number>` (Cobbe et al. 2021). A prediction's answer is the number after
its last `####` when it wrote one, else the last number it wrote, the usual lenient reading (as in lm-eval's
`gsm8k` "flexible-extract" filter), so a zero-shot base model is not scored zero for format alone.
`follows_format` reports separately whether the model wrote the `####` form.

**json.** Narrow text-to-JSON tasks (SNIPS: `{"intent": "PlayMusic", "slots": [{"name": "artist", "value":
"..."}]}`), scored as slot-filling is (Coucke et al. 2018 report intent accuracy and slot F1): an answer is valid
when it parses to a JSON object as it stands (what a program calling the model can use: no code fence, no words
around it). The content is read leniently, like GSM8K's: the object the answer opens with, whatever follows it
(`leading_json_object`), so a base model that writes the right object and then rambles on is scored on the
object, and its rambling shows in valid JSON and stop rate instead. Exact match: that object equals the
reference's, key and list order ignored; each text, number or true/false field of the references gets an
accuracy ("intent acc") and each list field a micro F1 over its elements ("slots F1": over (name, value) pairs).

**Usability.** `is_repetitive`: a line or an 8-word run written three times or more, the loop small models fall
into; `seedbed eval` reports it beside the stop rate (answers that ended, rather than ran out of tokens).
"""

from __future__ import annotations

import json
import re
from collections import Counter

# An integer or decimal, optionally signed, with a currency sign and thousands separators: -3, $1,000.50, .5
NUMBER = r"[-+]?\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_NUMBER = re.compile(NUMBER)
_MARKED = re.compile(r"####\s*(" + NUMBER + ")")


def final_answer(text: str) -> str | None:
    """The number after the last `####`, or None when there is no `####` followed by a number.

    >>> final_answer("She pays 2 * 3 = 6 dollars.\\n#### 6")
    '6'
    >>> final_answer("6 dollars") is None
    True
    """
    if "####" not in text:
        return None
    match = _MARKED.match("####" + text.rsplit("####", 1)[1])
    return match.group(1) if match else None


def last_number(text: str) -> str | None:
    """The last number written in `text`, or None.

    >>> last_number("3 apples and 4 pears make 7.")
    '7'
    """
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def normalize_number(s: str) -> str:
    """One spelling per number: no commas, `$`, leading `+`, trailing `.`, or zeros after the decimal point.

    >>> [normalize_number(s) for s in ["1,000", "$5", "+3", "7.", "2.50", "4.00", "-12"]]
    ['1000', '5', '3', '7', '2.5', '4', '-12']
    """
    s = s.strip().replace(",", "").replace("$", "").rstrip(".")
    s = s.removeprefix("+")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def predicted_answer(text: str) -> str | None:
    """What a model answered: the number after `####` if it wrote one, else its last number.

    >>> predicted_answer("2 plus 3 is 5, not 6.")
    '6'
    """
    return final_answer(text) or last_number(text)


def is_correct(prediction_text: str, reference_text: str) -> bool:
    """Exact match of the predicted number with the reference's `####` number, after normalisation.

    A reference with no `####` that is itself a number is compared as a number; any other reference is
    compared as text (normalised and stripped).

    >>> is_correct("So the total is $1,000.", "... #### 1000")
    True
    """
    reference = final_answer(reference_text)
    if reference is None and _NUMBER.fullmatch(reference_text.strip()):
        reference = reference_text.strip()
    if reference is None:
        return normalize_number(prediction_text) == normalize_number(reference_text)
    predicted = predicted_answer(prediction_text)
    return predicted is not None and normalize_number(predicted) == normalize_number(reference)


def follows_format(text: str) -> bool:
    """True if the text gives its answer in the GSM8K form `#### <number>`.

    >>> follows_format("#### 42"), follows_format("The answer is 42")
    (True, False)
    """
    return _MARKED.search(text) is not None


# -- JSON tasks ---------------------------------------------------------------------------------------------------

TASKS = ("gsm8k", "json")


def json_object(text: str) -> dict | None:
    """The JSON object the text is (surrounding whitespace allowed), or None: not JSON, or JSON but no object.

    >>> json_object(' {"intent": "GetWeather"}\\n'), json_object('```json\\n{}\\n```'), json_object("[1]")
    ({'intent': 'GetWeather'}, None, None)
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def leading_json_object(text: str) -> dict | None:
    """The JSON object the answer opens with (after whitespace, or a ```json fence), ignoring what follows it.

    >>> leading_json_object('{"intent": "A"} subtree\\n subtree'), leading_json_object('```json\\n{"a": 1}\\n```')
    ({'intent': 'A'}, {'a': 1})
    >>> leading_json_object('Sure: {"intent": "A"}') is None
    True
    """
    text = re.sub(r"^\s*```(?:json)?\s*", "", text)
    try:
        value, _ = json.JSONDecoder().raw_decode(text.lstrip())
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def canonical(value) -> str:
    """One spelling per JSON value with order ignored: keys sorted, list elements sorted, 2.0 written as 2.

    >>> canonical({"slots": [{"value": "x", "name": "a"}, 2.0], "intent": "I"})
    '{"intent":"I","slots":[2,{"name":"a","value":"x"}]}'
    """
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{canonical(v)}"
                              for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(value, list):
        return "[" + ",".join(sorted(canonical(v) for v in value)) + "]"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False)


def json_matches(prediction_text: str, reference_text: str) -> bool:
    """Exact match: the object the answer opens with equals the reference's, key and list order ignored.

    >>> json_matches('{"slots": [{"name": "b", "value": "2"}, {"name": "a", "value": "1"}], "intent": "X"}',
    ...              '{"intent": "X", "slots": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]}')
    True
    """
    predicted, expected = leading_json_object(prediction_text), json_object(reference_text)
    return predicted is not None and expected is not None and canonical(predicted) == canonical(expected)


def json_fields(references: list[dict]) -> tuple[list[str], list[str]]:
    """(scalar fields, list fields) of the reference objects, in order of first appearance: a field is scored by
    accuracy when it always holds text, a number, true/false or null; by F1 when it always holds a list; a field
    holding objects, or different kinds in different references, only counts in the exact match."""
    kinds: dict[str, set[str]] = {}
    for reference in references:
        for key, value in reference.items():
            kinds.setdefault(key, set()).add("list" if isinstance(value, list) else
                                              "object" if isinstance(value, dict) else "scalar")
    return ([k for k, v in kinds.items() if v == {"scalar"}], [k for k, v in kinds.items() if v == {"list"}])


def f1(found: int, invented: int, missed: int) -> float:
    """F1 from true positives, false positives and false negatives; 1.0 when there was nothing to find and
    nothing was invented."""
    return 1.0 if found + invented + missed == 0 else 2 * found / (2 * found + invented + missed)


def json_field_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Each scalar field's accuracy ("intent acc", over the references that have the field) and each list field's
    micro F1 over its elements ("slots F1"), across all answers, read from the object each answer opens with; an
    answer that does not open with a JSON object gets every field wrong and finds no element.

    >>> refs = ['{"intent": "A", "slots": [{"name": "x", "value": "1"}, {"name": "y", "value": "2"}]}'] * 2
    >>> json_field_scores(['{"intent": "A", "slots": [{"name": "y", "value": "2"}]}', "not JSON"], refs)
    {'intent acc': 0.5, 'slots F1': 0.4}
    """
    expected = [json_object(r) or {} for r in references]
    predicted = [leading_json_object(p) or {} for p in predictions]
    scalars, lists = json_fields(expected)
    scores = {}
    for key in scalars:
        pairs = [(p, e) for p, e in zip(predicted, expected) if key in e]
        hits = sum(key in p and canonical(p[key]) == canonical(e[key]) for p, e in pairs)
        scores[f"{key} acc"] = hits / len(pairs)
    for key in lists:
        found = invented = missed = 0
        for p, e in zip(predicted, expected):
            guess = p.get(key) if isinstance(p.get(key), list) else []
            have, want = Counter(map(canonical, guess)), Counter(map(canonical, e.get(key) or []))
            hits = sum((have & want).values())
            found += hits
            invented += sum(have.values()) - hits
            missed += sum(want.values()) - hits
        scores[f"{key} F1"] = f1(found, invented, missed)
    return scores


def detect_task(references: list[str]) -> str:
    """The task `--task auto` picks: "json" when every reference is a JSON object, else "gsm8k".

    >>> detect_task(['{"intent": "A"}', '{"intent": "B"}']), detect_task(["... #### 4", '{"intent": "A"}'])
    ('json', 'gsm8k')
    """
    return "json" if references and all(json_object(r) is not None for r in references) else "gsm8k"


def score_answers(task: str, predictions: list[str],
                  references: list[str]) -> tuple[list[bool], list[bool], dict[str, float]]:
    """(correct, valid format, field scores) of each answer under `task`: gsm8k (the number; the `####` form; no
    field scores) or json (exact match; a JSON object; `json_field_scores`)."""
    if task == "json":
        return ([json_matches(p, r) for p, r in zip(predictions, references)],
                [json_object(p) is not None for p in predictions], json_field_scores(predictions, references))
    return [is_correct(p, r) for p, r in zip(predictions, references)], [follows_format(p) for p in predictions], {}


# -- usability ----------------------------------------------------------------------------------------------------

def is_repetitive(text: str, n: int = 8, times: int = 3) -> bool:
    """True if a line, or a run of `n` words, is written `times` times or more. Only lines of three words or more
    count, so that pretty-printed JSON's `},` or `"value": "v",` lines are not repetition.

    >>> is_repetitive("The answer is 5.\\nThe answer is 5.\\nThe answer is 5.")
    True
    >>> is_repetitive("and then we add one more to the sum " * 3), is_repetitive("2 plus 3 is 5.\\n#### 5")
    (True, False)
    """
    lines = Counter(" ".join(words) for line in text.split("\n") if len(words := line.split()) >= 3)
    if lines and max(lines.values()) >= times:
        return True
    words = text.split()
    runs = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(runs) and max(runs.values()) >= times
