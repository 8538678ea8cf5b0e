"""`FakeSlack`: a Slack Web API, response_url and Socket Mode server on loopback.

It runs in its own thread with its own event loop, so it keeps answering while a
test blocks its own thread or loop, and the bot under test talks to it over real
HTTP exactly as to slack.com (point `AsyncWebClient(base_url=fake.api_url)` at
it). It always binds 127.0.0.1 port 0 and reads the real port back, so suites can
run in parallel.

Failure switches, from mildest to harshest:
- `fail_next(method, status=429|500|503, ...)`: the next N calls to one method fail;
- `outage = True`: every HTTP request (API, response_url, WebSocket) answers 503;
- `pause()` / `resume()`: the listener closes, open connections (WebSockets too)
  are dropped and new ones are refused, until `resume()` listens again on the
  same port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from .api import Api
from .calls import Call
from .socket_mode import (
    Ack,
    SocketHub,
    events_api_envelope,
    interactive_envelope,
    slash_command_envelope,
)
from .state import Json, Workspace
from .views import ViewStore

T = TypeVar("T")

DEFAULT_USERS = ("U0ALICE", "U0BOB", "U0CAROL")
DEFAULT_CHANNELS = ("C0GENERAL",)
_LOOP_TIMEOUT = 10.0


class FakeSlack:
    """A fake Slack workspace that validates and records what a bot sends it.

    Seeds: `users` exist (plus the bot user), `usergroups` map a group id to its
    members, `channels` are the channels the bot is in (`add_channel(...,
    member=False)` makes one it is not in). Use as a context manager or call
    `start()` / `stop()`.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        team_id: str = "T0TEST",
        bot_user_id: str = "U0BOT",
        app_id: str = "A0TEST",
        users: Iterable[str] = DEFAULT_USERS,
        usergroups: Mapping[str, Iterable[str]] | None = None,
        channels: Iterable[str] = DEFAULT_CHANNELS,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self._workspace = Workspace(
            team_id=team_id,
            bot_user_id=bot_user_id,
            users=users,
            usergroups=usergroups or {},
            channels=channels,
            app_id=app_id,
        )
        self._views = ViewStore(self._workspace)
        self._hub = SocketHub(app_id=app_id)
        self._api = Api(
            workspace=self._workspace,
            views=self._views,
            hub=self._hub,
            bot_token=bot_token,
            app_token=app_token,
            base_url=lambda: self.base_url,
        )
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> FakeSlack:
        """Start the server thread and listen; returns self for chaining."""
        if self._thread is not None:
            raise RuntimeError("FakeSlack is already running")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="fakeslack", daemon=True)
        self._thread.start()
        try:
            self._in_loop(self._listen())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Drop every connection, stop listening and end the thread."""
        if self._thread is None or self._loop is None:
            return
        if self._runner is not None:
            self._in_loop(self._unlisten())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_LOOP_TIMEOUT)
        self._thread = None

    def pause(self) -> None:
        """Refuse connections (and drop open ones) until `resume()`."""
        if self._runner is None:
            raise RuntimeError("FakeSlack is not listening")
        self._in_loop(self._unlisten())

    def resume(self) -> None:
        """Listen again on the same port after `pause()`."""
        if self._runner is not None:
            raise RuntimeError("FakeSlack is already listening")
        self._in_loop(self._listen())

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()

    def _in_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server loop and wait for it, from any other thread."""
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("FakeSlack is not running; call start() first")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("FakeSlack cannot wait on itself from its own thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_LOOP_TIMEOUT)

    async def _listen(self) -> None:
        runner = web.AppRunner(
            self._api.application(), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR lets resume() rebind the port while old connections sit in
        # TIME_WAIT; the first bind is port 0, so no other suite is disturbed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._port))
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def _unlisten(self) -> None:
        runner, self._runner = self._runner, None
        await self._hub.close_all()
        if runner is not None:
            await runner.cleanup()

    # -- addresses -------------------------------------------------------------------

    @property
    def team_id(self) -> str:
        """The workspace id every payload and response carries."""
        return self._workspace.team_id

    @property
    def bot_user_id(self) -> str:
        """The bot's own user id, as auth.test reports it."""
        return self._workspace.bot_user_id

    @property
    def port(self) -> int:
        """The loopback port, fixed from the first `start()` on."""
        return self._port

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/`, the root of everything the fake serves."""
        if not self._port:
            raise RuntimeError("FakeSlack has no port until start()")
        return f"http://127.0.0.1:{self._port}/"

    @property
    def api_url(self) -> str:
        """The Web API root with slack_sdk's trailing slash: pass it as `base_url=`."""
        return f"{self.base_url}api/"

    # -- recorded calls --------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every Web API and response_url request so far, oldest first."""
        return self._api.calls.select(lambda call: True)

    def calls_to(self, method: str) -> list[Call]:
        """The calls to one method (`"response_url"` for response_url posts)."""
        return self._api.calls.select(lambda call: call.method == method)

    def reset_calls(self) -> None:
        """Forget recorded calls; workspace state (messages, views) is kept."""
        self._api.calls.clear()

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Block this thread until `count` calls to `method` exist; returns them all.

        Not for a test whose bot runs on the same event loop: use `await_calls`.
        """
        what = f"{method} call"
        return self._api.calls.wait(lambda c: c.method == method, count, timeout, what)

    async def await_calls(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for; the error says what never came
    ) -> list[Call]:
        """`wait_for` that lets the caller's event loop keep running."""
        what = f"{method} call"
        return await self._api.calls.wait_async(lambda c: c.method == method, count, timeout, what)

    # -- fault injection --------------------------------------------------------------

    def fail_next(
        self, method: str, *, status: int = 429, retry_after: int = 1, times: int = 1
    ) -> None:
        """Make the next `times` calls to `method` fail with `status`.

        429 answers `{"ok": false, "error": "ratelimited"}` with `Retry-After`; 500 and
        503 answer `internal_error` / `service_unavailable`.
        """
        self._api.faults.add(method, status=status, retry_after=retry_after, times=times)

    @property
    def outage(self) -> bool:
        """While True, every HTTP request answers 503 `service_unavailable`."""
        return self._api.faults.outage

    @outage.setter
    def outage(self, value: bool) -> None:
        self._api.faults.outage = value

    # -- workspace state --------------------------------------------------------------

    def add_user(self, user_id: str, *, name: str | None = None) -> None:
        """Add a workspace member after start."""
        self._workspace.add_user(user_id, name=name)

    def add_channel(self, channel_id: str, *, member: bool = True) -> None:
        """Add a channel; with `member=False` the bot gets `not_in_channel` there."""
        self._workspace.add_channel(channel_id, member=member)

    def advance_time(self, seconds: float) -> None:
        """Age triggers and response URLs without sleeping."""
        self._workspace.advance_time(seconds)

    def message(self, channel: str, ts: str) -> Json | None:
        """The latest version of a message, or None if absent or deleted."""
        return self._workspace.message(channel, ts)

    def messages(self, channel: str) -> list[Json]:
        """A channel's top-level messages (latest versions), oldest first."""
        return self._workspace.messages(channel)

    def thread(self, channel: str, ts: str) -> list[Json]:
        """The replies under the message `ts`, oldest first."""
        return self._workspace.thread(channel, ts)

    def ephemerals(self, user: str) -> list[Json]:
        """Ephemeral messages shown to `user` (chat.postEphemeral and response_url)."""
        return self._workspace.ephemerals(user)

    def view(self, view_id: str) -> Json | None:
        """The latest version of an opened modal or published Home view."""
        return self._views.view(view_id)

    def views(self) -> list[Json]:
        """Every modal opened through views.open, latest versions."""
        return self._views.modals()

    def home_view(self, user_id: str) -> Json | None:
        """The Home tab last published for `user_id`."""
        return self._views.home(user_id)

    def issue_trigger_id(self) -> str:
        """A trigger_id valid for one views.open within 3 seconds, as Slack issues."""
        return self._views.issue_trigger_id()

    def response_url(
        self, *, channel: str | None = None, user: str | None = None, message_ts: str | None = None
    ) -> str:
        """Mint a response_url served by the fake.

        `channel` lets `response_type: in_channel` post there, `user` receives the
        ephemeral replies, and `message_ts` is the message `replace_original` /
        `delete_original` act on.
        """
        url_id = self._workspace.mint_response_url(
            channel=channel, user=user, message_ts=message_ts
        )
        return f"{self.base_url}response/{url_id}"

    def responses(self, id_or_url: str) -> list[Json]:
        """The bodies accepted by one response_url, oldest first."""
        return self._workspace.responses(id_or_url.rstrip("/").rsplit("/", 1)[-1])

    # -- Socket Mode -------------------------------------------------------------------

    @property
    def socket_connections(self) -> int:
        """How many Socket Mode clients are connected and greeted."""
        return self._hub.connection_count

    def socket_send(self, envelope: Mapping[str, Any]) -> str:
        """Push one envelope to the newest client (or hold it until one connects).

        Safe from any thread but the fake's own; returns the envelope_id.
        """
        self._in_loop(self._hub.deliver(dict(envelope)))
        return str(envelope["envelope_id"])

    def send_slash_command_envelope(self, fields: Mapping[str, str]) -> str:
        """Deliver a slash command over Socket Mode; returns its envelope_id."""
        return self.socket_send(slash_command_envelope(fields))

    def send_interactive_envelope(self, payload: Mapping[str, Any]) -> str:
        """Deliver a block_actions / view_submission payload over Socket Mode."""
        return self.socket_send(interactive_envelope(payload))

    def send_events_api_envelope(
        self, body: Mapping[str, Any], *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> str:
        """Deliver an Events API `event_callback` body over Socket Mode."""
        envelope = events_api_envelope(body, retry_attempt=retry_attempt, retry_reason=retry_reason)
        return self.socket_send(envelope)

    def acks(self, envelope_id: str) -> list[Ack]:
        """Acknowledgements received so far for one envelope."""
        return self._hub.acks.select(_for(envelope_id))

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        """Block this thread until the client acks `envelope_id`.

        Not for a test whose client runs on the same event loop: use `await_ack`.
        """
        return self._hub.acks.wait(_for(envelope_id), 1, timeout, f"ack of {envelope_id}")[0]

    async def await_ack(
        self,
        envelope_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for_ack
    ) -> Ack:
        """`wait_for_ack` that lets the caller's event loop keep running."""
        acks = await self._hub.acks.wait_async(
            _for(envelope_id), 1, timeout, f"ack of {envelope_id}"
        )
        return acks[0]


def _for(envelope_id: str) -> Callable[[Ack], bool]:
    return lambda ack: ack.envelope_id == envelope_id
