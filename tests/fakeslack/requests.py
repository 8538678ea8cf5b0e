"""What Slack sends to a bot: signed slash commands, interactions and events.

Builders return an unsigned `SlackRequest` (raw body plus content type); signing
happens when it is sent, so the timestamp is fresh and a test can choose a bad,
missing or stale signature. The same request feeds three paths:
`request.signed_headers(secret)` for `AsyncBoltRequest` dispatch, `SlackSender`
for real HTTP to `/slack/events`, and `request.form()` / `.payload()` / `.json()`
for the matching Socket Mode envelope on `FakeSlack`.

Given a `fake`, builders mint `trigger_id` and `response_url` from it, and a
block_actions click takes the clicked message (and button) from the fake's
state, so a test clicks what the bot really rendered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode

import httpx

from .views import new_trigger_id

if TYPE_CHECKING:
    from .server import FakeSlack

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
STALE_AFTER = 300
"""Seconds after which Slack's (and Bolt's) verifier rejects a timestamp."""

TEAM_ID = "T0TEST"
TEAM_DOMAIN = "relay-test"
APP_ID = "A0TEST"
BOT_USER_ID = "U0BOT"
USER_ID = "U0ALICE"
USER_NAME = "alice"
CHANNEL_ID = "C0GENERAL"
VERIFICATION_TOKEN = "verification-token"
"""Slack's deprecated per-app token, still present in every payload."""


def sign(
    body: bytes, secret: str, timestamp: int | None = None, *, content_type: str = FORM
) -> dict[str, str]:
    """Slack's v0 signature headers: HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={digest}",
    }


@dataclass(frozen=True)
class SlackRequest:
    """One request body as Slack would send it, not yet signed."""

    body: bytes
    content_type: str
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    """Unsigned headers Slack adds, e.g. `X-Slack-Retry-Num` on event retries."""

    @property
    def text(self) -> str:
        """The body as a string, which is what `AsyncBoltRequest(body=...)` takes."""
        return self.body.decode()

    def signed_headers(self, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
        """Every header Slack would send, signed now (or at `timestamp`)."""
        headers = sign(self.body, secret, timestamp, content_type=self.content_type)
        return {**headers, **self.extra_headers}

    def form(self) -> dict[str, str]:
        """The form fields (a slash command's, for a Socket Mode envelope)."""
        return dict(parse_qsl(self.text, keep_blank_values=True))

    def payload(self) -> dict[str, Any]:
        """The JSON inside an interaction's `payload` form field."""
        return dict(json.loads(self.form()["payload"]))

    def json(self) -> dict[str, Any]:
        """The JSON body of an Events API request."""
        return dict(json.loads(self.body))


def _trigger_id(fake: FakeSlack | None) -> str:
    if fake is not None:
        return fake.issue_trigger_id()
    return new_trigger_id()


def _response_url(fake: FakeSlack | None, **context: str | None) -> str:
    if fake is not None:
        return fake.response_url(**context)
    return f"https://hooks.slack.com/actions/{TEAM_ID}/{secrets.randbelow(10**12)}/{secrets.token_hex(12)}"


def _form(fields: Mapping[str, str]) -> SlackRequest:
    return SlackRequest(urlencode(fields).encode(), FORM)


def _user(user_id: str, user_name: str, team_id: str) -> dict[str, str]:
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id}


def slash_command(
    *,
    command: str = "/relay",
    text: str = "",
    user_id: str = USER_ID,
    user_name: str = USER_NAME,
    channel_id: str = CHANNEL_ID,
    channel_name: str = "general",
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
    fake: FakeSlack | None = None,
    trigger_id: str | None = None,
    response_url: str | None = None,
) -> SlackRequest:
    """A slash command as Slack posts it: form fields, no `enterprise_id`."""
    fields = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url
        or _response_url(fake, channel=channel_id, user=user_id, message_ts=None),
        "trigger_id": trigger_id or _trigger_id(fake),
    }
    return _form(fields)


def _find_button(blocks: Any, action_id: str) -> tuple[str, Mapping[str, Any]] | None:
    """The (block_id, element) carrying `action_id` in a rendered message."""
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, Mapping):
            continue
        candidates = [*block.get("elements", []), block.get("accessory") or {}]
        for element in candidates:
            if isinstance(element, Mapping) and element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
    return None


def block_actions(
    *,
    action_id: str,
    value: str | None = None,
    block_id: str | None = None,
    message_ts: str | None = None,
    message: Mapping[str, Any] | None = None,
    user_id: str = USER_ID,
    user_name: str = USER_NAME,
    channel_id: str = CHANNEL_ID,
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
    fake: FakeSlack | None = None,
    trigger_id: str | None = None,
    response_url: str | None = None,
) -> SlackRequest:
    """A button click on a message, as Slack posts it in the `payload` form field.

    With `fake` and `message_ts`, the message comes from the fake's state and the
    button's `block_id` / `value` / text from its blocks, unless given here.
    """
    if message is None and fake is not None and message_ts is not None:
        message = fake.message(channel_id, message_ts)
    message = dict(message or {"type": "message", "text": "", "blocks": []})
    message_ts = message_ts or message.get("ts") or f"{int(time.time())}.000100"
    message.setdefault("ts", message_ts)
    found = _find_button(message.get("blocks"), action_id)
    element: Mapping[str, Any] = found[1] if found else {}
    now = f"{time.time():.6f}"
    action = {
        "action_id": action_id,
        "block_id": block_id or (found[0] if found else "actions"),
        "value": value if value is not None else str(element.get("value", "")),
        "type": "button",
        "text": element.get("text", {"type": "plain_text", "text": action_id}),
        "action_ts": now,
    }
    payload = {
        "type": "block_actions",
        "token": VERIFICATION_TOKEN,
        "user": _user(user_id, user_name, team_id),
        "api_app_id": api_app_id,
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "trigger_id": trigger_id or _trigger_id(fake),
        "response_url": response_url
        or _response_url(fake, channel=channel_id, user=user_id, message_ts=message_ts),
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "channel": {"id": channel_id, "name": "general"},
        "message": message,
        "state": {"values": {}},
        "actions": [action],
    }
    return _form({"payload": json.dumps(payload)})


def view_submission(
    *,
    callback_id: str,
    values: Mapping[str, Mapping[str, Any]] | None = None,
    private_metadata: str = "",
    view_id: str | None = None,
    user_id: str = USER_ID,
    user_name: str = USER_NAME,
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
    fake: FakeSlack | None = None,
    trigger_id: str | None = None,
) -> SlackRequest:
    """A modal submission; `values` is `state.values[block_id][action_id]`.

    With `fake` and `view_id`, the rest of the view (title, blocks, hash,
    private_metadata unless given) is the version the fake holds.
    """
    stored = fake.view(view_id) if fake is not None and view_id else None
    view: dict[str, Any] = dict(stored or {"type": "modal", "blocks": []})
    view.update(
        id=view_id or view.get("id") or f"V0{secrets.token_hex(4).upper()}",
        team_id=team_id,
        callback_id=callback_id,
        private_metadata=private_metadata or view.get("private_metadata", ""),
        state={"values": {block: dict(actions) for block, actions in (values or {}).items()}},
        app_id=api_app_id,
    )
    view.setdefault("hash", f"{int(time.time())}.{secrets.token_hex(4)}")
    payload = {
        "type": "view_submission",
        "token": VERIFICATION_TOKEN,
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "user": _user(user_id, user_name, team_id),
        "api_app_id": api_app_id,
        "trigger_id": trigger_id or _trigger_id(fake),
        "view": view,
        "response_urls": [],
        "enterprise": None,
        "is_enterprise_install": False,
    }
    return _form({"payload": json.dumps(payload)})


def event_callback(
    event: Mapping[str, Any],
    *,
    event_id: str | None = None,
    event_time: int | None = None,
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
    bot_user_id: str = BOT_USER_ID,
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
) -> SlackRequest:
    """An Events API delivery; `retry_num` adds Slack's retry headers."""
    now = int(time.time()) if event_time is None else event_time
    body = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": {"event_ts": f"{now}.000100", **event},
        "type": "event_callback",
        "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
        "event_time": now,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }
    extra = {}
    if retry_num is not None:
        extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
    return SlackRequest(json.dumps(body).encode(), JSON, extra)


def url_verification(challenge: str | None = None) -> SlackRequest:
    """The handshake Slack sends when the Events URL is saved."""
    body = {
        "token": VERIFICATION_TOKEN,
        "challenge": challenge or secrets.token_urlsafe(24),
        "type": "url_verification",
    }
    return SlackRequest(json.dumps(body).encode(), JSON)


Signature = Literal["valid", "bad", "missing", "stale"]


@dataclass(frozen=True)
class SentResponse:
    """What the bot answered, and how long it took (Slack gives up after 3 s)."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    elapsed: float

    @property
    def text(self) -> str:
        """The body as text: Bolt answers a command's `ack(text=...)` in plain text."""
        return self.body.decode()

    def json(self) -> Any:
        """The body parsed as JSON (url_verification, view errors)."""
        return json.loads(self.body)


class SlackSender:
    """Posts `SlackRequest`s to a bot's `/slack/events` over real HTTP, as Slack does."""

    def __init__(
        self,
        base_url: str,
        signing_secret: str,
        *,
        path: str = "/slack/events",
        timeout: float = 10.0,
    ) -> None:
        self._secret = signing_secret
        self._path = path
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def __aenter__(self) -> SlackSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; required, or the test leaks a socket."""
        await self._client.aclose()

    def _headers(self, request: SlackRequest, signature: Signature) -> dict[str, str]:
        if signature == "missing":
            return {"Content-Type": request.content_type, **request.extra_headers}
        if signature == "bad":
            return request.signed_headers(self._secret + "-wrong")
        if signature == "stale":
            stale = int(time.time()) - STALE_AFTER - 60
            return request.signed_headers(self._secret, timestamp=stale)
        return request.signed_headers(self._secret)

    async def send(self, request: SlackRequest, *, signature: Signature = "valid") -> SentResponse:
        """POST one request; `signature` picks a valid, bad, missing or stale one."""
        headers = self._headers(request, signature)
        started = time.perf_counter()
        response = await self._client.post(self._path, content=request.body, headers=headers)
        elapsed = time.perf_counter() - started
        return SentResponse(response.status_code, response.content, dict(response.headers), elapsed)
