"""Scalar value types of the flow format: durations, identifiers, cron strings.

Each type parses the human spelling a flow author writes (``90s``, ``1h30m``,
``U0123ABC``) and says in its error how to spell it right, because these
messages reach people through ``relay validate``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

DURATION_HINT = "write a duration like 30s, 5m, 1h30m or 2d"


def parse_duration(value: Any) -> timedelta:
    """Read ``30s`` / ``1h30m`` / a number of seconds into a timedelta.

    Raises ValueError with a hint, so pydantic shows the author how to fix it.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: {DURATION_HINT}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {DURATION_HINT}")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration: {DURATION_HINT}")
    text = value.strip().replace(" ", "")
    if not _DURATION_WHOLE.fullmatch(text):
        raise ValueError(f"{value!r} is not a duration: {DURATION_HINT}")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Spell a timedelta the way a flow author would (``1h30m``)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(ms|s|m|h|d|w))+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 30s, 5m, 1h30m, 2d, or a number of seconds.",
        }
    ),
]


def _pattern_check(pattern: str, what: str, example: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}: write it like {example}")
        return value

    return AfterValidator(check)


def _id_type(pattern: str, what: str, example: str) -> Any:
    return Annotated[
        str,
        _pattern_check(pattern, what, example),
        WithJsonSchema({"type": "string", "pattern": f"^{pattern}$", "description": what}),
    ]


FlowName = _id_type(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*", "flow name", "order-processing")
StepId = _id_type(r"[a-z][a-z0-9_]*", "step id (letters, digits, _)", "check_inventory")
Identifier = _id_type(r"[a-zA-Z_][a-zA-Z0-9_]*", "name (letters, digits, _)", "order_id")
EnvName = _id_type(r"[A-Z][A-Z0-9_]*", "environment variable name", "BILLING_TOKEN")
UserId = _id_type(r"[UW][A-Z0-9]{2,}", "Slack user id", "U0123ABCD")
GroupId = _id_type(r"S[A-Z0-9]{2,}", "Slack user group id", "S0123ABCD")
ChannelId = _id_type(r"[CGD][A-Z0-9]{2,}", "Slack channel id", "C0123ABCD")


def _check_cron(value: str) -> str:
    # The scheduler builds its triggers with the same function, so what passes fires.
    from bot.definitions.cron import crontab_trigger

    try:
        crontab_trigger(value, "UTC")
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a cron string ({exc}): write five fields, "
            "minute hour day month weekday, like '0 2 * * *'"
        ) from None
    return value


Cron = Annotated[
    str,
    AfterValidator(_check_cron),
    WithJsonSchema({"type": "string", "description": "cron: minute hour day month weekday"}),
]


def _check_timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone: write one like UTC or Europe/Paris"
        ) from None
    return value


TimeZone = Annotated[str, AfterValidator(_check_timezone)]
