"""Model validation errors, rewritten for flow authors and pinned to the YAML."""

from __future__ import annotations

import pytest

from .helpers import HEADER, problems

WAIT = "  - {id: a, kind: wait, duration: 1s}\n"


def step(*lines: str) -> str:
    """A flow whose only step is ``lines`` (each a `key: value` of the step)."""
    body = "".join(f"    {line}\n" for line in lines)
    return HEADER + "steps:\n  - id: a\n" + body


@pytest.mark.parametrize(
    ("text", "code", "line", "column", "message", "fix"),
    [
        pytest.param(
            HEADER + "stepz: []\nsteps:\n" + WAIT,
            "unknown-key",
            4,
            1,
            "unknown key `stepz`: did you mean `steps`?",
            "rename it to `steps`",
            id="unknown-top-level-key",
        ),
        pytest.param(
            step("kind: http", "url: https://example.com", "methd: GET"),
            "unknown-key",
            8,
            5,
            "unknown key `methd` in step `a`: did you mean `method`?",
            "rename it to `method`",
            id="unknown-step-key",
        ),
        pytest.param(
            step("kind: wait", "duration: 1s", "zzz: 1"),
            "unknown-key",
            8,
            5,
            "unknown key `zzz` in step `a`",
            "the keys allowed here are `id`, `title`, `when`",
            id="unknown-key-lists-allowed",
        ),
        pytest.param(
            HEADER
            + "steps:\n  - id: p\n    kind: parallel\n    branches:\n"
            + "      x: [{id: b, kind: notify, text: hi, txt: 1}]\n"
            + "      y: [{id: c, kind: notify, text: hi}]\n",
            "unknown-key",
            8,
            43,
            "unknown key `txt` in step `b`: did you mean `text`?",
            "rename it to `text`",
            id="unknown-key-in-branch",
        ),
        pytest.param(
            step("kind: htp"),
            "unknown-step-kind",
            6,
            5,
            "unknown step kind `htp`: did you mean `http`?",
            "use one of `http`, `approval`, `notify`, `wait`, `flow`, `parallel`",
            id="unknown-kind",
        ),
        pytest.param(
            step("text: hi"),
            "missing-step-kind",
            5,
            5,
            "this step needs `kind:` (one of `http`, `approval`",
            "add a `kind:` line",
            id="missing-kind",
        ),
        pytest.param(
            step("kind: notify"),
            "missing-key",
            5,
            5,
            "missing `text` in step `a`",
            "add `text:` here",
            id="missing-step-field",
        ),
        pytest.param(
            HEADER,
            "missing-key",
            1,
            1,
            "missing `steps`",
            "add `steps:` here",
            id="missing-steps",
        ),
        pytest.param(
            step("kind: http", "url: https://example.com", "retry: {attempts: abc}"),
            "wrong-type",
            8,
            13,
            "`attempts`: expected a whole number, got 'abc'",
            "write a whole number here",
            id="int-expected",
        ),
        pytest.param(
            step("kind: wait", "duration: 1s", "when: false"),
            "wrong-type",
            8,
            5,
            "`when`: expected text, got false",
            'quote the value so YAML keeps it as text: "false"',
            id="bool-for-text",
        ),
        pytest.param(
            step("kind: http", "url: https://example.com", "method: GTE"),
            "wrong-type",
            8,
            5,
            "`method`: expected one of 'GET', 'HEAD', 'POST', 'PUT', 'PATCH' or 'DELETE', "
            "got 'GTE': did you mean `GET`?",
            "write `GET`",
            id="choice-did-you-mean",
        ),
        pytest.param(
            HEADER + "inputs:\n  n: {type: text}\nsteps:\n" + WAIT,
            "wrong-type",
            5,
            7,
            "`type`: expected one of 'string', 'integer'",
            "write one of",
            id="enum",
        ),
        pytest.param(
            step("kind: notify", "text: hi", "for_each: {items: 5}"),
            "wrong-type",
            8,
            16,
            "`items`: expected text or a list, got 5",
            'quote the value so YAML keeps it as text: "5"',
            id="union-merged",
        ),
        pytest.param(
            step("kind: http", "url: https://example.com", "for_each: {items: x, as: 3}"),
            "wrong-type",
            8,
            26,
            "`as`: expected text, got 3",
            "quote the value",
            id="alias-as",
        ),
        pytest.param(
            step("kind: http", "url: https://example.com", "retry: {on: [never]}"),
            "wrong-type",
            8,
            18,
            "item 1 of `on`: expected one of 'connection', 'timeout', '5xx' or '429' "
            "or a whole number, got 'never'",
            "write one of",
            id="retry-reason",
        ),
        pytest.param(
            step("kind: http", "url: https://example.com", "retry: {on: [42]}"),
            "invalid-value",
            8,
            18,
            "item 1 of `on`: must be 'connection', 'timeout', '5xx' or '429' or must be "
            "greater than or equal to 100, got 42",
            "change item 1 of `on` to fit",
            id="retry-status-range",
        ),
        pytest.param(
            step("kind: http", "url: https://example.com", "retry: {attempts: 0}"),
            "invalid-value",
            8,
            13,
            "`attempts`: must be greater than or equal to 1, got 0",
            "change `attempts` to fit",
            id="constraint",
        ),
        pytest.param(
            step("kind: approval", "question: ok?", "approvers: {users: [U1]}"),
            "invalid-value",
            8,
            25,
            "'U1' is not a valid Slack user id",
            "write it like U0123ABCD",
            id="user-id",
        ),
        pytest.param(
            step("kind: wait", "duration: soon"),
            "invalid-value",
            7,
            5,
            "'soon' is not a duration",
            "write a duration like 30s, 5m, 1h30m or 2d",
            id="duration",
        ),
        pytest.param(
            HEADER + "triggers: [{schedule: every night}]\nsteps:\n" + WAIT,
            "invalid-value",
            4,
            13,
            "'every night' is not a cron string",
            "write five fields",
            id="cron",
        ),
        pytest.param(
            step("kind: http", "url: https://example.com", "json: {a: 1}", "form: {b: c}"),
            "invalid-value",
            5,
            5,
            "send either `json` or `form`, not both",
            "docs/flows.md",
            id="model-validator-no-prefix",
        ),
        pytest.param(
            HEADER + "inputs:\n  1x: {}\nsteps:\n" + WAIT,
            "invalid-value",
            5,
            3,
            "'1x' is not a valid name",
            "write it like order_id",
            id="bad-dict-key",
        ),
        pytest.param(
            HEADER + "inputs:\n  size: {type: choice}\nsteps:\n" + WAIT,
            "invalid-value",
            5,
            3,
            "a choice input needs `choices`",
            "docs/flows.md",
            id="input-consistency",
        ),
        pytest.param(
            HEADER + "steps: []\n",
            "invalid-value",
            4,
            1,
            "`steps`: needs at least 1 item",
            "change `steps` to fit",
            id="too-short",
        ),
        pytest.param(
            "version: 2\n" + HEADER + "steps:\n" + WAIT,
            "wrong-type",
            1,
            1,
            "`version`: expected one of 1, got 2",
            "write one of 1 here",
            id="version",
        ),
        pytest.param(
            HEADER + "steps:\n  - just a string\n",
            "wrong-type",
            5,
            5,
            "item 1 of `steps`: expected a mapping (`key: value` lines), got 'just a string'",
            "write a mapping",
            id="step-not-mapping",
        ),
    ],
)
def test_validation_problem(
    text: str, code: str, line: int, column: int, message: str, fix: str
) -> None:
    found = problems(text)
    matching = [problem for problem in found if problem.code == code]
    assert len(matching) == 1, [problem.format() for problem in found]
    problem = matching[0]
    assert message in problem.message
    assert fix in problem.fix
    assert (problem.line, problem.column) == (line, column), problem.format()
    assert problem.severity == "error"
    assert not problem.message.startswith("Value error")


def test_all_errors_of_a_file_are_reported_at_once() -> None:
    text = HEADER + "stepz: 1\nsteps:\n  - {id: a, kind: htp}\n  - {id: b, kind: notify}\n"
    assert sorted(problem.code for problem in problems(text)) == [
        "missing-key",
        "unknown-key",
        "unknown-step-kind",
    ]
