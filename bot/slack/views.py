"""Every modal and Home view Relay opens or publishes, built from ``slack_sdk`` models.

Views are not messages: Slack allows them 100 blocks and a 24-character
title, they carry ``private_metadata`` back to the handler, and their input
widgets return values that ``payloads.submission`` reads by block id (each
widget's action id is ``VALUE_ACTION``). Like ``blocks.py`` they are pure
functions of rows and the time, built from the same blocks, so the Home tab's
approvals look exactly like ``/relay approvals``. This module may import
``blocks`` and ``text``; neither imports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    DividerBlock,
    InputBlock,
    InputInteractiveElement,
    NumberInputElement,
    Option,
    PlainTextInputElement,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.definitions.inputs import coerce_value
from bot.definitions.models import FieldType, FlowDef, FormField, InputDef, InputType
from bot.engine.ports import RunView
from bot.engine.records import Run
from bot.slack.blocks import context, header, run_lines, section, waiting_blocks
from bot.slack.text import approval_of, clip, code, date, escape, person, plain, question_of

RUN_MODAL = "relay_run"
DECISION_MODAL = "relay_decision"
VALUE_ACTION = "value"

MAX_VIEW_BLOCKS = 100
HOME_ITEMS = 25
TITLE = 24
LABEL = 2_000
OPTION_TEXT = 75
OPTION_VALUE = 150
MAX_OPTIONS = 100
TEXT_INPUT = 3_000
"""Longest value a plain_text_input accepts."""
REASON = 2_000


def _modal(
    title: str,
    *,
    callback_id: str,
    blocks: list[Block],
    metadata: dict[str, Any],
    submit: str | None,
) -> View:
    return View(
        type="modal",
        callback_id=callback_id,
        title=clip(title, TITLE),
        submit=clip(submit, TITLE) if submit else None,
        close="Cancel" if submit else "Close",
        private_metadata=json.dumps(metadata),
        blocks=blocks,
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _typed(spec: InputDef, text: str | None) -> Any:
    """The value as the flow would take it, or None when it would be refused."""
    if text is None:
        return None
    try:
        return coerce_value(spec, text)
    except ValueError:
        return None


def _default_text(spec: InputDef) -> str | None:
    # A secret's default is not shown: leaving the field empty uses it anyway.
    return None if spec.default is None or spec.secret else plain(spec.default)


def _select(options: list[Option], initial: str | None) -> StaticSelectElement:
    chosen = next((option for option in options if option.value == initial), None)
    return StaticSelectElement(
        action_id=VALUE_ACTION, placeholder="Choose", options=options, initial_option=chosen
    )


def _selectable(choices: Sequence[str | int]) -> bool:
    """Whether every choice fits an option's value, so the menu returns it unchanged."""
    values = [str(choice) for choice in choices]
    return (
        0 < len(values) <= MAX_OPTIONS
        and len(set(values)) == len(values)
        and all(0 < len(value) <= OPTION_VALUE for value in values)
    )


def _input_element(spec: InputDef, initial: str | None) -> InputInteractiveElement:
    """The widget for one input type; values come back as text ``coerce_inputs`` reads."""
    if spec.type in (InputType.INTEGER, InputType.NUMBER):
        decimal = spec.type is InputType.NUMBER
        value = _typed(spec, initial)
        low, high = spec.min, spec.max
        if not decimal:
            low = None if low is None else float(math.ceil(low))
            high = None if high is None else float(math.floor(high))
        return NumberInputElement(
            action_id=VALUE_ACTION,
            is_decimal_allowed=decimal,
            initial_value=None if value is None else _number(value),
            min_value=None if low is None else _number(low),
            max_value=None if high is None else _number(high),
        )
    if spec.type is InputType.BOOLEAN:
        value = _typed(spec, initial)
        options = [Option(value="true", text="Yes"), Option(value="false", text="No")]
        return _select(options, None if value is None else str(value).lower())
    if spec.type is InputType.CHOICE and _selectable(spec.choices):
        value = _typed(spec, initial)
        options = [Option(value=str(c), text=clip(str(c), OPTION_TEXT)) for c in spec.choices]
        return _select(options, None if value is None else str(value))
    limits = spec.type is InputType.STRING
    most = min(spec.max_length or TEXT_INPUT, TEXT_INPUT) if limits else TEXT_INPUT
    least = min(spec.min_length, most) if limits and spec.min_length else None
    fits = initial is not None and len(initial) <= most
    return PlainTextInputElement(
        action_id=VALUE_ACTION,
        initial_value=initial if fits else None,
        min_length=least,
        max_length=most,
        placeholder="a, b, c" if spec.type is InputType.LIST else None,
    )


def _hint(spec: InputDef) -> str | None:
    parts = [spec.description] if spec.description else []
    if spec.type is InputType.LIST:
        parts.append("Separate items with commas.")
    if spec.type is InputType.CHOICE and not _selectable(spec.choices):
        parts.append("One of: " + ", ".join(str(choice) for choice in spec.choices))
    if spec.pattern:
        parts.append(f"Must match {spec.pattern}")
    return clip(" ".join(parts), LABEL) if parts else None


def run_modal(flow: FlowDef, *, given: Mapping[str, str], channel: str | None) -> View:
    """The start-a-run form: one input per flow input, filled with what the user typed."""
    blocks: list[Block] = []
    if flow.description:
        blocks.append(section(escape(flow.description)))
    inputs = list(flow.inputs.items())
    room = MAX_VIEW_BLOCKS - len(blocks) - 2
    for name, spec in inputs[:room]:
        initial = given[name] if name in given else _default_text(spec)
        blocks.append(
            InputBlock(
                block_id=name,
                label=clip(spec.label or name, LABEL),
                element=_input_element(spec, initial),
                optional=not spec.is_required,
                hint=_hint(spec),
            )
        )
    notes = []
    if len(inputs) > room:
        notes.append(
            f"{len(inputs) - room} more inputs: give them as `/relay run {flow.name} name=value`."
        )
    unknown = [name for name in given if name not in flow.inputs]
    if unknown:
        notes.append("Not inputs of this flow, left out: " + ", ".join(code(n) for n in unknown))
    if not inputs:
        notes.append("This flow takes no inputs.")
    if notes:
        blocks.append(context(" ".join(notes)))
    return _modal(
        f"Run {flow.name}",
        callback_id=RUN_MODAL,
        blocks=blocks,
        metadata={"flow": flow.name, "channel": channel},
        submit="Run",
    )


def _field_element(spec: FormField) -> InputInteractiveElement:
    if spec.type in (FieldType.INTEGER, FieldType.NUMBER):
        return NumberInputElement(
            action_id=VALUE_ACTION, is_decimal_allowed=spec.type is FieldType.NUMBER
        )
    return PlainTextInputElement(
        action_id=VALUE_ACTION, multiline=spec.type is FieldType.TEXT, max_length=TEXT_INPUT
    )


def decision_modal(view: RunView, step_key: str, *, approve: bool) -> View:
    """The approve/reject form: the question again, a reason, and the step's fields."""
    run = view.snapshot.run
    metadata = {"run": run.id, "step": step_key, "approve": approve}
    found = approval_of(view, step_key)
    if found is None or found[2].state != "pending" or run.state.finished:
        note: list[Block] = [section("This approval is no longer waiting for a decision.")]
        return _modal(
            "Approval", callback_id=DECISION_MODAL, blocks=note, metadata=metadata, submit=None
        )
    row, step, _ = found
    blocks: list[Block] = [
        section(question_of(row, step)),
        context(f"{escape(view.flow.label)} · run {code(run.id)} · step {code(step_key)}"),
    ]
    needed = step.require_reason == "always" or (step.require_reason == "reject" and not approve)
    blocks.append(
        InputBlock(
            block_id="reason",
            label="Reason",
            element=PlainTextInputElement(
                action_id=VALUE_ACTION, multiline=True, max_length=REASON
            ),
            optional=not needed,
            hint="Shown on the approval card and kept in the run's history.",
        )
    )
    for spec in step.fields[: MAX_VIEW_BLOCKS - len(blocks)] if approve else ():
        blocks.append(
            InputBlock(
                block_id=f"field:{spec.id}",
                label=clip(spec.label, LABEL),
                element=_field_element(spec),
                optional=not spec.required,
                hint=clip(spec.description, LABEL) if spec.description else None,
            )
        )
    word = "Approve" if approve else "Reject"
    return _modal(word, callback_id=DECISION_MODAL, blocks=blocks, metadata=metadata, submit=word)


def home_view(
    *,
    user: str,
    approvals: Sequence[tuple[RunView, str]],
    recent: Sequence[Run],
    failed: Sequence[Run],
    now: datetime,
) -> View:
    """The App Home tab: what waits for this user, their recent runs, and recent failures."""
    blocks: list[Block] = [header("Relay"), context(f"For {person(user)} · updated {date(now)}")]
    blocks.append(section(f"*Waiting for your decision* ({len(approvals)})"))
    if approvals:
        blocks += waiting_blocks(approvals, now, most=HOME_ITEMS)
    else:
        blocks.append(context("Nothing is waiting for your decision."))
    blocks += [DividerBlock(), section("*Your recent runs*")]
    if recent:
        blocks += [section(chunk) for chunk in run_lines(recent, now, limit=4)]
    else:
        blocks.append(context("No runs yet. Start one with `/relay run FLOW`."))
    blocks += [DividerBlock(), section("*Failed in the last day*")]
    if failed:
        blocks += [section(chunk) for chunk in run_lines(failed, now, limit=4)]
    else:
        blocks.append(context("No failures."))
    return View(type="home", blocks=blocks)
