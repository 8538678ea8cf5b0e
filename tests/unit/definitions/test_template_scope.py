"""What each template may read: steps that finished, loop variables, section rules."""

from __future__ import annotations

import pytest

from .helpers import HEADER, problems

PARALLEL = """\
steps:
  - {id: first, kind: notify, text: hi}
  - id: both
    kind: parallel
    branches:
      left:
        - {id: l1, kind: notify, text: '{{ steps.first.output }}'}
        - {id: l2, kind: notify, text: '{{ steps.l1.output }} {{ READ }}'}
      right:
        - {id: r1, kind: notify, text: hi}
  - {id: after, kind: notify, text: '{{ steps.l2.output }} {{ steps.r1.state }}'}
"""


def complaints(text: str) -> list[str]:
    """`code: message` of every error, for compact assertions."""
    return [f"{p.code}: {p.message}" for p in problems(HEADER + text) if p.is_error]


def test_parallel_branches_see_earlier_steps_and_their_own_branch() -> None:
    assert complaints(PARALLEL.replace("{{ READ }}", "")) == []


@pytest.mark.parametrize(
    ("read", "why"),
    [
        ("steps.r1.output", "`r1` runs at the same time, in another branch of the same `parallel`"),
        ("steps.l2.output", "a step cannot read its own result"),
        ("steps.both.output", "`both` has not finished at this point"),
        ("steps.after.output", "`after` has not finished at this point"),
    ],
)
def test_branch_steps_cannot_read_what_has_not_finished(read: str, why: str) -> None:
    found = complaints(PARALLEL.replace("READ", read))
    assert len(found) == 1
    assert found[0].startswith("step-not-run-yet: step `l2`: reads")
    assert why in found[0]


def test_compensation_reads_the_step_it_undoes_but_not_later_steps() -> None:
    text = """\
steps:
  - id: reserve
    kind: notify
    text: hi
    compensate:
      - {id: release, kind: notify, text: '{{ steps.reserve.output }} {{ steps.ship.output }}'}
  - {id: ship, kind: notify, text: '{{ steps.release.output }}'}
"""
    assert complaints(text) == [
        "step-not-run-yet: step `release`: reads `steps.ship`, but "
        "`ship` has not finished at this point",
        "step-not-run-yet: step `ship`: reads `steps.release`, but "
        "`release` only runs when undoing, in `compensate`",
    ]


def test_on_failure_reads_any_step_and_outputs_read_the_main_line() -> None:
    text = """\
steps:
  - id: a
    kind: notify
    text: hi
    compensate: [{id: undo, kind: notify, text: x}]
  - {id: b, kind: notify, text: '{{ steps.alert.state }}'}
on_failure:
  - {id: alert, kind: notify, text: '{{ steps.b.state }} {{ steps.undo.state }}'}
outputs:
  done: '{{ steps.b.output }}'
  undone: '{{ steps.undo.output }}'
"""
    assert complaints(text) == [
        "step-not-run-yet: step `b`: reads `steps.alert`, but "
        "`alert` only runs after a failure, in `on_failure`",
        "step-not-run-yet: the flow's `outputs`: reads `steps.undo`, but "
        "`undo` only runs when undoing, in `compensate`",
    ]


def test_loop_variable_is_readable_in_the_step_but_not_in_items_or_when() -> None:
    text = """\
inputs: {regions: {type: list, default: [eu]}}
steps:
  - id: load
    kind: http
    when: "region != 'us'"
    for_each: {items: '{{ region }}', as: region}
    url: https://x.test/
    json: {region: '{{ region }}', position: '{{ index }}'}
"""
    assert complaints(text) == [
        "unknown-name: step `load`: `region` is not defined here",
        "unknown-name: step `load`: `region` is not defined here",
    ]
    fine = text.replace("'{{ region }}', as", "'{{ inputs.regions }}', as").replace(
        "    when: \"region != 'us'\"\n", ""
    )
    assert complaints(fine) == []


def test_schedule_inputs_may_only_read_run() -> None:
    text = """\
inputs: {since: {type: string}, day: {type: string}}
triggers:
  - schedule: "0 2 * * *"
    inputs: {since: '{{ run.started_at }}', day: '{{ inputs.since }}'}
steps:
  - {id: a, kind: notify, text: '{{ inputs.day }}'}
"""
    assert complaints(text) == [
        "unknown-name: the schedule's `inputs`: `inputs` does not exist yet when a schedule "
        "starts a run"
    ]


def test_names_bound_inside_templates_and_jinja_globals_are_fine() -> None:
    text = """\
inputs: {items: {type: list}}
steps:
  - id: a
    kind: notify
    text: >-
      {% set total = inputs['items'] | length %}
      {% for x in inputs['items'] %}{{ x }}{{ loop.index }}{% endfor %}{{ total }}
      {{ range(3) | list }} {{ steps | length }} {{ run.id }}
"""
    assert complaints(text) == []


def test_reading_all_secrets_at_once_is_refused() -> None:
    text = "secrets: [A]\nsteps:\n  - {id: a, kind: notify, text: '{{ secrets }}'}\n"
    assert complaints(text) == [
        "unknown-secret: step `a`: `secrets` can only be read one at a time"
    ]


def test_templates_nested_too_deeply_are_syntax_errors() -> None:
    deep = "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}"
    text = f'steps:\n  - {{id: a, kind: notify, text: "{deep}", when: "{"not " * 3000}true"}}\n'
    assert complaints(text) == [
        "template-syntax: step `a`: template is nested too deeply "
        "(brackets, `not`s or blocks inside each other)",
        "template-syntax: step `a`: template is nested too deeply "
        "(brackets, `not`s or blocks inside each other)",
    ]
