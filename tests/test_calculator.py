"""The calculator: exact results, a clear and instant refusal for anything that is not bounded arithmetic."""

from __future__ import annotations

import doctest
import time
from decimal import Decimal

import pytest

from seedbed.inference import calculator
from seedbed.inference.calculator import CalculatorError, calculate, complete_annotations, pending_annotation


@pytest.mark.parametrize("expression, value", [
    ("48/2", "24"), ("(3+4)*5", "35"), ("-7//2", "-4"), ("7 % 3", "1"), ("-7 % 3", "2"), ("2**100", str(2**100)),
    ("0.1 + 0.2", "0.3"), ("1/8", "0.125"), ("2.50 * 2", "5"), ("1.5 + .25", "1.75"), ("7.5 // 2", "3"),
    ("1/3", "0.333333333333"), ("-1/3", "-0.333333333333"), ("2/3*1000", "666.666666666667"),
    ("1/30000", "0.0000333333333333"),  # below 1, 12 significant digits rather than 12 places
    ("10**-2", "0.01"), ("(1/2)**-3", "8"), ("0**0", "1"), ("+5 - -5", "10"),
    ("123456789012345678901234.5 + 0.5", "123456789012345678901235"),  # decimals are read exactly, not as floats
    ("1e3 + 1", "1001"), ("1_000 * 3", "3000"), ("48/2=", "24"), (" 48 / 2 = ", "24"),
    ("12 × 3 ÷ 4", "9"), ("2^10", "1024"),
])
def test_exact_results(expression, value):
    assert calculate(expression) == value


def test_results_past_python_str_limit_are_written_exactly():
    # int's str() refuses past 4300 digits; the calculator's own limit is 10,000
    assert calculate("99999**1000") == str(Decimal(99999**1000)) and len(calculate("99999**1000")) == 5000
    assert calculate("(10**1000)**9 + 1") == "1" + "0" * 8999 + "1"
    assert calculate("1/2**20") == "0.00000095367431640625"


@pytest.mark.parametrize("expression, message", [
    ("__import__('os')", r"function calls are not allowed \(__import__\)"),
    ("abs(-1)", r"function calls are not allowed \(abs\)"),
    ("x + 1", r"names are not allowed \(x\)"),
    ("(1).real", "attributes are not allowed"),
    ("'a' * 3", "str values are not allowed"),
    ("[1][0]", "is not allowed"),
    ("1 < 2", "comparisons are not allowed"),
    ("lambda: 1", "lambdas are not allowed"),
    ("f'{1}'", "f-strings are not allowed"),
    ("True + 1", "bool values are not allowed"),
    ("1j * 2", "complex values are not allowed"),
    ("1 << 3", "operator LShift is not allowed"),
    ("1,000 * 3", "commas are not allowed"),
    ("1/0", "division by zero"), ("5 % 0", "division by zero"), ("0**-1", "division by zero"),
    ("2**0.5", "fractional exponents"),
    ("10**10**10", "exponent 10000000000 is over 1000"),
    ("(99**1000)**6", "more than 10000 digits"),
    ("(9**1000)**10 * (9**1000)**10", "more than 10000 digits"),
    ("1e99999999", "more than 10000 digits"),
    ("9" * 501, "longer than 500"),
    ("+".join(["1"] * 150), "more than 200 parts"),
    ("-" * 300 + "1", "more than 200 parts"),
    ("(" * 240 + "1" + ")" * 240, "too many nested parentheses"),
    ("48/2=24", "not an arithmetic expression"),
    ("\x00", "not an arithmetic expression"),
    ("", "empty"), ("=", "empty"),
])
def test_refusals_are_clear_and_instant(expression, message):
    started = time.perf_counter()
    with pytest.raises(CalculatorError, match=message):
        calculate(expression)
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize("expression", [
    "(9**1000)**10",  # the largest power allowed: 9,543 digits
    "1/(2**1000)**33",  # an exact decimal 33,000 places long
    "(9**1000)**10/(7**1000)**11 % (3**1000)**15",  # fractions of ~10,000 digits
    "-".join(["(9**1000)**10 % (7**1000)**11"] * 7),  # as many big operations as 200 parts allow
])
def test_worst_allowed_inputs_are_fast(expression):
    # No wall-clock guard exists; these bounds are what keep every evaluation fast.
    started = time.perf_counter()
    calculate(expression)
    assert time.perf_counter() - started < 0.1


def test_complete_annotations_fixes_values():
    assert complete_annotations("She sold 48/2 = <<48/2=25>>25 clips.") == "She sold 48/2 = <<48/2=24>>25 clips."
    text = "<<12*3=36>> and <<5/2=2>> and <<x=1>> and <<1/0=7>>"
    assert complete_annotations(text) == "<<12*3=36>> and <<5/2=2.5>> and <<x=1>> and <<1/0=7>>"  # refused: as written
    assert complete_annotations("no annotations here") == "no annotations here"


def test_pending_annotation():
    assert pending_annotation("so 48/2 = <<48/2=") == "48/2"
    assert pending_annotation("<<1+1=2>> then <<3 * 4 =") == "3 * 4"
    assert pending_annotation("so <<48/2=24>> and") is None
    assert pending_annotation("so <<48/2=24>>") is None
    assert pending_annotation("x = ") is None and pending_annotation("x =") is None
    assert pending_annotation("<<=") is None and pending_annotation("") is None


def test_docstring_examples():
    assert doctest.testmod(calculator).failed == 0
