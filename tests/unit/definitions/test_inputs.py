"""Input coercion: strings from the CLI and Slack, native values, all problems at once."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.definitions.inputs import coerce_inputs, coerce_value, mask_inputs, parse_assignments
from bot.definitions.models import FlowDef, InputDef
from bot.errors import InputInvalid


def make_flow(**inputs: dict[str, Any]) -> FlowDef:
    return FlowDef.model_validate(
        {
            "name": "t",
            "inputs": inputs,
            "steps": [{"id": "a", "kind": "notify", "text": "hi"}],
        }
    )


@pytest.mark.parametrize(
    ("definition", "raw", "expected"),
    [
        ({"type": "string"}, "hello", "hello"),
        ({"type": "string", "pattern": "v?[0-9]+"}, "v12", "v12"),
        ({"type": "string", "min_length": 2, "max_length": 3}, "abc", "abc"),
        ({"type": "integer"}, "42", 42),
        ({"type": "integer"}, " -7 ", -7),
        ({"type": "integer"}, 42, 42),
        ({"type": "integer"}, 3.0, 3),
        ({"type": "integer", "min": 1, "max": 5}, "5", 5),
        ({"type": "number"}, "2.5", 2.5),
        ({"type": "number"}, "1500", 1500),
        ({"type": "number"}, 7, 7),
        ({"type": "number", "min": 0}, "0", 0),
        ({"type": "boolean"}, "yes", True),
        ({"type": "boolean"}, "FALSE", False),
        ({"type": "boolean"}, "1", True),
        ({"type": "boolean"}, "no", False),
        ({"type": "boolean"}, True, True),
        ({"type": "choice", "choices": ["staging", "production"]}, "production", "production"),
        ({"type": "choice", "choices": [1, 2, 3]}, "2", 2),
        ({"type": "choice", "choices": [1, 2, 3]}, 3, 3),
        ({"type": "choice", "choices": ["1", "2"]}, 1, "1"),
        ({"type": "list"}, "eu, us,,ap ", ["eu", "us", "ap"]),
        ({"type": "list"}, ["a", 1], ["a", 1]),
        ({"type": "list", "min_length": 1}, "a", ["a"]),
    ],
)
def test_coerce_value(definition: dict[str, Any], raw: Any, expected: Any) -> None:
    value = coerce_value(InputDef.model_validate(definition), raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("definition", "raw", "why"),
    [
        ({"type": "string"}, 5, "expected text, got 5"),
        ({"type": "string", "pattern": "v[0-9]+"}, "12", "does not match the pattern v[0-9]+"),
        ({"type": "string", "min_length": 2}, "a", "needs at least 2 characters, got 1"),
        ({"type": "string", "max_length": 2}, "abc", "allows at most 2 characters, got 3"),
        ({"type": "integer"}, "4.5", "expected a whole number, got '4.5'"),
        ({"type": "integer"}, True, "expected a whole number"),
        ({"type": "integer"}, "9" * 30, "expected a whole number"),
        ({"type": "integer", "min": 1}, "0", "0 is less than the minimum 1"),
        ({"type": "integer", "max": 10}, "11", "11 is more than the maximum 10"),
        ({"type": "number"}, "lots", "expected a number, got 'lots'"),
        ({"type": "number"}, "nan", "expected a finite number"),
        ({"type": "boolean"}, "maybe", "expected true or false (yes/no, 1/0)"),
        (
            {"type": "choice", "choices": ["staging", "production"]},
            "prod",
            "'prod' is not one of staging, production",
        ),
        (
            {"type": "choice", "choices": ["staging", "production"]},
            "stagin",
            "did you mean staging?",
        ),
        ({"type": "list"}, 5, "expected a list or comma-separated text"),
        ({"type": "list", "max_length": 1}, "a,b", "allows at most 1 items, got 2"),
    ],
)
def test_coerce_value_refuses(definition: dict[str, Any], raw: Any, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        coerce_value(InputDef.model_validate(definition), raw)


def test_coerce_inputs_fills_defaults_and_optional_values() -> None:
    flow = make_flow(
        order_id={"type": "integer"},
        quantity={"type": "integer", "default": 1},
        note={"type": "string", "required": False},
        rush={"type": "boolean", "default": False},
    )
    assert coerce_inputs(flow, {"order_id": "42", "rush": ""}) == {
        "order_id": 42,
        "quantity": 1,
        "note": None,
        "rush": False,
    }


def test_coerce_inputs_reports_every_problem_at_once() -> None:
    flow = make_flow(
        order_id={"type": "integer"},
        amount={"type": "number", "min": 0},
        env={"type": "choice", "choices": ["staging", "production"]},
    )
    with pytest.raises(InputInvalid) as caught:
        coerce_inputs(flow, {"amount": "-1", "env": "dev", "ordr_id": "4"})
    assert caught.value.problems == {
        "ordr_id": "this flow has no such input; did you mean `order_id`? "
        "(inputs: order_id, amount, env)",
        "order_id": "required: give it as order_id=…",
        "amount": "-1 is less than the minimum 0",
        "env": "'dev' is not one of staging, production",
    }
    assert caught.value.user_message.startswith("invalid inputs: ordr_id:")


def test_mask_inputs_hides_secret_inputs_only() -> None:
    flow = make_flow(token={"type": "string", "secret": True}, user={"type": "string"})
    values = {"token": "s3cret", "user": "ada", "extra": 1}
    assert mask_inputs(flow, values) == {"token": "***", "user": "ada", "extra": 1}
    assert mask_inputs(flow, {"token": None}) == {"token": None}


def test_parse_assignments() -> None:
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(InputInvalid) as caught:
        parse_assignments(["a=1", "oops", "a=2", "=3"])
    assert caught.value.problems == {
        "oops": "write it as name=value",
        "a": "given more than once",
        "=3": "write it as name=value",
    }
