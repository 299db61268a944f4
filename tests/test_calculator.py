"""The calculator: exact results, and a clear refusal for anything that is not arithmetic."""

from __future__ import annotations

import time

import pytest

from seedbed.serve.calculator import CalculatorError, calculate, complete_annotations, pending_annotation
from seedbed.serve.tools import CALCULATOR, parse_tool_calls, run_tool_loop, tool_from_openai, ToolError


@pytest.mark.parametrize("expression, value", [
    ("48/2", "24"), ("0.1 + 0.2", "0.3"), ("1/8", "0.125"), ("1/3", "0.333333333333"), ("(3+4)*5", "35"),
    ("2**100", "1267650600228229401496703205376"), ("-7//2", "-4"), ("7 % 3", "1"), ("2.50 * 2", "5"),
    ("12 × 3 ÷ 4", "9"), ("2^10", "1024"), ("-1/3", "-0.333333333333"), ("48/2=", "24"), ("10**-2", "0.01"),
])
def test_exact_results(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression, reason", [
    ("__import__('os')", "calls"), ("10**10**10", "exponent"), ("x + 1", "names"), ("abs(-1)", "calls"),
    ("(1).real", "Attribute"), ("'a' * 3", "Constant"), ("1/0", "division by zero"), ("2**0.5", "fractional"),
    ("9" * 501, "longer"), ("+".join(["1"] * 150), "parts"), ("99999999999**999", "digits"), ("1 < 2", "Compare"),
    ("True + 1", "Constant"), ("", "empty"),
])
def test_refusals_are_clear_and_instant(expression, reason):
    started = time.perf_counter()
    with pytest.raises(CalculatorError, match=reason):
        calculate(expression)
    assert time.perf_counter() - started < 0.1


def test_worst_allowed_input_is_fast():
    started = time.perf_counter()
    assert len(calculate("9**1000")) == 955
    assert time.perf_counter() - started < 0.1


def test_gsm8k_annotations():
    assert complete_annotations("She sold 48/2 = <<48/2=25>>25 clips.") == "She sold 48/2 = <<48/2=24>>25 clips."
    assert complete_annotations("<<x=1>>") == "<<x=1>>"  # not computable: left as written
    assert pending_annotation("so 48/2 = <<48/2=") == "48/2"
    assert pending_annotation("so <<48/2=24>> and") is None


def test_tool_calls_are_parsed_and_run():
    text, calls = parse_tool_calls('Let me compute. <tool_call>{"name": "calculator", "arguments": '
                                   '{"expression": "12*(3+4)"}}</tool_call>')
    assert text == "Let me compute." and calls[0].name == "calculator" and calls[0].id.startswith("call_")
    assert parse_tool_calls("<tool_call>{not json}</tool_call>")[1] == []
    assert parse_tool_calls('{"name": "calculator", "arguments": {"expression": "1+1"}}')[1][0].name == "calculator"

    replies = iter(['<tool_call>{"name": "calculator", "arguments": {"expression": "12*(3+4)"}}</tool_call>'])

    def reply(messages):
        return next(replies, "The answer is " + messages[-1]["content"])

    final, appended = run_tool_loop(reply, [{"role": "user", "content": "12*7?"}], {"calculator": CALCULATOR})
    assert final == "The answer is 84" and appended[1] == {"role": "tool", "tool_call_id": appended[0]["tool_calls"][0]["id"],
                                                           "name": "calculator", "content": "84"}


def test_tool_loop_is_bounded_and_tool_errors_are_results():
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1/0"}}</tool_call>'
    asked = []
    final, appended = run_tool_loop(lambda m: asked.append(m) or call, [], {"calculator": CALCULATOR}, max_steps=3)
    assert len(asked) == 4 and final == call
    assert appended[1]["content"].startswith("error: division by zero")


def test_openai_tool_declarations_are_validated():
    assert tool_from_openai(CALCULATOR.spec()).name == "calculator"
    for bad in [{"type": "retrieval"}, {"type": "function", "function": {"name": "bad name!"}},
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]:
        with pytest.raises(ToolError):
            tool_from_openai(bad)
