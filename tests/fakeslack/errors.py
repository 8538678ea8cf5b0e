from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SlackError(Exception):
    """A failure Slack reports as HTTP 200 `{"ok": false, "error": code}`.

    `messages` carries Slack's `response_metadata.messages` detail lines, such as
    `[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]`,
    which is how Slack tells a caller which part of a payload it rejected.
    """

    def __init__(self, error: str, messages: Sequence[str] = ()) -> None:
        super().__init__(error)
        self.error = error
        self.messages = tuple(messages)

    def body(self) -> dict[str, Any]:
        """The JSON body Slack would answer with."""
        body: dict[str, Any] = {"ok": False, "error": self.error}
        if self.messages:
            body["response_metadata"] = {"messages": list(self.messages)}
        return body
