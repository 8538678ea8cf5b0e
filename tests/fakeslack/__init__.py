"""A fake Slack for tests: Web API, response_url and Socket Mode on loopback.

`FakeSlack` serves what a bot calls; `tests.fakeslack.requests` builds and signs
what Slack sends to a bot. Nothing here patches slack_sdk or Bolt: both talk to
the fake over real sockets.
"""

from __future__ import annotations

from .api import RESPONSE_URL_METHOD
from .calls import Call
from .errors import SlackError
from .requests import (
    SentResponse,
    SlackRequest,
    SlackSender,
    block_actions,
    event_callback,
    sign,
    slash_command,
    url_verification,
    view_submission,
)
from .server import FakeSlack
from .socket_mode import Ack

__all__ = [
    "RESPONSE_URL_METHOD",
    "Ack",
    "Call",
    "FakeSlack",
    "SentResponse",
    "SlackError",
    "SlackRequest",
    "SlackSender",
    "block_actions",
    "event_callback",
    "sign",
    "slash_command",
    "url_verification",
    "view_submission",
]
