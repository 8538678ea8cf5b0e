"""The shipped flows load cleanly, and the JSON Schema describes them.

``jsonschema`` is not a dependency, so the schema is checked by a small
validator for exactly the keywords pydantic emits; it fails on any other
keyword, so a new construct in the schema cannot slip through unchecked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot.definitions.loader import load_flow_file, load_flows
from bot.definitions.schema import SCHEMA_DIALECT, flow_schema
from bot.definitions.yaml_source import read_yaml

FLOWS = Path(__file__).resolve().parents[3] / "flows"
EXAMPLES = sorted(FLOWS.glob("*.yaml"))
ANNOTATIONS = {"title", "description", "default", "discriminator", "$id", "$schema", "$defs"}


def test_there_are_examples() -> None:
    assert {path.stem for path in EXAMPLES} >= {
        "order-processing",
        "deploy-service",
        "nightly-report",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_loads_without_any_problem(path: Path) -> None:
    result = load_flow_file(path)
    assert [problem.format() for problem in result.problems] == []
    assert result.flow is not None
    assert result.flow.name == path.stem


def test_examples_load_together() -> None:
    catalog = load_flows(FLOWS)
    assert catalog.problems == []
    assert sorted(catalog.flows) == sorted(path.stem for path in EXAMPLES)


class SchemaViolation(AssertionError):
    pass


def validate(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    """Validate ``instance`` against the subset of JSON Schema that pydantic emits."""
    unknown = set(schema) - ANNOTATIONS - set(KEYWORDS)
    assert not unknown, f"unsupported keywords {unknown} at {where}"
    for keyword, check_keyword in KEYWORDS.items():
        if keyword in schema:
            check_keyword(instance, schema, root, where)


def _ref(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    target: Any = root
    for part in schema["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    validate(instance, target, root, where)


TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def _type(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    wanted = TYPES[schema["type"]]
    ok = isinstance(instance, wanted)
    if schema["type"] in ("integer", "number") and isinstance(instance, bool):
        ok = False
    if not ok:
        raise SchemaViolation(f"{where}: {instance!r} is not {schema['type']}")


def _properties(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if not isinstance(instance, dict):
        return
    for key, value in instance.items():
        if key in schema["properties"]:
            validate(value, schema["properties"][key], root, f"{where}.{key}")
        elif schema.get("additionalProperties") is False:
            raise SchemaViolation(f"{where}: unexpected key {key!r}")


def _additional(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    extra = schema["additionalProperties"]
    if isinstance(instance, dict) and isinstance(extra, dict):
        known = schema.get("properties", {})
        for key, value in instance.items():
            if key not in known:
                validate(value, extra, root, f"{where}.{key}")


def _pattern_properties(
    instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str
) -> None:
    if isinstance(instance, dict):
        for pattern, sub in schema["patternProperties"].items():
            for key, value in instance.items():
                if re.search(pattern, key):
                    validate(value, sub, root, f"{where}.{key}")


def _property_names(
    instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str
) -> None:
    if isinstance(instance, dict):
        for key in instance:
            validate(key, schema["propertyNames"], root, f"{where}[{key!r}]")


def _required(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if isinstance(instance, dict):
        missing = [key for key in schema["required"] if key not in instance]
        if missing:
            raise SchemaViolation(f"{where}: missing {missing}")


def _items(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if isinstance(instance, list):
        for index, item in enumerate(instance):
            validate(item, schema["items"], root, f"{where}[{index}]")


def _matches(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> bool:
    try:
        validate(instance, schema, root, where)
    except SchemaViolation:
        return False
    return True


def _any_of(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if not any(_matches(instance, sub, root, where) for sub in schema["anyOf"]):
        raise SchemaViolation(f"{where}: {instance!r} matches no alternative")


def _one_of(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    matching = sum(_matches(instance, sub, root, where) for sub in schema["oneOf"])
    if matching != 1:
        raise SchemaViolation(f"{where}: {instance!r} matches {matching} alternatives, not 1")


def _const(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if instance != schema["const"]:
        raise SchemaViolation(f"{where}: {instance!r} is not {schema['const']!r}")


def _enum(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if instance not in schema["enum"]:
        raise SchemaViolation(f"{where}: {instance!r} not in {schema['enum']}")


def _pattern(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if isinstance(instance, str) and not re.search(schema["pattern"], instance):
        raise SchemaViolation(f"{where}: {instance!r} does not match {schema['pattern']}")


def _minimum(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if isinstance(instance, int | float) and instance < schema["minimum"]:
        raise SchemaViolation(f"{where}: {instance!r} < {schema['minimum']}")


def _maximum(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if isinstance(instance, int | float) and instance > schema["maximum"]:
        raise SchemaViolation(f"{where}: {instance!r} > {schema['maximum']}")


def _min_items(instance: Any, schema: dict[str, Any], root: dict[str, Any], where: str) -> None:
    if isinstance(instance, list) and len(instance) < schema["minItems"]:
        raise SchemaViolation(f"{where}: fewer than {schema['minItems']} items")


KEYWORDS = {
    "$ref": _ref,
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "patternProperties": _pattern_properties,
    "propertyNames": _property_names,
    "required": _required,
    "items": _items,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "const": _const,
    "enum": _enum,
    "pattern": _pattern,
    "minimum": _minimum,
    "maximum": _maximum,
    "minItems": _min_items,
}


def test_schema_header_and_step_kinds() -> None:
    schema = flow_schema()
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["$id"].startswith("urn:relay:")
    assert schema["title"] == "Relay flow"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "steps"}
    step_union = schema["properties"]["steps"]["items"]
    assert step_union["discriminator"]["propertyName"] == "kind"
    assert sorted(step_union["discriminator"]["mapping"]) == sorted(
        ["http", "approval", "notify", "wait", "flow", "parallel"]
    )
    http = schema["$defs"]["HttpStep"]["properties"]
    assert "json" in http and "body_json" not in http
    assert "as" in schema["$defs"]["ForEach"]["properties"]
    assert schema["$defs"]["Defaults"]["properties"]["timeout"]["default"] == "30s"


def test_every_ref_resolves() -> None:
    schema = flow_schema()
    text = repr(schema)
    for name in re.findall(r"'#/\$defs/([A-Za-z]+)'", text):
        assert name in schema["$defs"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_examples_validate_against_the_schema(path: Path) -> None:
    schema = flow_schema()
    data = read_yaml(path.read_text(encoding="utf-8"), file=str(path)).data
    validate(data, schema, schema, "flow")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda data: data.update(stepz=[]), "unexpected key 'stepz'"),
        (lambda data: data["steps"][0].update(kind="htp"), "matches 0 alternatives"),
        (lambda data: data.pop("name"), "missing ['name']"),
    ],
)
def test_schema_rejects_broken_flows(change: Any, words: str) -> None:
    schema = flow_schema()
    data = read_yaml(EXAMPLES[0].read_text(encoding="utf-8"), file="x").data
    change(data)
    with pytest.raises(SchemaViolation, match=re.escape(words)):
        validate(data, schema, schema, "flow")
