"""Slack's request bodies, built as Slack sends them, parsed into Relay's payload models."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.errors import CommandInvalid
from bot.slack import payloads, views
from tests.fakeslack import block_actions, event_callback, slash_command, view_submission
from tests.fakeslack.requests import CHANNEL_ID, TEAM_ID, USER_ID
from tests.unit.engine.harness import definition


def clicked(**overrides: Any) -> dict[str, Any]:
    """A block_actions payload for Relay's Approve button; ``overrides`` go into the body."""
    body = block_actions(action_id="relay_approve", value="run1|ok", message_ts="1.000100")
    payload = body.payload()
    payload.update(overrides)
    return payload


def submitted(values: dict[str, Any], *, metadata: str = '{"flow": "f"}') -> dict[str, Any]:
    """A view_submission payload with one element per block, under ``VALUE_ACTION``."""
    state = {block: {views.VALUE_ACTION: element} for block, element in values.items()}
    request = view_submission(
        callback_id=views.RUN_MODAL, values=state, private_metadata=metadata, view_id="V0FORM"
    )
    return request.payload()


def refused(error: pytest.ExceptionInfo[CommandInvalid], *names: str) -> None:
    """The error names each missing field and never blames the user's typing."""
    for name in names:
        assert name in error.value.message
    assert error.value.usage == "/relay help"


# ---------------------------------------------------------------- slash commands


def test_slash_command_reads_the_form_fields() -> None:
    form = slash_command(text='run deploy note="two words"', channel_id="C0OPS").form()
    command = payloads.slash_command(form)
    assert command.user == USER_ID and command.team == TEAM_ID and command.channel == "C0OPS"
    assert command.text == 'run deploy note="two words"'
    assert command.trigger_id == form["trigger_id"]
    assert command.response_url == form["response_url"]
    assert command.delivery == ("command", form["trigger_id"])


def test_slash_command_without_text_is_empty() -> None:
    form = slash_command().form()
    assert form["text"] == ""
    assert payloads.slash_command(form).text == ""
    del form["text"]
    assert payloads.slash_command(form).text == ""


def test_slash_command_missing_fields_are_named() -> None:
    form = slash_command().form()
    del form["user_id"], form["trigger_id"]
    with pytest.raises(CommandInvalid) as error:
        payloads.slash_command(form)
    refused(error, "SlashCommand", "user", "trigger_id")
    assert "channel" not in error.value.message


def test_each_slash_command_is_its_own_delivery() -> None:
    first = payloads.slash_command(slash_command(text="list").form())
    second = payloads.slash_command(slash_command(text="list").form())
    assert first.delivery != second.delivery


# ---------------------------------------------------------------- button clicks


def test_click_on_a_message() -> None:
    payload = clicked()
    click = payloads.click(payload)
    assert click.user == USER_ID and click.team == TEAM_ID
    assert (click.action_id, click.value) == ("relay_approve", "run1|ok")
    assert click.channel == CHANNEL_ID and click.message_ts == "1.000100"
    assert click.trigger_id == payload["trigger_id"]
    assert click.response_url == payload["response_url"]
    assert click.action_ts == payload["actions"][0]["action_ts"]


def test_click_on_the_home_tab_has_no_channel_or_response_url() -> None:
    payload = clicked(container={"type": "view", "view_id": "V0HOME"})
    for key in ("channel", "message", "response_url"):
        del payload[key]
    click = payloads.click(payload)
    assert (click.channel, click.message_ts, click.response_url) == (None, None, None)
    assert click.value == "run1|ok"


def test_click_falls_back_to_the_message_and_the_user_team() -> None:
    payload = clicked(container={"type": "message"})
    del payload["team"]
    click = payloads.click(payload)
    assert click.channel == CHANNEL_ID and click.message_ts == "1.000100"
    assert click.team == TEAM_ID


def test_click_without_a_value_reads_as_empty() -> None:
    payload = clicked()
    del payload["actions"][0]["value"]
    assert payloads.click(payload).value == ""


def test_double_click_is_one_delivery_and_other_users_are_not() -> None:
    first, again = clicked(), clicked()
    again["actions"][0]["action_ts"] = first["actions"][0]["action_ts"]
    assert first["trigger_id"] != again["trigger_id"]
    assert payloads.click(first).delivery == payloads.click(again).delivery
    other = block_actions(action_id="relay_approve", value="run1|ok", user_id="U0BOB").payload()
    other["actions"][0]["action_ts"] = first["actions"][0]["action_ts"]
    assert payloads.click(other).delivery != payloads.click(first).delivery
    reject = block_actions(action_id="relay_reject", value="run1|ok").payload()
    reject["actions"][0]["action_ts"] = first["actions"][0]["action_ts"]
    assert payloads.click(reject).delivery != payloads.click(first).delivery


def test_clicks_at_different_times_are_different_deliveries() -> None:
    first, later = clicked(), clicked()
    later["actions"][0]["action_ts"] = first["actions"][0]["action_ts"] + "1"
    assert payloads.click(first).delivery != payloads.click(later).delivery


@pytest.mark.parametrize("actions", [[], None, ["not an action"]])
def test_click_without_an_action_names_what_is_missing(actions: Any) -> None:
    payload = clicked(actions=actions)
    with pytest.raises(CommandInvalid) as error:
        payloads.click(payload)
    refused(error, "Click", "action_id", "action_ts")


def test_click_missing_user_and_trigger_is_named() -> None:
    payload = clicked()
    del payload["user"], payload["trigger_id"]
    with pytest.raises(CommandInvalid) as error:
        payloads.click(payload)
    refused(error, "user", "trigger_id")


# ---------------------------------------------------------------- modal submissions


def option(value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": value.title(), "emoji": True}, "value": value}


ELEMENTS: list[tuple[str, dict[str, Any], Any]] = [
    ("plain_text_input", {"type": "plain_text_input", "value": "two words"}, "two words"),
    ("plain_text_input", {"type": "plain_text_input", "value": None}, None),
    ("email_text_input", {"type": "email_text_input", "value": "a@example.com"}, "a@example.com"),
    (
        "url_text_input",
        {"type": "url_text_input", "value": "https://x.example"},
        "https://x.example",
    ),
    ("number_input", {"type": "number_input", "value": "4.5"}, "4.5"),
    ("number_input", {"type": "number_input", "value": None}, None),
    ("static_select", {"type": "static_select", "selected_option": option("red")}, "red"),
    ("static_select", {"type": "static_select", "selected_option": None}, None),
    ("external_select", {"type": "external_select", "selected_option": option("eu")}, "eu"),
    ("radio_buttons", {"type": "radio_buttons", "selected_option": option("yes")}, "yes"),
    ("radio_buttons", {"type": "radio_buttons", "selected_option": None}, None),
    (
        "checkboxes",
        {"type": "checkboxes", "selected_options": [option("a"), option("b")]},
        ["a", "b"],
    ),
    ("checkboxes", {"type": "checkboxes", "selected_options": []}, []),
    (
        "multi_static_select",
        {"type": "multi_static_select", "selected_options": [option("eu"), option("us")]},
        ["eu", "us"],
    ),
    ("datepicker", {"type": "datepicker", "selected_date": "2024-05-01"}, "2024-05-01"),
    ("datepicker", {"type": "datepicker", "selected_date": None}, None),
    ("timepicker", {"type": "timepicker", "selected_time": "13:30"}, "13:30"),
    (
        "datetimepicker",
        {"type": "datetimepicker", "selected_date_time": 1714560000},
        1714560000,
    ),
    ("users_select", {"type": "users_select", "selected_user": "U0BOB"}, "U0BOB"),
    ("users_select", {"type": "users_select", "selected_user": None}, None),
    ("channels_select", {"type": "channels_select", "selected_channel": "C0OPS"}, "C0OPS"),
    (
        "conversations_select",
        {"type": "conversations_select", "selected_conversation": "G0OPS"},
        "G0OPS",
    ),
    (
        "multi_users_select",
        {"type": "multi_users_select", "selected_users": ["U0A", "U0B"]},
        ["U0A", "U0B"],
    ),
    (
        "multi_channels_select",
        {"type": "multi_channels_select", "selected_channels": ["C0A"]},
        ["C0A"],
    ),
    (
        "multi_conversations_select",
        {"type": "multi_conversations_select", "selected_conversations": []},
        [],
    ),
    ("url_text_input", {"type": "url_text_input", "value": "https://x.test"}, "https://x.test"),
    ("number_input", {"type": "number_input", "value": "42"}, "42"),
]


@pytest.mark.parametrize(
    ("element", "expected"),
    [(element, expected) for _, element, expected in ELEMENTS],
    ids=[f"{kind}-{index}" for index, (kind, _, _) in enumerate(ELEMENTS)],
)
def test_each_input_element_gives_its_value(element: dict[str, Any], expected: Any) -> None:
    form = payloads.submission(submitted({"field": element}))
    assert form.values == {"field": expected}


def test_every_element_type_in_one_form() -> None:
    elements = {f"b{index}": element for index, (_, element, _) in enumerate(ELEMENTS)}
    form = payloads.submission(submitted(elements))
    assert form.values == {f"b{index}": value for index, (_, _, value) in enumerate(ELEMENTS)}


def test_a_block_without_a_mapping_element_reads_as_empty() -> None:
    payload = submitted({})
    payload["view"]["state"]["values"] = {
        "odd": {views.VALUE_ACTION: "not an element"},
        "bare": {},
        "two": {"first": {"type": "plain_text_input", "value": "1"}, "second": {"value": "2"}},
    }
    assert payloads.submission(payload).values == {"odd": None, "two": "1"}


def test_submission_reads_the_view() -> None:
    payload = submitted({"count": {"type": "number_input", "value": "4"}})
    form = payloads.submission(payload)
    view = payload["view"]
    assert form.user == USER_ID and form.team == TEAM_ID
    assert form.callback_id == views.RUN_MODAL
    assert (form.view_id, form.view_hash) == ("V0FORM", view["hash"])
    assert form.metadata == {"flow": "f"}
    assert form.delivery == ("view", f"V0FORM:{view['hash']}")


def test_a_rendered_run_form_comes_back_by_input_name() -> None:
    flow = definition(
        """
name: ship
inputs:
  count: {type: integer}
  region: {type: choice, choices: [eu, us]}
  note: {type: string, required: false}
steps:
  - {id: s, kind: notify, text: hi}
"""
    ).flow
    rendered = views.run_modal(flow, given={}, channel="C0OPS").to_dict()
    answers = {
        "count": {"type": "number_input", "value": "3"},
        "region": {"type": "static_select", "selected_option": option("us")},
        "note": {"type": "plain_text_input", "value": None},
    }
    inputs = [block["block_id"] for block in rendered["blocks"] if block["type"] == "input"]
    assert inputs == list(answers)
    form = payloads.submission(submitted(answers, metadata=rendered["private_metadata"]))
    assert form.metadata == {"flow": "ship", "channel": "C0OPS"}
    assert form.values == {"count": "3", "region": "us", "note": None}


def test_resubmitting_the_same_version_is_one_delivery() -> None:
    payload = submitted({"note": {"type": "plain_text_input", "value": "x"}})
    again = json.loads(json.dumps(payload))
    again["trigger_id"] = "another-trigger"
    assert payloads.submission(payload).delivery == payloads.submission(again).delivery
    again["view"]["hash"] = payload["view"]["hash"] + "2"
    assert payloads.submission(payload).delivery != payloads.submission(again).delivery


def test_missing_metadata_reads_as_empty() -> None:
    payload = submitted({}, metadata="")
    assert payload["view"]["private_metadata"] == ""
    assert payloads.submission(payload).metadata == {}


@pytest.mark.parametrize("metadata", ["{not json", "[1, 2]", '"flow"', "null", "42"])
def test_metadata_that_relay_did_not_write_is_refused(metadata: str) -> None:
    with pytest.raises(CommandInvalid) as error:
        payloads.submission(submitted({}, metadata=metadata))
    assert error.value.message == "this form was not made by Relay"
    assert error.value.usage == "/relay help"


def test_submission_missing_fields_are_named() -> None:
    payload = submitted({})
    del payload["view"]["id"], payload["view"]["callback_id"], payload["user"]
    with pytest.raises(CommandInvalid) as error:
        payloads.submission(payload)
    refused(error, "Submission", "user", "callback_id", "view_id")


def test_submission_without_a_view_is_refused() -> None:
    payload = submitted({})
    del payload["view"]
    with pytest.raises(CommandInvalid) as error:
        payloads.submission(payload)
    refused(error, "callback_id", "view_id")


# ---------------------------------------------------------------- App Home


def home_event(**event: Any) -> dict[str, Any]:
    request = event_callback(
        {"type": "app_home_opened", "user": USER_ID, "channel": "D0HOME", **event},
        event_id="Ev0HOME",
    )
    return request.json()


def test_home_opened_keys_on_the_event_id() -> None:
    opened = payloads.home_opened(home_event(tab="home"))
    assert (opened.user, opened.tab, opened.event_id) == (USER_ID, "home", "Ev0HOME")
    assert opened.delivery == ("event", "Ev0HOME")
    retried = event_callback(
        {"type": "app_home_opened", "user": USER_ID, "tab": "home"},
        event_id="Ev0HOME",
        retry_num=1,
    )
    assert payloads.home_opened(retried.json()).delivery == opened.delivery


def test_home_opened_on_another_tab_or_none() -> None:
    assert payloads.home_opened(home_event(tab="messages")).tab == "messages"
    assert payloads.home_opened(home_event()).tab == "home"


def test_home_opened_missing_fields_are_named() -> None:
    body = home_event(tab="home")
    del body["event_id"], body["event"]["user"]
    with pytest.raises(CommandInvalid) as error:
        payloads.home_opened(body)
    refused(error, "HomeOpened", "user", "event_id")
