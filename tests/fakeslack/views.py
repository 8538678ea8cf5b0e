"""Modals, Home tabs and the trigger_ids that open them.

Kept apart from messages because Slack's rules differ: a modal needs a trigger_id
that works once within 3 seconds, an update may carry the `hash` of the version it
replaces (a stale one gets `hash_conflict`), and a Home view is one per user.
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SlackError
from .state import Json, Workspace

TRIGGER_TTL = 3.0


@dataclass
class _Trigger:
    issued_at: float
    used: bool = False


def new_trigger_id() -> str:
    """A random id shaped like Slack's `13345224609.738474920.8088930838d88f008e0`."""
    return f"{secrets.randbelow(10**11)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"


class ViewStore:
    """Opened modals, published Home views and issued triggers of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace
        self._lock = threading.RLock()
        self._modals: dict[str, Json] = {}
        self._homes: dict[str, Json] = {}
        self._triggers: dict[str, _Trigger] = {}

    def issue_trigger_id(self) -> str:
        """A trigger_id as a slash command or click would carry, good for 3 s."""
        with self._lock:
            trigger_id = new_trigger_id()
            self._triggers[trigger_id] = _Trigger(issued_at=self._workspace.now())
            return trigger_id

    def _use_trigger(self, trigger_id: str) -> None:
        """Spend a trigger, raising as Slack does for an unknown, reused or stale one."""
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise SlackError("invalid_trigger_id")
        if trigger.used or self._workspace.now() - trigger.issued_at > TRIGGER_TTL:
            raise SlackError("expired_trigger_id")
        trigger.used = True

    def _stored(self, view: Mapping[str, Any], view_id: str, user: str | None) -> Json:
        ws = self._workspace
        stored: Json = {
            "id": view_id,
            "team_id": ws.team_id,
            "type": view["type"],
            "blocks": list(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(ws.now())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": ws.app_id,
            "bot_id": ws.bot_id,
        }
        for key in ("title", "submit", "close"):
            if key in view:
                stored[key] = view[key]
        if user is not None:
            stored["user"] = user
        return stored

    def _find(self, view_id: str | None, external_id: str | None) -> Json:
        for stored in [*self._modals.values(), *self._homes.values()]:
            if view_id and stored["id"] == view_id:
                return stored
            if external_id and stored["external_id"] == external_id:
                return stored
        raise SlackError("not_found")

    def open(self, trigger_id: str, view: Mapping[str, Any]) -> Json:
        """views.open: a new modal, spending `trigger_id`."""
        with self._lock:
            external_id = view.get("external_id")
            if external_id and any(v["external_id"] == external_id for v in self._modals.values()):
                raise SlackError("duplicate_external_id")
            self._use_trigger(trigger_id)
            stored = self._stored(view, self._workspace.next_id("V0"), None)
            self._modals[stored["id"]] = stored
            return copy.deepcopy(stored)

    def update(
        self,
        view: Mapping[str, Any],
        *,
        view_id: str | None,
        external_id: str | None,
        hash_: str | None,
    ) -> Json:
        """views.update: replace a modal or Home view, keeping its id."""
        with self._lock:
            current = self._find(view_id, external_id)
            if hash_ and hash_ != current["hash"]:
                raise SlackError("hash_conflict")
            replacement = self._stored(view, current["id"], current.get("user"))
            current.clear()
            current.update(replacement)
            return copy.deepcopy(current)

    def publish(self, user_id: str, view: Mapping[str, Any], hash_: str | None) -> Json:
        """views.publish: the user's Home tab, one per user, id kept across publishes."""
        with self._lock:
            self._workspace.user(user_id)
            current = self._homes.get(user_id)
            if current is not None and hash_ and hash_ != current["hash"]:
                raise SlackError("hash_conflict")
            view_id = current["id"] if current is not None else self._workspace.next_id("V0")
            self._homes[user_id] = self._stored(view, view_id, user_id)
            return copy.deepcopy(self._homes[user_id])

    def view(self, view_id: str) -> Json | None:
        """The latest version of a modal or Home view, or None."""
        with self._lock:
            try:
                return copy.deepcopy(self._find(view_id, None))
            except SlackError:
                return None

    def modals(self) -> list[Json]:
        """Every modal opened, latest versions, in opening order."""
        with self._lock:
            return copy.deepcopy(list(self._modals.values()))

    def home(self, user_id: str) -> Json | None:
        """The Home view last published for `user_id`."""
        with self._lock:
            return copy.deepcopy(self._homes.get(user_id))
