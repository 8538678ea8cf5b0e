"""The fake Slack answers real slack_sdk and Bolt clients the way Slack does."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakeslack import (
    RESPONSE_URL_METHOD,
    FakeSlack,
    SlackSender,
    block_actions,
    event_callback,
    sign,
    slash_command,
    url_verification,
    view_submission,
)

SECRET = "signing-secret"
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}


def _button(action_id: str, value: str = "v") -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "value": value,
        "text": {"type": "plain_text", "text": action_id},
    }


def _modal(title: str = "Approve") -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "approve",
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": "Go"},
        "private_metadata": "run-1",
        "blocks": [SECTION],
    }


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(usergroups={"S0ONCALL": ["U0ALICE", "U0BOB"]}) as fake:
        fake.add_channel("C0SECRET", member=False)
        yield fake


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)


async def _error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


# -- Web API -------------------------------------------------------------------------


async def test_post_update_permalink_round_trip(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C0GENERAL", text="v1", blocks=[SECTION])
    ts = posted["ts"]
    assert posted["channel"] == "C0GENERAL"
    assert posted["message"]["text"] == "v1"

    await client.chat_update(channel="C0GENERAL", ts=ts, text="v2", blocks=[])
    reply = await client.chat_postMessage(channel="C0GENERAL", text="r", thread_ts=ts)
    link = await client.chat_getPermalink(channel="C0GENERAL", message_ts=reply["ts"])

    latest = fake.message("C0GENERAL", ts)
    assert latest is not None
    assert latest["text"] == "v2"
    assert "blocks" not in latest
    assert latest["reply_count"] == 1
    assert [m["ts"] for m in fake.messages("C0GENERAL")] == [ts]
    assert [m["text"] for m in fake.thread("C0GENERAL", ts)] == ["r"]
    assert float(reply["ts"]) > float(ts)
    assert link["permalink"].endswith(f"?thread_ts={ts}&cid=C0GENERAL")
    assert [c.method for c in fake.calls][-3:] == [
        "chat.update",
        "chat.postMessage",
        "chat.getPermalink",
    ]

    missing = await _error(client.chat_update(channel="C0GENERAL", ts="1.000100", text="x"))
    assert missing.response["error"] == "message_not_found"
    bad_thread = await _error(client.chat_postMessage(channel="C0GENERAL", text="x", thread_ts="1"))
    assert bad_thread.response["error"] == "invalid_thread_ts"


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        ([SECTION] * 51, "/blocks"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "/blocks/0/text"),
        ([{"type": "sectionz"}], "/blocks/0/type"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "/blocks/0"),
        ([{"type": "actions", "elements": [_button("a", "v" * 2001)]}], "/elements/0/value"),
        ([{"type": "actions", "elements": [_button("a" * 256)]}], "/elements/0/action_id"),
        ([{"type": "actions", "elements": [_button(f"b{i}") for i in range(26)]}], "/elements"),
        ([{**SECTION, "block_id": "b"}, {"type": "divider", "block_id": "b"}], "/1/block_id"),
    ],
    ids=[
        "51-blocks",
        "section-3001",
        "unknown-type",
        "header-151",
        "button-value-2001",
        "action-id-256",
        "26-elements",
        "duplicate-block-id",
    ],
)
async def test_invalid_blocks_are_rejected_with_a_pointer(
    client: AsyncWebClient, blocks: list[Any], pointer: str
) -> None:
    error = await _error(client.chat_postMessage(channel="C0GENERAL", text="t", blocks=blocks))
    assert error.response["error"] == "invalid_blocks"
    assert any(pointer in m for m in error.response["response_metadata"]["messages"])


async def test_message_text_rules(fake: FakeSlack, client: AsyncWebClient) -> None:
    too_long = await _error(client.chat_postMessage(channel="C0GENERAL", text="x" * 40_001))
    assert too_long.response["error"] == "msg_too_long"
    form = await _error(client.api_call("chat.postMessage", data={"channel": "C0GENERAL"}))
    assert form.response["error"] == "no_text"

    # slack_sdk warns on the client side too; the fake records Slack's warning.
    with pytest.warns(UserWarning, match="text"):
        await client.chat_postMessage(channel="C0GENERAL", blocks=[SECTION])
    assert fake.calls_to("chat.postMessage")[-1].warnings == ("missing_text_in_blocks",)


async def test_form_encoded_blocks_are_decoded(fake: FakeSlack, client: AsyncWebClient) -> None:
    data = {"channel": "C0GENERAL", "text": "t", "blocks": json.dumps([SECTION])}
    response = await client.api_call("chat.postMessage", data=data)
    assert response["message"]["blocks"] == [SECTION]
    assert fake.calls_to("chat.postMessage")[0].args["blocks"] == [SECTION]
    broken = await _error(client.api_call("chat.postMessage", data={**data, "blocks": "[{"}))
    assert broken.response["error"] == "invalid_blocks_format"


async def test_auth_errors(fake: FakeSlack) -> None:
    cases = [
        (None, "auth_test", "not_authed"),
        ("xoxb-wrong", "auth_test", "invalid_auth"),
        (fake.app_token, "auth_test", "not_allowed_token_type"),
    ]
    for token, method, expected in cases:
        client = AsyncWebClient(token=token, base_url=fake.api_url)
        error = await _error(getattr(client, method)())
        assert error.response["error"] == expected
    bot = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    wrong_kind = await _error(bot.apps_connections_open(app_token=fake.bot_token))
    assert wrong_kind.response["error"] == "not_allowed_token_type"
    unknown = await _error(bot.api_call("chat.teleport"))
    assert unknown.response["error"] == "unknown_method"


async def test_channels_dms_users_and_groups(fake: FakeSlack, client: AsyncWebClient) -> None:
    nowhere = await _error(client.chat_postMessage(channel="C0NOPE", text="x"))
    assert nowhere.response["error"] == "channel_not_found"
    outside = await _error(client.chat_postMessage(channel="C0SECRET", text="x"))
    assert outside.response["error"] == "not_in_channel"

    dm = (await client.conversations_open(users="U0ALICE"))["channel"]["id"]
    again = await client.conversations_open(users=["U0ALICE"])
    assert dm.startswith("D")
    assert again["channel"]["id"] == dm
    assert again["already_open"] is True
    by_user = await client.chat_postMessage(channel="U0ALICE", text="psst")
    assert by_user["channel"] == dm
    assert [m["text"] for m in fake.messages(dm)] == ["psst"]

    eph = await client.chat_postEphemeral(channel="C0GENERAL", user="U0BOB", text="only you")
    assert fake.ephemerals("U0BOB")[0]["ts"] == eph["message_ts"]

    assert (await client.users_info(user="U0BOB"))["user"]["id"] == "U0BOB"
    assert (await client.usergroups_users_list(usergroup="S0ONCALL"))["users"] == [
        "U0ALICE",
        "U0BOB",
    ]
    no_user = await _error(client.users_info(user="U0NOBODY"))
    assert no_user.response["error"] == "user_not_found"
    no_group = await _error(client.usergroups_users_list(usergroup="S0NOPE"))
    assert no_group.response["error"] == "no_such_subteam"


async def test_trigger_ids_work_once_within_three_seconds(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    unknown = await _error(client.views_open(trigger_id="1.2.abc", view=_modal()))
    assert unknown.response["error"] == "invalid_trigger_id"

    trigger = fake.issue_trigger_id()
    opened = await client.views_open(trigger_id=trigger, view=_modal())
    assert opened["view"]["id"].startswith("V")
    reused = await _error(client.views_open(trigger_id=trigger, view=_modal()))
    assert reused.response["error"] == "expired_trigger_id"

    stale = fake.issue_trigger_id()
    fake.advance_time(3.5)
    expired = await _error(client.views_open(trigger_id=stale, view=_modal()))
    assert expired.response["error"] == "expired_trigger_id"

    long_title = await _error(
        client.views_open(trigger_id=fake.issue_trigger_id(), view=_modal("t" * 25))
    )
    assert long_title.response["error"] == "invalid_arguments"
    assert "/view/title/text" in long_title.response["response_metadata"]["messages"][0]


async def test_views_update_and_publish(fake: FakeSlack, client: AsyncWebClient) -> None:
    view = (await client.views_open(trigger_id=fake.issue_trigger_id(), view=_modal()))["view"]
    updated = await client.views_update(view_id=view["id"], view=_modal("Done"), hash=view["hash"])
    assert fake.view(view["id"])["title"]["text"] == "Done"  # type: ignore[index]
    conflict = await _error(
        client.views_update(view_id=view["id"], view=_modal(), hash=view["hash"])
    )
    assert conflict.response["error"] == "hash_conflict"
    assert updated["view"]["hash"] != view["hash"]

    home = {"type": "home", "blocks": [SECTION]}
    published = await client.views_publish(user_id="U0ALICE", view=home)
    assert fake.home_view("U0ALICE")["id"] == published["view"]["id"]  # type: ignore[index]
    not_home = await _error(client.views_publish(user_id="U0ALICE", view=_modal()))
    assert not_home.response["error"] == "invalid_arguments"


# -- faults ---------------------------------------------------------------------------


async def test_rate_limit_is_retried_after_retry_after(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=1)
    client = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    response = await client.chat_postMessage(channel="C0GENERAL", text="eventually")
    assert response["ok"] is True
    first, second = fake.calls_to("chat.postMessage")
    assert (first.status, first.error) == (429, "ratelimited")
    assert first.ok is False
    assert second.ok
    assert second.at - first.at >= 1.0


async def test_rate_limit_and_outage_surface_without_retry(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.fail_next("auth.test", status=429, retry_after=7)
    limited = await _error(client.auth_test())
    assert limited.response.status_code == 429
    assert limited.response.headers["Retry-After"] == "7"

    fake.outage = True
    down = await _error(client.auth_test())
    assert (down.response.status_code, down.response["error"]) == (503, "service_unavailable")
    fake.outage = False
    assert (await client.auth_test())["ok"] is True


async def test_pause_refuses_connections_and_resume_keeps_the_port(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    port = fake.port
    fake.pause()
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.auth_test()
    fake.resume()
    assert fake.port == port
    assert (await client.auth_test())["ok"] is True


# -- response_url -----------------------------------------------------------------------


async def test_response_url_takes_five_posts_within_thirty_minutes(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel="C0GENERAL", text="asking"))["ts"]
    url = fake.response_url(channel="C0GENERAL", user="U0ALICE", message_ts=ts)
    hook = AsyncWebhookClient(url)

    assert (await hook.send(text="replaced", replace_original=True)).status_code == 200
    assert (await hook.send(text="just you")).status_code == 200
    assert (await hook.send(text="everyone", response_type="in_channel")).status_code == 200
    for _ in range(2):
        assert (await hook.send(text="more")).status_code == 200
    sixth = await hook.send(text="one too many")
    assert (sixth.status_code, json.loads(sixth.body)["error"]) == (404, "used_url")

    assert fake.message("C0GENERAL", ts)["text"] == "replaced"  # type: ignore[index]
    assert [m["text"] for m in fake.messages("C0GENERAL")] == ["replaced", "everyone"]
    assert fake.ephemerals("U0ALICE")[0]["text"] == "just you"
    assert len(fake.responses(url)) == 5
    assert len(fake.calls_to(RESPONSE_URL_METHOD)) == 6

    old = AsyncWebhookClient(fake.response_url(channel="C0GENERAL"))
    fake.advance_time(30 * 60 + 1)
    expired = await old.send(text="late")
    assert (expired.status_code, json.loads(expired.body)["error"]) == (404, "expired_url")


# -- Socket Mode --------------------------------------------------------------------------


async def test_socket_mode_client_gets_hello_envelopes_and_acks(fake: FakeSlack) -> None:
    seen: list[dict[str, Any]] = []

    async def remember(_: Any, message: dict[str, Any], raw: str | None) -> None:
        seen.append(message)

    async def ack(sm: Any, request: SocketModeRequest) -> None:
        payload = {"text": f"got {request.payload['command']}"}
        await sm.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload))

    web_client = AsyncWebClient(base_url=fake.api_url)
    sm = SocketModeClient(app_token=fake.app_token, web_client=web_client)
    sm.message_listeners.append(remember)
    sm.socket_mode_request_listeners.append(ack)
    try:
        await sm.connect()
        envelope_id = fake.send_slash_command_envelope(slash_command(fake=fake).form())
        acked = await fake.await_ack(envelope_id, timeout=5)
        assert acked.payload == {"text": "got /relay"}

        second = fake.send_slash_command_envelope(slash_command(text="again").form())
        from_thread = await asyncio.to_thread(fake.wait_for_ack, second, 5)
        assert from_thread.envelope_id == second
    finally:
        await sm.close()

    assert seen[0]["type"] == "hello"
    assert seen[0]["connection_info"] == {"app_id": "A0TEST"}
    assert [m.get("envelope_id") for m in seen[1:]] == [envelope_id, second]
    assert fake.calls_to("apps.connections.open")[0].ok


async def test_socket_mode_client_reconnects_after_pause(fake: FakeSlack) -> None:
    async def ack(sm: Any, request: SocketModeRequest) -> None:
        await sm.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    web_client = AsyncWebClient(base_url=fake.api_url)
    sm = SocketModeClient(app_token=fake.app_token, web_client=web_client, ping_interval=0.1)
    sm.socket_mode_request_listeners.append(ack)
    try:
        await sm.connect()
        fake.pause()
        assert fake.socket_connections == 0
        held = fake.send_slash_command_envelope(slash_command().form())
        await asyncio.sleep(0.3)  # the client's reconnect attempts are refused meanwhile
        fake.resume()
        await fake.await_ack(held, timeout=5)
    finally:
        await sm.close()
    assert fake.socket_connections <= 1
    assert len(fake.calls_to("apps.connections.open")) >= 2


async def test_bolt_socket_mode_handler_runs_unchanged(fake: FakeSlack) -> None:
    app = AsyncApp(client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url))

    @app.command("/relay")
    async def relay(ack: Any, say: Any, command: dict[str, Any]) -> None:
        await ack()
        await say(text=f"running {command['text']}")

    @app.action("approve")
    async def approve(ack: Any) -> None:
        await ack()

    @app.event("app_home_opened")
    async def home(event: dict[str, Any]) -> None:
        pass

    handler = AsyncSocketModeHandler(app, fake.app_token)
    try:
        await handler.connect_async()
        envelope_id = fake.send_slash_command_envelope(slash_command(text="deploy").form())
        await fake.await_ack(envelope_id)
        posted = await fake.await_calls("chat.postMessage")
        click = block_actions(action_id="approve", value="run-1").payload()
        await fake.await_ack(fake.send_interactive_envelope(click))
        event = event_callback({"type": "app_home_opened", "user": "U0ALICE"}).json()
        await fake.await_ack(fake.send_events_api_envelope(event, retry_attempt=1))
    finally:
        await handler.close_async()
    assert posted[0].args["text"] == "running deploy"
    assert posted[0].args["channel"] == "C0GENERAL"


# -- requests Slack sends -------------------------------------------------------------------


def test_signatures_verify_with_slack_sdk() -> None:
    body = slash_command(text="status").body
    now = int(time.time())
    headers = sign(body, SECRET, now)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )

    later = SignatureVerifier(SECRET, clock=_FixedClock(now + 301))
    assert not later.is_valid(body, str(now), headers["X-Slack-Signature"])
    wrong = sign(body, "other-secret", now)
    assert not verifier.is_valid(body, str(now), wrong["X-Slack-Signature"])


class _FixedClock:
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


@dataclass
class _Bot:
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)
    event_seen: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def bot(fake: FakeSlack) -> AsyncIterator[_Bot]:
    """A real Bolt app served over loopback HTTP, recording what its listeners saw."""
    app = AsyncApp(
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url), signing_secret=SECRET
    )
    bot = _Bot(url="")
    seen = bot.seen

    @app.command("/relay")
    async def relay(ack: Any, command: dict[str, Any]) -> None:
        seen.append(command)
        await ack(text="ok")

    @app.action("approve")
    async def approve(ack: Any, body: dict[str, Any]) -> None:
        seen.append(body)
        await ack()

    @app.view("approve")
    async def submitted(ack: Any, view: dict[str, Any]) -> None:
        seen.append(view)
        await ack()

    @app.event("app_home_opened")
    async def home(event: dict[str, Any]) -> None:
        seen.append(event)
        bot.event_seen.set()

    runner = web.AppRunner(app.web_app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    bot.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield bot
    finally:
        await runner.cleanup()


async def test_sender_signs_like_slack_for_a_real_bolt_app(
    fake: FakeSlack, client: AsyncWebClient, bot: _Bot
) -> None:
    url, seen = bot.url, bot.seen
    blocks = [{"type": "actions", "block_id": "decide", "elements": [_button("approve", "run-7")]}]
    ts = (await client.chat_postMessage(channel="C0GENERAL", text="approve?", blocks=blocks))["ts"]

    async with SlackSender(url, SECRET) as sender:
        command = await sender.send(slash_command(text="status", fake=fake))
        assert (command.status, command.text) == (200, "ok")
        assert command.elapsed < 3
        for signature in ("bad", "missing", "stale"):
            rejected = await sender.send(slash_command(), signature=signature)
            assert rejected.status == 401, signature

        click = block_actions(action_id="approve", message_ts=ts, fake=fake)
        assert (await sender.send(click)).status == 200
        submit = view_submission(callback_id="approve", values={"b": {"a": {"value": "x"}}})
        assert (await sender.send(submit)).status == 200
        event = event_callback({"type": "app_home_opened", "user": "U0ALICE"}, retry_num=1)
        assert event.signed_headers(SECRET)["X-Slack-Retry-Num"] == "1"
        assert (await sender.send(event)).status == 200
        challenge = await sender.send(url_verification("c-123"))
        assert challenge.json() == {"challenge": "c-123"}

    async with asyncio.timeout(2):  # Bolt runs event listeners after the ack
        await bot.event_seen.wait()
    command_fields, action, view, home = seen
    assert command_fields["user_id"] == "U0ALICE"
    assert command_fields["response_url"].startswith(fake.base_url)
    assert action["actions"][0]["value"] == "run-7"
    assert action["actions"][0]["block_id"] == "decide"
    assert action["message"]["text"] == "approve?"
    assert view["state"]["values"] == {"b": {"a": {"value": "x"}}}
    assert home["type"] == "app_home_opened"
