"""Exact arithmetic for models that cannot do it: an AST whitelist evaluated over fractions, never `eval`.

A model fine-tuned on GSM8K writes calculator annotations (`48/2 = <<48/2=24>>24`); `seedbed serve` and
`seedbed eval --tools calculator` stop it at `<<48/2=`, compute the value here and append `24>>` themselves
(`annotations.py` is that loop, written once for both).

    >>> calculate("48/2")
    '24'
    >>> calculate("0.1 + 0.2")
    '0.3'
    >>> calculate("1/3")
    '0.333333333333'

No wall-clock guard: every bound below is checked before the work it bounds (the exponent and the digits of a
power before computing it, the size of every intermediate result, at most 200 parts), so the worst accepted
expression evaluates in milliseconds; `tests/test_calculator.py` times it.
"""

from __future__ import annotations

import ast
import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MAX_LENGTH = 500  # characters
MAX_NODES = 200  # AST nodes; this also bounds the nesting depth, so evaluation cannot recurse deeply
MAX_EXPONENT = 1000
MAX_DIGITS = 10_000  # of any numerator or denominator, intermediate or final
DECIMAL_PLACES = 12  # for results with no finite decimal expansion

_ARITHMETIC = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: Fraction(a // b), ast.Mod: lambda a, b: a % b,
}
# What a refused node is called in the error message, for the kinds a model (or an attacker) is likely to write.
_REFUSED = {
    ast.Attribute: "attributes are", ast.Subscript: "indexing is", ast.Compare: "comparisons are",
    ast.BoolOp: "and/or are", ast.Lambda: "lambdas are", ast.JoinedStr: "f-strings are", ast.List: "lists are",
    ast.Tuple: "commas are", ast.IfExp: "if-expressions are", ast.NamedExpr: "assignments are",
}
ALLOWED = "numbers, + - * / // % ** (or ^), × ÷ and parentheses"


class CalculatorError(ValueError):
    """An expression the calculator refuses; the message says why."""


def calculate(expression: str) -> str:
    """The exact value of an arithmetic expression: an integer, an exact decimal, or else rounded to 12 decimal
    places (below 1: to 12 significant digits, so that small values do not round to 0).

    A trailing '=' (as in an annotation `<<48/2=`) is ignored; '×', '÷' and '^' mean '*', '/' and '**'.

    >>> calculate("2**100")
    '1267650600228229401496703205376'
    >>> calculate("-7//2"), calculate("1/8"), calculate("12 × 3 ÷ 4 =")
    ('-4', '0.125', '9')
    >>> calculate("__import__('os')")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    CalculatorError: function calls are not allowed (__import__); use numbers, + - * / // % ** (or ^), × ÷ and ...
    """
    text = expression.strip().rstrip("=").strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:  # ValueError: a NUL byte
        reason = getattr(e, "msg", None) or str(e) or type(e).__name__
        raise CalculatorError(f"not an arithmetic expression ({reason}): {expression[:80]!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression has more than {MAX_NODES} parts (operators, numbers, parentheses)")
    return _format(_evaluate(tree.body, text))


def _evaluate(node: ast.AST, text: str) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _number(node, text)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand, text)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_evaluate(node.left, text), _evaluate(node.right, text))
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _evaluate(node.left, text), _evaluate(node.right, text)
        if right == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            raise CalculatorError("division by zero")
        return _bounded(_ARITHMETIC[type(node.op)](left, right))
    raise CalculatorError(f"{_refused(node)}; use {ALLOWED}")


def _refused(node: ast.AST) -> str:
    """What is wrong with a node outside the whitelist, in words."""
    if isinstance(node, ast.Name):
        return f"names are not allowed ({node.id})"
    if isinstance(node, ast.Call):
        return f"function calls are not allowed ({ast.unparse(node.func)[:40]})"
    if isinstance(node, ast.Constant):
        return f"{type(node.value).__name__} values are not allowed ({node.value!r:.40})"
    if isinstance(node, ast.Tuple):
        return "commas are not allowed (write 1000, not 1,000)"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the operator {type(node.op).__name__} is not allowed"
    return f"{_REFUSED.get(type(node), type(node).__name__ + ' is')} not allowed"


def _number(node: ast.Constant, text: str) -> Fraction:
    if isinstance(node.value, int):
        return Fraction(node.value)
    # A decimal literal is read from its text, so 0.1 is exactly one tenth rather than the nearest binary float
    # (and 123456789012345678901234.5 keeps all its digits).
    literal = (ast.get_source_segment(text, node) or repr(node.value)).replace("_", "")
    try:
        value = Decimal(literal)
    except InvalidOperation:
        raise CalculatorError(f"not a number: {literal!r}") from None
    if not value.is_finite() or abs(value.as_tuple().exponent) > MAX_DIGITS:  # 1e999999999 is refused unbuilt
        raise CalculatorError(f"the number {literal} has more than {MAX_DIGITS} digits")
    return _bounded(Fraction(value))


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise CalculatorError("fractional exponents are not supported (the result would not be exact)")
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exponent} is over {MAX_EXPONENT}")
    # Checked before computing, so 10**10**10 is refused at once: a power has at most base digits × exponent.
    digits = max(_digit_count(base.numerator), _digit_count(base.denominator))
    if digits * abs(exponent.numerator) > MAX_DIGITS:
        raise CalculatorError(f"the result of a power would have more than {MAX_DIGITS} digits")
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero")
    return base**exponent.numerator


def _bounded(value: Fraction) -> Fraction:
    if max(_digit_count(value.numerator), _digit_count(value.denominator)) > MAX_DIGITS:
        raise CalculatorError(f"a result has more than {MAX_DIGITS} digits")
    return value


def _digit_count(n: int) -> int:
    """Decimal digits of |n|, from its bit length: `str(n)` is slow on huge numbers and refused past 4300 digits."""
    n = abs(n)
    digits = max(1, int((n.bit_length() - 1) * math.log10(2)) + 1)
    while n >= 10**digits:  # the estimate can be one short (or one over, below) near powers of ten
        digits += 1
    while digits > 1 and n < 10 ** (digits - 1):
        digits -= 1
    return digits


def _format(value: Fraction) -> str:
    if value.denominator == 1:
        return _integer_text(value.numerator)
    denominator = value.denominator
    twos = (denominator & -denominator).bit_length() - 1  # the power of 2 dividing it
    fives_part = denominator >> twos
    fives = round(math.log(fives_part, 5))
    if 5**fives == fives_part:  # a finite decimal: written out in full, exactly
        places = max(twos, fives)
    else:
        # 12 places; below 1, as many more as there are leading zeros, so that small values keep 12 digits
        leading_zeros = max(0, _digit_count(denominator) - _digit_count(value.numerator) - 1)  # within one
        while leading_zeros > 0 and abs(value) * 10**leading_zeros >= 1:
            leading_zeros -= 1
        while abs(value) * 10 ** (leading_zeros + 1) < 1:
            leading_zeros += 1
        places = DECIMAL_PLACES + leading_zeros
    scaled = round(value * 10**places)
    digits = _integer_text(abs(scaled)).rjust(places + 1, "0")
    text = f"{'-' if scaled < 0 else ''}{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")
    return text if text not in ("", "-", "-0") else "0"


def _integer_text(n: int) -> str:
    # Through Decimal, which converts exactly and is not subject to int's 4300-digit `str` limit.
    return str(Decimal(n))


ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]*)>>")


def complete_annotations(text: str) -> str:
    """Replace the value of every GSM8K annotation `<<EXPR=VALUE>>` by the exact value of EXPR.

    An annotation whose expression the calculator refuses is left as written.

    >>> complete_annotations("She sold 48/2 = <<48/2=25>>25 clips, <<x=1>>.")
    'She sold 48/2 = <<48/2=24>>25 clips, <<x=1>>.'
    """

    def corrected(match: re.Match) -> str:
        try:
            return f"<<{match.group(1)}={calculate(match.group(1))}>>"
        except CalculatorError:
            return match.group(0)

    return ANNOTATION.sub(corrected, text)


def pending_annotation(text: str) -> str | None:
    """The expression of an annotation the text has opened and not valued yet (it ends `<<EXPR=`), else None.

    The decode loop calls this after every generated token, so it looks only at the text's tail.

    >>> pending_annotation("so she sold <<48/2="), pending_annotation("so <<48/2=24>>24")
    ('48/2', None)
    """
    if not text.endswith("="):
        return None
    start = text.rfind("<<")
    expression = text[start + 2 : -1] if start >= 0 else ""
    if not expression.strip() or any(c in expression for c in "<>="):
        return None
    return expression.strip()
