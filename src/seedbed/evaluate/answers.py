"""Reading a numeric answer out of a model's text and checking it against a GSM8K-style reference.

GSM8K references end with `#### <number>` (Cobbe et al. 2021). A prediction's answer is the number after its
last `####` when it wrote one, else the last number it wrote, the usual lenient reading (as in lm-eval's
`gsm8k` "flexible-extract" filter), so a zero-shot base model is not scored zero for format alone.
`follows_format` reports separately whether the model wrote the `####` form.
"""

from __future__ import annotations

import re

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
