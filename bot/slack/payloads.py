"""The one place that reads Slack's request bodies.

Bolt hands every listener a ``body`` dict in one of Slack's many shapes; here
each shape becomes a small frozen model, so handlers never index into dicts
and a change in Slack's payloads is fixed in one file. Each model also names
the id Slack gives that delivery, which is what deduplication keys on: Slack
re-sends events, replays signed requests and delivers every double click.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.errors import CommandInvalid


class Payload(BaseModel):
    """A parsed delivery; each one's ``delivery`` is (source, Slack's own id for it)."""

    model_config = ConfigDict(frozen=True)


P = TypeVar("P", bound=Payload)


class SlashCommand(Payload):
    """``/relay …`` as typed by ``user`` in ``channel``."""

    user: str
    team: str
    channel: str
    text: str
    trigger_id: str
    response_url: str

    @property
    def delivery(self) -> tuple[str, str]:
        return ("command", self.trigger_id)


class Click(Payload):
    """A button pressed on a message, an ephemeral or the Home tab."""

    user: str
    team: str
    action_id: str
    value: str
    action_ts: str
    trigger_id: str
    channel: str | None = None
    message_ts: str | None = None
    response_url: str | None = None

    @property
    def delivery(self) -> tuple[str, str]:
        return ("action", f"{self.action_ts}:{self.user}:{self.action_id}")


class Submission(Payload):
    """A modal submitted; ``values`` maps each input block to what was entered."""

    user: str
    team: str
    callback_id: str
    view_id: str
    view_hash: str
    metadata: dict[str, Any]
    values: dict[str, Any]

    @property
    def delivery(self) -> tuple[str, str]:
        return ("view", f"{self.view_id}:{self.view_hash}")


class HomeOpened(Payload):
    """The user opened Relay's App Home (any tab)."""

    user: str
    event_id: str
    tab: str = "home"

    @property
    def delivery(self) -> tuple[str, str]:
        return ("event", self.event_id)


def _get(body: Mapping[str, Any], *path: str) -> Any:
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def slash_command(body: Mapping[str, Any]) -> SlashCommand:
    """A slash command's form fields (``user_name`` is ignored: Slack deprecated it)."""
    return _build(
        SlashCommand,
        user=body.get("user_id"),
        team=body.get("team_id"),
        channel=body.get("channel_id"),
        text=body.get("text") or "",
        trigger_id=body.get("trigger_id"),
        response_url=body.get("response_url"),
    )


def click(body: Mapping[str, Any]) -> Click:
    """The first action of a ``block_actions`` payload (Relay's buttons send one)."""
    actions = body.get("actions") or [{}]
    action = actions[0] if isinstance(actions[0], Mapping) else {}
    container = body.get("container") or {}
    return _build(
        Click,
        user=_get(body, "user", "id"),
        team=_get(body, "team", "id") or _get(body, "user", "team_id"),
        action_id=action.get("action_id"),
        value=action.get("value") or "",
        action_ts=action.get("action_ts"),
        trigger_id=body.get("trigger_id"),
        channel=container.get("channel_id") or _get(body, "channel", "id"),
        message_ts=container.get("message_ts") or _get(body, "message", "ts"),
        response_url=body.get("response_url"),
    )


def submission(body: Mapping[str, Any]) -> Submission:
    """A ``view_submission`` with its state flattened to ``{block_id: value}``."""
    view = body.get("view") or {}
    raw_metadata = view.get("private_metadata") or "{}"
    try:
        metadata = json.loads(raw_metadata)
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise CommandInvalid("this form was not made by Relay", usage="/relay help")
    values = {
        block_id: _element_value(element)
        for block_id, actions in (_get(view, "state", "values") or {}).items()
        for element in list(actions.values())[:1]
    }
    return _build(
        Submission,
        user=_get(body, "user", "id"),
        team=_get(body, "team", "id") or _get(body, "user", "team_id"),
        callback_id=view.get("callback_id"),
        view_id=view.get("id"),
        view_hash=view.get("hash") or "",
        metadata=metadata,
        values=values,
    )


def home_opened(body: Mapping[str, Any]) -> HomeOpened:
    """An ``app_home_opened`` event; Socket Mode has no retry headers, so keep event_id."""
    return _build(
        HomeOpened,
        user=_get(body, "event", "user"),
        event_id=body.get("event_id"),
        tab=_get(body, "event", "tab") or "home",
    )


_SELECTED_LISTS = ("selected_users", "selected_channels", "selected_conversations")
"""Where the multi-selects of users, channels and conversations put their picks."""

_SELECTED_ONE = (
    "value",
    "selected_date",
    "selected_time",
    "selected_date_time",
    "selected_user",
    "selected_channel",
    "selected_conversation",
)
"""Where every other input element puts its one value (text, number, URL, email: ``value``)."""


def _element_value(element: Any) -> Any:
    """What one input element holds, whatever its type; None when left empty."""
    if not isinstance(element, Mapping):
        return None
    if "selected_options" in element:
        return [option.get("value") for option in element.get("selected_options") or []]
    for key in _SELECTED_LISTS:
        if key in element:
            return list(element.get(key) or [])
    for key in _SELECTED_ONE:
        if key in element:
            return element.get(key)
    option = element.get("selected_option")
    return option.get("value") if isinstance(option, Mapping) else None


def _build(model: type[P], **fields: Any) -> P:
    try:
        return model(**fields)
    except ValidationError as exc:
        missing = ", ".join(str(error["loc"][0]) for error in exc.errors())
        raise CommandInvalid(
            f"Slack sent a {model.__name__} without {missing}", usage="/relay help"
        ) from None
