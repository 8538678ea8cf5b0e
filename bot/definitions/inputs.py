"""Turn run inputs as people type them into the typed values a flow declared.

Inputs arrive as ``key=value`` strings from the CLI and from Slack, or as native
values from a schedule, a sub-flow step or a test. Both go through the same
rules here, so ``quantity=3`` typed in Slack and ``quantity: 3`` in a trigger
are the same value, and every problem is reported at once, not the first only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from bot.definitions.models import FlowDef, InputDef, InputType
from bot.definitions.problems import did_you_mean
from bot.errors import InputInvalid

MASK = "***"
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def parse_assignments(args: Iterable[str]) -> dict[str, str]:
    """``["order_id=42", "sku=AB-1"]`` → ``{"order_id": "42", "sku": "AB-1"}``.

    Only the first ``=`` splits, so values may contain ``=``. Raises InputInvalid
    naming every argument without ``=`` and every name given twice.
    """
    values: dict[str, str] = {}
    problems: dict[str, str] = {}
    for arg in args:
        name, separator, value = arg.partition("=")
        name = name.strip()
        if not separator or not name:
            problems[arg] = "write it as name=value"
        elif name in values:
            problems[name] = "given more than once"
        else:
            values[name] = value
    if problems:
        raise InputInvalid(problems=problems)
    return values


def coerce_inputs(flow: FlowDef, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check and convert ``raw`` against ``flow.inputs``; fill defaults.

    Optional inputs that are neither given nor defaulted are present as
    ``None``, so templates can test them without tripping on an undefined name.
    Raises InputInvalid listing every problem (unknown names with a
    did-you-mean, missing required inputs, values that do not fit).
    """
    problems: dict[str, str] = {}
    for name in raw:
        if name not in flow.inputs:
            match = did_you_mean(name, flow.inputs)
            hint = f"; did you mean `{match}`?" if match else ""
            known = ", ".join(flow.inputs) or "none"
            problems[name] = f"this flow has no such input{hint} (inputs: {known})"
    values: dict[str, Any] = {}
    for name, definition in flow.inputs.items():
        value = raw.get(name)
        if _absent(value, definition):
            if definition.default is not None:
                value = definition.default
            elif definition.is_required:
                problems[name] = f"required: give it as {name}=…"
                continue
            else:
                values[name] = None
                continue
        try:
            values[name] = coerce_value(definition, value)
        except ValueError as exc:
            problems[name] = str(exc)
    if problems:
        raise InputInvalid(problems=problems)
    return values


def mask_inputs(flow: FlowDef, values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` safe to show: inputs declared ``secret: true`` become ``***``."""
    return {
        name: MASK
        if name in flow.inputs and flow.inputs[name].secret and value is not None
        else value
        for name, value in values.items()
    }


def _absent(value: Any, definition: InputDef) -> bool:
    if value is None:
        return True
    # An empty form field means "not given" for anything but text.
    return definition.type is not InputType.STRING and isinstance(value, str) and not value.strip()


def coerce_value(definition: InputDef, value: Any) -> Any:
    """One value converted to the input's type and checked against its limits.

    Raises ValueError whose text says what is wrong in the user's terms.
    """
    converted: Any
    if definition.type is InputType.STRING:
        converted = _string(value)
    elif definition.type is InputType.INTEGER:
        converted = _integer(value)
    elif definition.type is InputType.NUMBER:
        converted = _number(value)
    elif definition.type is InputType.BOOLEAN:
        return _boolean(value)
    elif definition.type is InputType.CHOICE:
        return _choice(value, definition.choices)
    else:
        converted = _list(value)
    _check_limits(definition, converted)
    return converted


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,18}\s*", value):
        return int(value)
    raise ValueError(f"expected a whole number, got {value!r}")


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    number: int | float
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,18}\s*", value):
        number = int(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    else:
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false (yes/no, 1/0), got {value!r}")


def _choice(value: Any, choices: list[str | int]) -> str | int:
    for choice in choices:
        if value == choice and isinstance(value, bool) == isinstance(choice, bool):
            return choice
    text = str(value).strip() if isinstance(value, str | int) else None
    for choice in choices:
        if text is not None and text == str(choice):
            return choice
    allowed = ", ".join(str(choice) for choice in choices)
    match = did_you_mean(str(value), [str(choice) for choice in choices])
    hint = f"; did you mean {match}?" if match else ""
    raise ValueError(f"{value!r} is not one of {allowed}{hint}")


def _list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    raise ValueError(f"expected a list or comma-separated text, got {value!r}")


def _check_limits(definition: InputDef, value: Any) -> None:
    if isinstance(value, int | float):
        if definition.min is not None and value < definition.min:
            raise ValueError(f"{value} is less than the minimum {definition.min:g}")
        if definition.max is not None and value > definition.max:
            raise ValueError(f"{value} is more than the maximum {definition.max:g}")
        return
    unit = "characters" if isinstance(value, str) else "items"
    if definition.min_length is not None and len(value) < definition.min_length:
        raise ValueError(f"needs at least {definition.min_length} {unit}, got {len(value)}")
    if definition.max_length is not None and len(value) > definition.max_length:
        raise ValueError(f"allows at most {definition.max_length} {unit}, got {len(value)}")
    if (
        isinstance(value, str)
        and definition.pattern is not None
        and not re.fullmatch(definition.pattern, value)
    ):
        raise ValueError(f"{value!r} does not match the pattern {definition.pattern}")
