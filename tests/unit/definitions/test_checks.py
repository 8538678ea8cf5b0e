"""Cross-field checks: one table row per problem code, plus edge cases per check."""

from __future__ import annotations

import pytest

from bot.definitions.checks import CHECKS

from .helpers import HEADER, load, only

NOTE = "  - {id: note, kind: notify, text: hi}\n"


def flow(body: str, *, header: str = HEADER) -> str:
    return header + body


@pytest.mark.parametrize(
    ("text", "code", "line", "column", "message", "severity"),
    [
        pytest.param(
            flow("steps:\n" + NOTE + NOTE),
            "duplicate-step-id",
            6,
            6,
            "the step id `note` is already used on line 5",
            "error",
            id="duplicate-step-id",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: a\n    kind: notify\n    text: hi\n    compensate:\n"
                "      - {id: note, kind: notify, text: undo}\non_failure:\n" + NOTE
            ),
            "duplicate-step-id",
            11,
            6,
            "already used on line 9",
            "error",
            id="duplicate-across-sections",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: notify, text: '{{ inputs.x '}\n"),
            "template-syntax",
            5,
            33,
            "step `a`: template syntax error",
            "error",
            id="template-syntax",
        ),
        pytest.param(
            flow("steps:\n  - id: a\n    kind: notify\n    text: |\n      ok\n      {% if %}\n"),
            "template-syntax",
            9,
            7,
            "template syntax error",
            "error",
            id="template-syntax-line-in-block",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: notify, text: hi, when: 'inputs.x >'}\n"),
            "template-syntax",
            5,
            43,
            "expression syntax error",
            "error",
            id="when-syntax",
        ),
        pytest.param(
            flow(
                "inputs: {order_id: {type: integer}}\nsteps:\n"
                "  - {id: a, kind: notify, text: '{{ inputs.order }}'}\n"
            ),
            "unknown-input",
            6,
            33,
            "`inputs.order` is not an input of this flow: did you mean `order_id`?",
            "error",
            id="unknown-input",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: notify, text: '{{ steps.nope.output }}'}\n"),
            "unknown-step",
            5,
            33,
            "there is no step `nope`",
            "error",
            id="unknown-step",
        ),
        pytest.param(
            flow(
                "steps:\n  - {id: a, kind: notify, text: '{{ steps.b.output }}'}\n"
                "  - {id: b, kind: notify, text: hi}\n"
            ),
            "step-not-run-yet",
            5,
            33,
            "`b` has not finished at this point",
            "error",
            id="later-step",
        ),
        pytest.param(
            flow(
                "steps:\n  - {id: a, kind: notify, text: hi}\n"
                "  - {id: b, kind: notify, text: '{{ steps.a.result }}'}\n"
            ),
            "unknown-step-attribute",
            6,
            33,
            "`steps.a.result` does not exist",
            "error",
            id="step-attribute",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: notify, text: '{{ nonsense }}'}\n"),
            "unknown-name",
            5,
            33,
            "`nonsense` is not defined here",
            "error",
            id="free-name",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: notify, text: '{{ run.user }}'}\n"),
            "unknown-name",
            5,
            33,
            "`run.user` does not exist",
            "error",
            id="run-field",
        ),
        pytest.param(
            flow(
                "secrets: [TOKEN]\nsteps:\n  - {id: a, kind: notify, text: '{{ secrets.TOKN }}'}\n"
            ),
            "unknown-secret",
            6,
            33,
            "`secrets.TOKN` is not listed in `secrets:`: did you mean `TOKEN`?",
            "error",
            id="unknown-secret",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: http, url: 'https://{{ inputs.host }}/x'}\n"),
            "templated-url-origin",
            5,
            30,
            "the scheme and host of `https://{{ inputs.host }}/x` come from a template",
            "error",
            id="templated-origin",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: http, url: 'ftp://example.com/x'}\n"),
            "bad-url",
            5,
            30,
            "is not an http or https URL",
            "error",
            id="scheme",
        ),
        pytest.param(
            flow("services: {api: {url: 'https://'}}\nsteps:\n" + NOTE),
            "bad-url",
            4,
            23,
            "has no host",
            "error",
            id="no-host",
        ),
        pytest.param(
            flow(
                "services: {api: {env: API_URL}}\nsteps:\n"
                "  - {id: a, kind: http, service: apj, path: /x}\n"
            ),
            "unknown-service",
            6,
            34,
            "calls the service `apj`, which is not declared: did you mean `api`?",
            "error",
            id="unknown-service",
        ),
        pytest.param(
            flow(
                "secrets: [KEY]\nsteps:\n"
                "  - {id: a, kind: http, url: 'https://x.test/', query: {k: '{{ secrets.KEY }}'}}\n"
            ),
            "secret-in-url",
            6,
            60,
            "puts a secret in its URL",
            "error",
            id="secret-in-url",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: a\n    kind: http\n    url: https://x.test/\n"
                '    headers: {X-Note: "a\\r\\nHost: evil"}\n'
            ),
            "header-newline",
            8,
            15,
            "the header `X-Note` contains a line break",
            "error",
            id="header-newline",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: a\n    kind: http\n    url: https://x.test/\n"
                "    headers: {X-Api-Key: hunter2}\n"
            ),
            "literal-credential",
            8,
            15,
            "the header `X-Api-Key` holds a credential written into the file",
            "error",
            id="literal-credential",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: http, url: 'https://user:pw@x.test/'}\n"),
            "literal-credential",
            5,
            30,
            "the URL carries a password",
            "error",
            id="password-in-url",
        ),
        pytest.param(
            flow("steps:\n" + NOTE + "# token: xoxb-1234567890-abcdefghijkl\n"),
            "pasted-token",
            6,
            10,
            "this looks like a Slack token pasted into the file",
            "error",
            id="pasted-token",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: a\n    kind: approval\n    question: ok?\n"
                "    approvers: {users: [U0AAA, U0BBB]}\n    required: 3\n"
            ),
            "approval-impossible",
            9,
            5,
            "step `a` needs 3 approvals but lists only 2 approvers",
            "error",
            id="approval-impossible",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: a\n    kind: approval\n    question: ok?\n"
                "    quorum: [{users: [U0AAA], required: 2}, {group: S0LEGAL, required: 5}]\n"
            ),
            "approval-impossible",
            8,
            31,
            "a quorum of step `a` needs 2 approvals but lists only 1 user",
            "error",
            id="quorum-impossible",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: a\n    kind: approval\n    question: ok?\n"
                "    approvers: {groups: [S0OPS]}\n    timeout: 1h\n    on_timeout: escalate\n"
                "    escalate: {approvers: {users: [U0BOSS]}, required: 2}\n"
            ),
            "approval-impossible",
            11,
            46,
            "needs 2 approvals but lists only 1 approver",
            "error",
            id="escalation-impossible",
        ),
        pytest.param(
            flow(
                "steps:\n" + NOTE + "  - id: b\n    kind: approval\n    question: ok?\n"
                "    approvers: {groups: [S0OPS]}\n    exclude_approvers_of: [note]\n"
            ),
            "exclude-not-approval",
            10,
            28,
            "names `note`, which is not an approval step",
            "error",
            id="exclude-not-approval",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: b\n    kind: approval\n    question: ok?\n"
                "    approvers: {groups: [S0OPS]}\n    exclude_approvers_of: [first]\n"
            ),
            "unknown-step",
            9,
            28,
            "names `first`, which is not a step",
            "error",
            id="exclude-unknown",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: first\n    kind: approval\n    question: ok?\n"
                "    approvers: {users: [U0AAA, U0BBB]}\n    required: 1\n"
                "  - id: second\n    kind: approval\n    question: really?\n"
                "    approvers: {users: [U0AAA, U0BBB]}\n    required: 2\n"
                "    exclude_approvers_of: [first]\n"
            ),
            "exclusion-impossible",
            14,
            5,
            "needs 2 approvals from people who did not approve `first`, but at most 1",
            "error",
            id="exclusion-impossible",
        ),
        pytest.param(
            flow(
                "inputs: {amount: {type: number}}\nsteps:\n  - id: a\n    kind: approval\n"
                "    question: ok?\n    approvers: {groups: [S0OPS]}\n    show_inputs: [amont]\n"
            ),
            "unknown-input",
            10,
            19,
            "`show_inputs` names `amont`, which is not an input of this flow: "
            "did you mean `amount`?",
            "error",
            id="show-inputs",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: a\n    kind: approval\n    question: ok?\n"
                "    approvers: {groups: [S0OPS]}\n"
                "    fields: [{id: ticket, label: Ticket}, {id: ticket, label: Again}]\n"
            ),
            "duplicate-field-id",
            9,
            44,
            "two fields with the id `ticket`",
            "error",
            id="duplicate-field",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: notify, text: hi, when: '1 > 2'}\n"),
            "when-always-false",
            5,
            37,
            "always false, so the step can never run",
            "error",
            id="when-false",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: notify, text: hi, when: '{{ true or false }}'}\n"),
            "when-always-true",
            5,
            37,
            "the `when:` of step `a` is always true",
            "warning",
            id="when-true",
        ),
        pytest.param(
            flow(
                "steps:\n" + NOTE + "on_failure:\n  - id: b\n    kind: notify\n    text: x\n"
                "    compensate: [{id: c, kind: notify, text: y}]\n"
            ),
            "unused-compensate",
            10,
            5,
            "step `b` runs during failure handling, so its `compensate` never runs",
            "warning",
            id="unused-compensate",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: flow, flow: t}\n"),
            "flow-cycle",
            5,
            25,
            "step `a` runs the flow `t` itself",
            "error",
            id="self-call",
        ),
        pytest.param(
            flow("steps:\n  - {id: a, kind: http, url: 'https://x.test/', timeout: 0s}\n"),
            "zero-duration",
            5,
            49,
            "`timeout` is zero",
            "error",
            id="zero-timeout",
        ),
        pytest.param(
            flow("defaults: {timeout: 0}\nsteps:\n" + NOTE),
            "zero-duration",
            4,
            12,
            "`timeout` is zero",
            "error",
            id="zero-default-timeout",
        ),
        pytest.param(
            flow(
                "steps:\n  - id: a\n    kind: approval\n    question: ok?\n"
                "    approvers: {groups: [S0OPS]}\n    timeout: 1h\n    remind_every: 1h\n"
            ),
            "remind-after-timeout",
            10,
            5,
            "`remind_every` (1h) is not shorter than `timeout` (1h)",
            "error",
            id="remind-after-timeout",
        ),
        pytest.param(
            flow("defaults: {retry: {backoff: 10m}}\nsteps:\n" + NOTE),
            "backoff-over-max",
            4,
            20,
            "`backoff` (10m) is longer than `max_backoff` (5m)",
            "error",
            id="backoff-over-max",
        ),
        pytest.param(
            flow(
                "inputs: {day: {type: string}}\ntriggers: [{schedule: '0 2 * * *'}]\nsteps:\n"
                + NOTE
            ),
            "missing-input",
            5,
            12,
            "the schedule `0 2 * * *` does not give the required input `day`",
            "error",
            id="schedule-missing-input",
        ),
        pytest.param(
            flow("triggers: [{schedule: '0 2 * * *', inputs: {dya: x}}]\nsteps:\n" + NOTE),
            "unknown-input",
            4,
            45,
            "the schedule gives `dya`, which is not an input of this flow",
            "error",
            id="schedule-unknown-input",
        ),
        pytest.param(
            flow(
                "inputs: {n: {type: integer}}\n"
                "triggers: [{schedule: '0 2 * * *', inputs: {n: many}}]\nsteps:\n" + NOTE
            ),
            "bad-input-value",
            5,
            45,
            "the schedule's value for `n` does not fit the input: expected a whole number",
            "error",
            id="schedule-bad-value",
        ),
        pytest.param(
            "name: t\nsteps:\n" + NOTE,
            "no-run-permission",
            1,
            1,
            "anyone in the workspace may run this flow",
            "warning",
            id="no-permissions",
        ),
        pytest.param(
            "name: t\npermissions: {operate: {users: [U0AAA]}}\nsteps:\n" + NOTE,
            "no-run-permission",
            2,
            1,
            "anyone in the workspace may run this flow",
            "warning",
            id="no-run-audience",
        ),
        pytest.param(
            "name: t\npermissions: {run: {}}\nsteps:\n" + NOTE,
            "empty-audience",
            2,
            15,
            "`permissions.run` lists nobody",
            "error",
            id="empty-audience",
        ),
        pytest.param(
            flow("inputs: {n: {type: integer, min: 1, default: 0}}\nsteps:\n" + NOTE),
            "bad-default",
            4,
            37,
            "the default of `n` does not fit the input: 0 is less than the minimum 1",
            "error",
            id="bad-default",
        ),
        pytest.param(
            flow(
                "inputs: {env: {type: choice, choices: [staging, prod], default: production}}\n"
                "steps:\n" + NOTE
            ),
            "bad-default",
            4,
            56,
            "'production' is not one of staging, prod",
            "error",
            id="bad-choice-default",
        ),
    ],
)
def test_check_problem(
    text: str,
    code: str,
    line: int,
    column: int,
    message: str,
    severity: str,
) -> None:
    problem = only(text, code)
    assert message in problem.message
    assert (problem.line, problem.column) == (line, column), problem.format()
    assert problem.severity == severity
    assert problem.fix
    result = load(text)
    assert (result.flow is None) == (severity == "error")


def test_every_check_is_registered_once() -> None:
    assert len(set(CHECKS)) == len(CHECKS)
