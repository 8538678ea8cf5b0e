"""Reading YAML: positions, and every hostile-file limit reported as a Problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.definitions.loader import load_flow_file, load_flow_text
from bot.definitions.models import MAX_STEPS
from bot.definitions.yaml_source import MAX_BYTES, MAX_DEPTH, Mark, read_yaml

from .helpers import HEADER, only

WAIT = "  - {id: a, kind: wait, duration: 1s}\n"

LAUGHS = """\
a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize(
    ("text", "code", "line", "column", "words"),
    [
        pytest.param(
            HEADER + "steps:\n" + WAIT + "steps: []\n",
            "duplicate-key",
            6,
            1,
            "`steps` appears twice in this mapping (first on line 4)",
            id="duplicate-key",
        ),
        pytest.param(
            HEADER + "1: x\nsteps:\n" + WAIT,
            "non-string-key",
            4,
            1,
            "`1` is a number",
            id="int-key",
        ),
        pytest.param(
            HEADER + "~: x\nsteps:\n" + WAIT, "non-string-key", 4, 1, "`~` is null", id="null-key"
        ),
        pytest.param(
            HEADER + "? [a]\n: x\nsteps:\n" + WAIT,
            "non-string-key",
            4,
            3,
            "not a list or a mapping",
            id="complex-key",
        ),
        pytest.param(
            HEADER + "title: !shout hi\nsteps:\n" + WAIT,
            "yaml-tag",
            4,
            8,
            "`!shout`",
            id="custom-tag",
        ),
        pytest.param(
            HEADER + "title: !!python/object:os.system x\nsteps:\n" + WAIT,
            "yaml-tag",
            4,
            8,
            "`!!python/object:os.system`",
            id="python-tag",
        ),
        pytest.param(
            HEADER + "title: !!binary aGk=\nsteps:\n" + WAIT,
            "yaml-tag",
            4,
            8,
            "`!!binary`",
            id="binary-tag",
        ),
        pytest.param(HEADER + "steps: [\n", "yaml-syntax", 5, 1, "YAML syntax error", id="syntax"),
        pytest.param("name: t\nsteps:\n\t- id: a\n", "yaml-syntax", 3, 1, "'\\t'", id="tab-indent"),
        pytest.param("name: t\ntitle: a\x00b\n", "yaml-syntax", 2, 9, "U+0000", id="control-char"),
        pytest.param(
            HEADER + "steps:\n" + WAIT + "---\nname: u\n",
            "multiple-documents",
            6,
            1,
            "more than one YAML document",
            id="two-documents",
        ),
        pytest.param("", "empty-file", 1, 1, "holds no flow", id="empty"),
        pytest.param("# only a comment\n", "empty-file", 1, 1, "holds no flow", id="comment"),
        pytest.param("a: &a [*a]\n", "recursive-alias", 1, 4, "never ends", id="recursive"),
        pytest.param(
            "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n",
            "too-deep",
            1,
            MAX_DEPTH + 3,
            f"more than {MAX_DEPTH} levels",
            id="deep-text",
        ),
        pytest.param(
            "".join(f"k{i}: &a{i} [{'*a' + str(i - 1) if i else 1}]\n" for i in range(80)),
            "too-deep",
            None,
            None,
            "levels deep",
            id="deep-through-aliases",
        ),
        pytest.param(LAUGHS, "too-many-values", 4, 4, "more than 10,000 values", id="laughs"),
        pytest.param(
            HEADER + "title: 2024-13-45\nsteps:\n" + WAIT,
            "bad-value",
            4,
            8,
            "month must be in 1..12",
            id="bad-date",
        ),
        pytest.param(
            HEADER + "defaults:\n  <<: [1]\nsteps:\n" + WAIT,
            "bad-merge",
            5,
            8,
            "not a mapping",
            id="bad-merge",
        ),
        pytest.param("- a\n- b\n", "not-a-mapping", 1, 1, "must be a mapping", id="list-root"),
        pytest.param(
            "name: t\nsteps:\n"
            + "".join(
                f"  - {{id: s{i}, kind: wait, duration: 1s}}\n" for i in range(MAX_STEPS + 1)
            ),
            "too-many-steps",
            1,
            1,
            f"at most {MAX_STEPS}",
            id="too-many-steps",
        ),
    ],
)
def test_reading_problems(
    text: str, code: str, line: int | None, column: int | None, words: str
) -> None:
    result = load_flow_text(text, file="t.yaml")
    assert result.flow is None
    matching = [problem for problem in result.problems if problem.code == code]
    assert len(matching) == 1, [problem.format() for problem in result.problems]
    problem = matching[0]
    assert words in problem.message
    assert problem.fix
    if line is not None:
        assert (problem.line, problem.column) == (line, column)


def test_billion_laughs_is_refused_without_expanding() -> None:
    document = read_yaml(LAUGHS, file="t.yaml")
    assert document.data is None
    assert [problem.code for problem in document.problems] == ["too-many-values"]


def test_oversize_text_and_file_are_refused_before_parsing(tmp_path: Path) -> None:
    big = "name: t\n" + "# padding\n" * (MAX_BYTES // 10 + 1)
    assert only(big, "file-too-large").line == 1
    path = tmp_path / "big.yaml"
    path.write_text(big, encoding="utf-8")
    result = load_flow_file(path)
    assert [problem.code for problem in result.problems] == ["file-too-large"]


def test_yaml_11_boolean_words_stay_keys() -> None:
    text = (
        HEADER
        + "steps:\n"
        + "  - id: a\n"
        + "    kind: http\n"
        + "    url: https://example.com\n"
        + "    retry:\n"
        + "      on: [5xx, 503]\n"
    )
    result = load_flow_text(text, file="t.yaml")
    assert result.problems == []
    assert result.flow is not None


def test_merge_keys_are_expanded_and_explicit_keys_win() -> None:
    text = (
        HEADER
        + "x-retry: &retry {attempts: 5, backoff: 2s}\n"
        + "defaults:\n  retry:\n    <<: *retry\n    attempts: 2\n"
        + "steps:\n"
        + WAIT
    )
    result = load_flow_text(text, file="t.yaml")
    assert [problem.code for problem in result.problems] == ["unknown-key"]
    document = read_yaml(text, file="t.yaml")
    assert document.data["defaults"]["retry"] == {"attempts": 2, "backoff": "2s"}
    assert document.source.locate(("defaults", "retry", "attempts")) == Mark(8, 5)
    assert document.source.locate(("defaults", "retry", "backoff")) == Mark(4, 31)


def test_positions_of_keys_values_and_items() -> None:
    text = "name: t\nsteps:\n  - id: a\n    text: |\n      line one\n      {{ bad }\n"
    source = read_yaml(text, file="t.yaml").source
    assert source.locate(("steps", 0)) == Mark(3, 5)
    assert source.locate(("steps", 0, "text")) == Mark(4, 5)
    assert source.locate(("steps", 0, "text"), value=True) == Mark(4, 11)
    assert source.template_mark(("steps", 0, "text"), 2) == Mark(6, 7)
    assert source.locate(("steps", 0, "missing", 3)) == Mark(3, 5)
    assert source.locate(("nowhere",)) == Mark(1, 1)


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    assert [p.code for p in load_flow_file(tmp_path / "absent.yaml").problems] == [
        "unreadable-file"
    ]
    assert [p.code for p in load_flow_file(tmp_path).problems] == ["unreadable-file"]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: t\ntitle: caf\xe9\n")
    problem = load_flow_file(latin).problems[0]
    assert (problem.code, problem.line, problem.column) == ("not-utf8", 2, 11)


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "steps:\n" + WAIT).encode())
    result = load_flow_file(path)
    assert result.problems == []
    assert result.flow is not None
