"""Exact arithmetic for models that cannot do it: an AST whitelist over fractions, never `eval`.

    >>> calculate("48/2")
    '24'
    >>> calculate("0.1 + 0.2")
    '0.3'

Every bound below is checked before the work it bounds, so every accepted expression evaluates in well under a
millisecond to a few milliseconds; no wall-clock guard is needed.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

MAX_LENGTH = 500
MAX_NODES = 200
MAX_EXPONENT = 1000
MAX_DIGITS = 10_000

_OPERATORS = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: Fraction(a // b), ast.Mod: lambda a, b: a % b,
}


class CalculatorError(ValueError):
    """An expression the calculator refuses; the message says why."""


def calculate(expression: str) -> str:
    """Compute `expression` exactly; integers stay integers, exact decimals stay exact, others get 12 places."""
    text = expression.strip().rstrip("=").strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression has more than {MAX_NODES} parts")
    return _format(_evaluate(tree.body))


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # Through the literal's text, so 0.1 is exactly one tenth rather than the nearest binary float.
        return Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalculatorError("division by zero")
        return _bounded(_OPERATORS[type(node.op)](left, right))
    kind = type(node).__name__
    if isinstance(node, ast.Name):
        raise CalculatorError(f"names are not allowed ({node.id}); use numbers only")
    if isinstance(node, ast.Call):
        raise CalculatorError("function calls are not allowed")
    raise CalculatorError(f"{kind} is not allowed; use numbers, + - * / // % ** and parentheses")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise CalculatorError("fractional exponents are not supported (the result would not be exact)")
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exponent} is over {MAX_EXPONENT}")
    digits = max(len(str(abs(base.numerator))), len(str(base.denominator)))
    if digits * abs(int(exponent)) > MAX_DIGITS:  # checked before computing: 10**10**10 is refused at once
        raise CalculatorError(f"the result would have more than {MAX_DIGITS} digits")
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero")
    return base ** int(exponent)


def _bounded(value: Fraction) -> Fraction:
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise CalculatorError(f"the result has more than {MAX_DIGITS} digits")
    return value


def _format(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    places = max(twos, fives) if denominator == 1 else 12  # exact decimals are written out in full
    scaled = round(value * 10**places)
    sign, digits = ("-" if scaled < 0 else ""), str(abs(scaled)).rjust(places + 1, "0")
    text = f"{sign}{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")
    return text if text not in ("", "-") else "0"


ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]*)>>")
OPEN_ANNOTATION = re.compile(r"<<([^<>=]+)=$")


def complete_annotations(text: str) -> str:
    """Replace the value of every GSM8K annotation `<<EXPR=VALUE>>` by the exact value of EXPR.

    >>> complete_annotations("She sold 48/2 = <<48/2=25>>25 clips.")
    'She sold 48/2 = <<48/2=24>>25 clips.'
    """

    def fix(match: re.Match) -> str:
        try:
            return f"<<{match.group(1)}={calculate(match.group(1))}>>"
        except CalculatorError:
            return match.group(0)

    return ANNOTATION.sub(fix, text)


def pending_annotation(text: str) -> str | None:
    """The expression of an annotation the text has opened but not valued yet (`... <<48/2=`), else None."""
    match = OPEN_ANNOTATION.search(text)
    return match.group(1) if match else None
