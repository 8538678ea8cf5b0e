"""Every modal and Home view rendered from real run rows, checked against Slack's limits."""

from __future__ import annotations

import json
from typing import Any

from bot.definitions.models import FlowDef
from bot.engine.states import Decision
from bot.slack import views
from tests.fakeslack.validation import view_problems
from tests.unit.engine.harness import definition, world
from tests.unit.slack.samples import APPROVAL, EVIL, no_raw_markup, started_approval, view_of


def valid_view(view: Any, kind: str) -> dict[str, Any]:
    data: dict[str, Any] = view.to_dict()
    assert view_problems(data, kinds=(kind,)) == []
    return data


# ---------------------------------------------------------------- approval forms and Home


def test_decision_modal_requires_a_reason_to_reject_only() -> None:
    w, run = started_approval()
    view = view_of(w, run)
    reject = valid_view(views.decision_modal(view, "ok", approve=False), "modal")
    approve = valid_view(views.decision_modal(view, "ok", approve=True), "modal")
    assert reject["callback_id"] == approve["callback_id"] == views.DECISION_MODAL
    assert json.loads(reject["private_metadata"]) == {"run": run, "step": "ok", "approve": False}
    inputs = {b["block_id"]: b for b in reject["blocks"] if b["type"] == "input"}
    assert list(inputs) == ["reason"] and inputs["reason"]["optional"] is False
    assert inputs["reason"]["element"]["multiline"] is True
    inputs = {b["block_id"]: b for b in approve["blocks"] if b["type"] == "input"}
    assert list(inputs) == ["reason", "field:ticket", "field:notes"]
    assert inputs["reason"]["optional"] is True
    assert inputs["field:ticket"]["element"]["type"] == "number_input"
    assert inputs["field:ticket"]["element"]["is_decimal_allowed"] is False
    assert inputs["field:ticket"]["optional"] is False
    assert inputs["field:notes"]["element"]["multiline"] is True
    assert inputs["field:notes"]["optional"] is True
    assert all(b["element"]["action_id"] == views.VALUE_ACTION for b in inputs.values())
    no_raw_markup(json.dumps(reject))


def test_decision_modal_for_an_unknown_or_decided_step_cannot_submit() -> None:
    w, run = started_approval()
    data = valid_view(views.decision_modal(view_of(w, run), "after", approve=True), "modal")
    assert "submit" not in data
    w.vote(run, "ok", "U0A", Decision.REJECTED, reason="no")
    data = valid_view(views.decision_modal(view_of(w, run), "ok", approve=True), "modal")
    assert "submit" not in data and "no longer waiting" in json.dumps(data)


def test_home_stays_within_limits() -> None:
    w = world(APPROVAL)
    items = []
    for _ in range(60):
        run = w.start("spend", {"amount": 1, "memo": EVIL, "key": "k"})
        items.append((view_of(w, run), "ok"))
    runs = [w.run(run_id) for run_id in w.snapshots] * 5
    home = valid_view(
        views.home_view(user="U0ME", approvals=items, recent=runs, failed=runs, now=w.now), "home"
    )
    assert len(home["blocks"]) <= 100
    no_raw_markup(json.dumps(home))
    empty = valid_view(
        views.home_view(user="U0ME", approvals=[], recent=[], failed=[], now=w.now), "home"
    )
    assert "Nothing is waiting" in json.dumps(empty)


# ---------------------------------------------------------------- run modal

FORM = """
name: every-input-type-in-one-very-long-flow-name
description: "Try <!channel>"
inputs:
  text: {type: string, label: "Your text", min_length: 2, max_length: 10, description: Say it}
  count: {type: integer, min: 1.5, max: 9}
  ratio: {type: number, min: 0, max: 1, default: 0.5}
  flag: {type: boolean, default: false}
  pick: {type: choice, choices: [red, 2]}
  many: {type: list, default: [eu, us]}
  secret: {type: string, secret: true, default: hidden}
steps:
  - {id: s, kind: notify, text: hi}
"""


def test_run_modal_has_one_widget_per_input() -> None:
    flow = definition(FORM).flow
    view = views.run_modal(flow, given={"count": "4", "pick": "2", "nope": "x"}, channel="C1")
    data = valid_view(view, "modal")
    assert data["callback_id"] == views.RUN_MODAL
    assert len(data["title"]["text"]) <= 24 and data["submit"]["text"] == "Run"
    assert json.loads(data["private_metadata"]) == {"flow": flow.name, "channel": "C1"}
    inputs = {b["block_id"]: b for b in data["blocks"] if b["type"] == "input"}
    assert list(inputs) == list(flow.inputs)
    kinds = {name: b["element"]["type"] for name, b in inputs.items()}
    assert kinds == {
        "text": "plain_text_input",
        "count": "number_input",
        "ratio": "number_input",
        "flag": "static_select",
        "pick": "static_select",
        "many": "plain_text_input",
        "secret": "plain_text_input",
    }
    text, count, ratio = inputs["text"], inputs["count"]["element"], inputs["ratio"]["element"]
    assert text["label"]["text"] == "Your text" and text["hint"]["text"] == "Say it"
    assert text["element"]["min_length"] == 2 and text["element"]["max_length"] == 10
    assert text["optional"] is False and inputs["ratio"]["optional"] is True
    assert count["is_decimal_allowed"] is False and count["initial_value"] == "4"
    assert (count["min_value"], count["max_value"]) == ("2", "9")
    assert ratio["is_decimal_allowed"] is True and ratio["initial_value"] == "0.5"
    assert inputs["flag"]["element"]["initial_option"]["value"] == "false"
    assert inputs["pick"]["element"]["initial_option"]["value"] == "2"
    assert inputs["many"]["element"]["initial_value"] == "eu, us"
    assert "initial_value" not in inputs["secret"]["element"]
    assert all(b["element"]["action_id"] == views.VALUE_ACTION for b in inputs.values())
    dump = json.dumps(data)
    assert "`nope`" in dump
    no_raw_markup(dump)


def test_run_modal_falls_back_to_text_for_unlistable_choices() -> None:
    flow = FlowDef.model_validate(
        {
            "name": "wide",
            "inputs": {
                "pick": {"type": "choice", "choices": [f"c{i}" for i in range(150)]},
                **{f"i{n}": {"type": "integer"} for n in range(120)},
            },
            "steps": [{"id": "s", "kind": "notify", "text": "x"}],
        }
    )
    data = valid_view(views.run_modal(flow, given={"pick": "c3"}, channel=None), "modal")
    assert len(data["blocks"]) <= 100
    first = data["blocks"][0]
    assert first["element"]["type"] == "plain_text_input"
    assert first["element"]["initial_value"] == "c3"
    assert "more inputs" in json.dumps(data["blocks"][-1])


def test_run_modal_without_inputs_can_still_start_the_run() -> None:
    flow = FlowDef.model_validate(
        {"name": "bare", "steps": [{"id": "s", "kind": "notify", "text": "x"}]}
    )
    data = valid_view(views.run_modal(flow, given={}, channel=None), "modal")
    assert data["submit"]["text"] == "Run" and "no inputs" in json.dumps(data)
