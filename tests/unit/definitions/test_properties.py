"""The loader never raises, whatever the text: random text, YAML-ish soup, mutated examples.

Every problem it reports points at a real place (line and column at least 1,
line within the file) and no input trips the internal-error safety net.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.definitions.loader import LoadResult, load_flow_text
from bot.definitions.models import FlowDef

FLOWS = Path(__file__).resolve().parents[3] / "flows"
EXAMPLES = [path.read_text(encoding="utf-8") for path in sorted(FLOWS.glob("*.yaml"))]
EXAMPLE_DATA = [yaml.safe_load(text) for text in EXAMPLES]

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(text: str) -> LoadResult:
    result = load_flow_text(text, file="fuzz.yaml")
    assert isinstance(result.problems, list)
    assert result.flow is None or isinstance(result.flow, FlowDef)
    if result.flow is None:
        assert any(problem.is_error for problem in result.problems)
    last_line = len(text.splitlines()) + 1
    for problem in result.problems:
        assert problem.code != "internal-error", problem.message
        assert 1 <= problem.line <= last_line, problem.format()
        assert problem.column >= 1, problem.format()
        assert problem.severity in ("error", "warning")
        assert problem.message and problem.fix
    return result


@PROPERTY
@given(st.text())
def test_random_text(text: str) -> None:
    check(text)


PUNCTUATION = ["- ", ": ", "\n", "  ", "&a ", "*a ", "<<: ", "{", "}", "[", "]", ", ", "? "]
QUOTES_AND_MARKERS = ["!!str ", "!tag ", "'", '"', "|", ">", "#", "---", "...", "\t", "{{ ", " }}"]
WORDS = ["name", "steps", "id", "kind", "http", "approval", "notify", "wait", "parallel"]
WORDS += ["branches", "compensate", "on_failure", "when", "url", "inputs.", "steps.", "secrets."]
WORDS += ["1", "-1", "0x1f", "1e9", "yes", "on", "~", "null", "2024-01-01", "1s", "text"]
WORDS += ["\u00e9", "\u2028", "\ufeff"]
YAML_PIECES = st.sampled_from([*PUNCTUATION, *QUOTES_AND_MARKERS, *WORDS])


@PROPERTY
@given(st.lists(YAML_PIECES, max_size=60).map("".join))
def test_yaml_ish_soup(text: str) -> None:
    check(text)


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["http", "notify", "{{ inputs.x }}", "{{ steps.a.output }}", "1s", "U0AAA"])
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["name", "steps", "id", "kind", "text", "url", "when", "inputs", "x"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@PROPERTY
@given(DOCUMENTS)
def test_random_yaml_documents(data: Any) -> None:
    check(yaml.safe_dump(data, allow_unicode=True))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*path, index)))
    return found


def _replace(value: Any, path: tuple[Any, ...], make: Any) -> Any:
    if not path:
        return make(value)
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        copy[head] = _replace(value[head], rest, make)
        return copy
    copy_list = list(value)
    copy_list[head] = _replace(value[head], rest, make)
    return copy_list


REPLACEMENTS = st.sampled_from(
    [
        lambda old: None,
        lambda old: 7,
        lambda old: True,
        lambda old: "\u202e\u0000\U0001f600",
        lambda old: [old, old],
        lambda old: {"nested": old},
        lambda old: str(old) + "{{",
        lambda old: "{{ steps.nowhere.output }}",
        lambda old: [[[[[[[[[[old]]]]]]]]]],
    ]
)


def _rename_or_delete(value: Any, path: tuple[Any, ...], action: str) -> Any:
    def change(parent: Any) -> Any:
        if not isinstance(parent, dict) or not parent:
            return parent
        copy = dict(parent)
        key = next(iter(copy))
        item = copy.pop(key)
        if action == "rename":
            copy[f"{key}x"] = item
        return copy

    return _replace(value, path, change)


@PROPERTY
@given(st.data())
def test_mutated_example_data(data: st.DataObject) -> None:
    document = data.draw(st.sampled_from(EXAMPLE_DATA))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(document)))
        action = data.draw(st.sampled_from(["replace", "rename", "delete"]))
        if action == "replace":
            document = _replace(document, path, data.draw(REPLACEMENTS))
        else:
            document = _rename_or_delete(document, path, action)
    check(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))


@PROPERTY
@given(st.data())
def test_mutated_example_text(data: st.DataObject) -> None:
    lines = data.draw(st.sampled_from(EXAMPLES)).splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["delete", "duplicate", "insert", "indent", "anchor"]))
        if action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "insert":
            at = data.draw(st.integers(0, len(lines[index])))
            noise = data.draw(YAML_PIECES | st.text(max_size=5))
            lines[index] = lines[index][:at] + noise + lines[index][at:]
        elif action == "indent":
            lines[index] = " " * data.draw(st.integers(1, 6)) + lines[index]
        else:
            lines[index] = lines[index].replace(": ", ": &x ", 1)
            lines.insert(index + 1, lines[index].replace("&x", "*x").replace(": *x ", ": *x\n", 1))
        if not lines:
            break
    check("".join(lines))


def test_deep_nesting_of_an_example_is_refused_cleanly() -> None:
    text = EXAMPLES[0].replace("steps:\n", "steps:\n" + "- " * 200, 1)
    assert check(text).flow is None
