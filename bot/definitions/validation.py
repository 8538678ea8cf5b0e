"""Turn pydantic's ValidationError into Problems a flow author can act on.

Pydantic reports *where* as a ``loc`` in the data and *what* as a type code.
This module finds each ``loc`` in the YAML (skipping the elements pydantic adds
for union members, such as the step tag in ``("steps", 0, "http", "url")``),
rewrites the message in the flow author's terms, and adds a did-you-mean for
misspelt keys, step kinds and choices.
"""

from __future__ import annotations

import re
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bot.definitions.models import STEP_KINDS, FlowDef, Path
from bot.definitions.problems import Problem, did_you_mean, quoted_list, suggestion
from bot.definitions.yaml_source import SourceMap

_EXPECTED = {
    "string_type": "text",
    "string_unicode": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping (`key: value` lines)",
    "model_type": "a mapping (`key: value` lines)",
    "model_attributes_type": "a mapping (`key: value` lines)",
    "none_required": "nothing",
}
_CHOICE_TYPES = frozenset({"literal_error", "enum"})
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


@dataclass(frozen=True)
class _Located:
    """One pydantic error resolved against the document."""

    error: ErrorDetails
    path: Path
    """The part of ``loc`` that exists in the document."""
    missing: str | None
    """For ``missing`` errors: the absent key."""
    in_union: bool
    """Whether pydantic tried several union members here (their errors are merged)."""


def validation_problems(
    error: ValidationError, *, data: Any, source: SourceMap, file: str
) -> list[Problem]:
    """One Problem per distinct place, union alternatives merged into one message."""
    groups: dict[object, list[_Located]] = {}
    for index, details in enumerate(error.errors(include_url=False)):
        located = _resolve(details, data)
        key = (located.path, located.missing) if located.in_union else index
        groups.setdefault(key, []).append(located)
    return [_problem(group, data=data, source=source, file=file) for group in groups.values()]


def _resolve(details: ErrorDetails, data: Any) -> _Located:
    loc = details["loc"]
    path: list[str | int] = []
    current = data
    in_union = False
    missing: str | None = None
    for index, part in enumerate(loc):
        if part == "[key]":
            continue
        if isinstance(current, dict) and current.get("kind") == part and part in STEP_KINDS:
            continue
        if _has(current, part):
            path.append(part)
            current = current[part]
        elif index == len(loc) - 1 and details["type"] == "missing" and isinstance(part, str):
            missing = part
        else:
            in_union = True
    return _Located(details, tuple(path), missing, in_union)


def _has(container: Any, part: str | int) -> bool:
    if isinstance(container, dict):
        return isinstance(part, str) and part in container
    if isinstance(container, list):
        return isinstance(part, int) and 0 <= part < len(container)
    return False


def _problem(group: Sequence[_Located], *, data: Any, source: SourceMap, file: str) -> Problem:
    first = group[0]
    code, message, fix = _describe(group, data)
    if first.error["type"] == "union_tag_invalid" and source.has((*first.path, "kind")):
        mark = source.locate((*first.path, "kind"))
    else:
        mark = source.locate(first.path)
    return Problem(
        file=file,
        line=mark.line,
        column=mark.column,
        severity="error",
        code=code,
        message=message,
        fix=fix,
    )


def _describe(group: Sequence[_Located], data: Any) -> tuple[str, str, str]:
    located = group[0]
    details = located.error
    kind = details["type"]
    where = _where(located.path)
    if kind == "extra_forbidden":
        key = str(located.path[-1])
        allowed = _allowed_keys(details["loc"][:-1])
        match = did_you_mean(key, allowed)
        fix = (
            f"rename it to `{match}`"
            if match
            else f"remove it; the keys allowed here are {quoted_list(allowed)}"
        )
        message = f"unknown key `{key}`{_in_step(located.path, data)}{suggestion(key, allowed)}"
        return "unknown-key", message, fix
    if kind == "union_tag_invalid":
        tag = str((details.get("ctx") or {}).get("tag", ""))
        return (
            "unknown-step-kind",
            f"unknown step kind `{tag}`{suggestion(tag, STEP_KINDS)}",
            f"use one of {quoted_list(STEP_KINDS)}",
        )
    if kind == "union_tag_not_found":
        return (
            "missing-step-kind",
            f"this step needs `kind:` (one of {quoted_list(STEP_KINDS)})",
            "add a `kind:` line, e.g. `kind: http`",
        )
    if kind == "missing":
        name = located.missing or ".".join(str(part) for part in details["loc"])
        return (
            "missing-key",
            f"missing `{name}`{_in_step(located.path, data)}",
            f"add `{name}:` here",
        )
    if all(_is_type_error(item.error) for item in group):
        return _type_problem(group, where)
    messages = [_plain_message(item.error) for item in group]
    if len(group) == 1 and kind in ("value_error", "assertion_error"):
        return ("invalid-value", *_split_fix(messages[0], where))
    return (
        "invalid-value",
        f"{where}: {' or '.join(dict.fromkeys(messages))}, got {_show(details['input'])}",
        f"change {where} to fit",
    )


def _type_problem(group: Sequence[_Located], where: str) -> tuple[str, str, str]:
    expected: list[str] = []
    choices: list[str] = []
    for item in group:
        details = item.error
        if details["type"] in _CHOICE_TYPES:
            spelled = str((details.get("ctx") or {}).get("expected", ""))
            choices.extend(re.findall(r"'([^']*)'", spelled))
            expected.append(f"one of {spelled}")
        else:
            expected.append(_EXPECTED[details["type"]])
    value = group[0].error["input"]
    message = f"{where}: expected {' or '.join(dict.fromkeys(expected))}, got {_show(value)}"
    match = did_you_mean(value, choices) if isinstance(value, str) else None
    if match:
        return "wrong-type", f"{message}: did you mean `{match}`?", f"write `{match}`"
    if "text" in expected and isinstance(value, bool | int | float):
        return "wrong-type", message, f'quote the value so YAML keeps it as text: "{_show(value)}"'
    return "wrong-type", message, f"write {' or '.join(dict.fromkeys(expected))} here"


def _is_type_error(details: ErrorDetails) -> bool:
    return details["type"] in _EXPECTED or details["type"] in _CHOICE_TYPES


def _plain_message(details: ErrorDetails) -> str:
    message = details["msg"]
    for prefix in _VALIDATOR_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    if details["type"] == "too_short":
        wanted = (details.get("ctx") or {}).get("min_length", 1)
        return f"needs at least {wanted} item{'s' if wanted != 1 else ''}"
    return message.replace("Input should be", "must be")


def _split_fix(message: str, where: str) -> tuple[str, str]:
    """Our validators say what is wrong and, after ``: write``, how to write it."""
    head, separator, tail = message.partition(": write ")
    if separator:
        return head, "write " + tail
    return message, f"change {where} as the message says (docs/flows.md describes each key)"


def _where(path: Path) -> str:
    if not path:
        return "the file"
    last = path[-1]
    if isinstance(last, int):
        parent = f" of `{path[-2]}`" if len(path) > 1 else ""
        return f"item {last + 1}{parent}"
    return f"`{last}`"


def _in_step(path: Path, data: Any) -> str:
    """`` in step `x` `` for a path inside a step that has an id, to say where in words."""
    step_id: str | None = None
    current = data
    for part in (*path, None):
        if isinstance(current, dict) and isinstance(current.get("id"), str) and "kind" in current:
            step_id = current["id"]
        if part is None or not _has(current, part):
            break
        current = current[part]
    return f" in step `{step_id}`" if step_id else ""


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts, by walking the model types along it."""
    current: Any = FlowDef
    for part in loc:
        current = _step_into(current, part)
        if current is None:
            return []
    model = _unwrap(current)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [info.alias or name for name, info in model.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _step_into(annotation: Any, part: str | int) -> Any:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    origin = get_origin(annotation)
    if origin is list:
        return get_args(annotation)[0]
    if origin is dict:
        return get_args(annotation)[1]
    if origin in (Union, types.UnionType):
        for member in get_args(annotation):
            model = _unwrap(member)
            if isinstance(model, type) and issubclass(model, BaseModel):
                kind = model.model_fields.get("kind")
                if kind is not None and part in get_args(kind.annotation):
                    return model
        return annotation
    return None
