"""``relay serve``: the engine's worker and the Slack app in one process.

Both share one event loop, one engine and one database pool: a click handled
by the app moves the run at once, and the worker loop fires timers, resumes
what a dead replica left and delivers messages. Several replicas may run
against one database, as processes of one ``relay serve --processes N``
(``bot.prefork``) or on separate machines with PostgreSQL; each delivery and
each step is claimed in the database, never in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.runner import Clock
from bot.engine.states import RunState
from bot.errors import ConfigError
from bot.heap import freeze_startup
from bot.settings import Settings
from bot.slack.bolt_app import bolt_app, slack_session, web_client
from bot.slack.chat import SlackChat
from bot.slack.directory import SlackDirectory
from bot.slack.handlers import Handlers
from bot.slack.home import HomeTab
from bot.store.runs import Store
from bot.web import SLACK_PATH, web_application
from bot.wiring import Services, build_services
from bot.worker import run_worker, stop_on_signals

log = logging.getLogger("relay.serve")

DELIVERY_MEMORY = timedelta(days=1)
PRUNE_EVERY = timedelta(hours=1)

BAD_TOKEN = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})


@dataclass(frozen=True, kw_only=True)
class SlackRuntime:
    """The engine's services with Slack as their chat, and what the Slack app needs."""

    services: Services
    client: AsyncWebClient
    home: HomeTab


@contextlib.asynccontextmanager
async def slack_runtime(
    settings: Settings, *, client: AsyncWebClient | None = None, clock: Clock | None = None
) -> AsyncIterator[SlackRuntime]:
    """Build the services around a SlackChat; ``relay serve`` and ``relay worker`` share it.

    A worker in a Slack deployment must speak Slack too: whichever process
    delivers a message, it reaches the same channel.
    """
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            session = await stack.enter_async_context(slack_session())
            client = web_client(settings, session=session)
        async with _runtime(settings, client=client, clock=clock) as runtime:
            yield runtime


@contextlib.asynccontextmanager
async def _runtime(
    settings: Settings, *, client: AsyncWebClient, clock: Clock | None
) -> AsyncIterator[SlackRuntime]:
    directory = SlackDirectory(client=client)
    chats: list[SlackChat] = []

    def make_chat(store: Store) -> SlackChat:
        chat = SlackChat(
            client=client,
            store=store,
            alert_channel=settings.alert_channel,
            clock=clock,
            directory=directory,
        )
        chats.append(chat)
        return chat

    await _check_token(client)
    async with build_services(
        settings, make_chat=make_chat, directory=directory, clock=clock
    ) as services:
        home = HomeTab(client=client, operations=services.operations, clock=services.engine.clock)
        chats[0].people_changed = home.soon
        try:
            yield SlackRuntime(services=services, client=client, home=home)
        finally:
            await home.close()


async def serve(
    settings: Settings,
    *,
    socket: bool = False,
    host: str = "0.0.0.0",
    stop: asyncio.Event | None = None,
    ready: Callable[[str], None] | None = None,
    clock: Clock | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve until ``stop`` is set (or SIGINT / SIGTERM); ``ready`` gets the listening URL.

    ``reuse_port`` lets other processes listen on the same port (``bot.prefork``).
    """
    async with slack_session() as session:
        client = web_client(settings, session=session)
        app = bolt_app(settings, client, socket=socket)
        async with slack_runtime(settings, client=client, clock=clock) as runtime:
            await _serve(
                runtime,
                app,
                settings,
                socket=socket,
                host=host,
                reuse_port=reuse_port,
                stop=stop,
                ready=ready,
            )


async def _serve(
    runtime: SlackRuntime,
    app: AsyncApp,
    settings: Settings,
    *,
    socket: bool,
    host: str,
    reuse_port: bool,
    stop: asyncio.Event | None,
    ready: Callable[[str], None] | None,
) -> None:
    services = runtime.services
    handlers = Handlers(services=services, client=runtime.client, home=runtime.home)
    handlers.register(app)
    stop = stop or stop_on_signals()
    # Before listening: the collection holds the loop for a moment, and no
    # request should wait on it.
    freeze_startup()

    async def healthy() -> bool:
        try:
            await services.store.count_runs(states=[RunState.RUNNING])
        except Exception:
            log.warning("health check: the database does not answer", exc_info=True)
            return False
        return True

    worker = asyncio.create_task(
        run_worker(services.engine, services.outbox, stop=stop, scheduler=services.scheduler),
        name="worker",
    )
    housekeeping = asyncio.create_task(_forget_old_deliveries(services, stop))
    async with _listening(
        app, settings, socket=socket, host=host, reuse_port=reuse_port, healthy=healthy
    ) as url:
        log.info("Relay is listening on %s", url)
        if ready is not None:
            ready(url)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        stopped.cancel()
    await handlers.close()
    await worker
    await housekeeping


async def _forget_old_deliveries(services: Services, stop: asyncio.Event) -> None:
    """Once an hour, drop Slack delivery ids older than a day (see ``forget_deliveries``)."""
    while not stop.is_set():
        horizon = services.engine.clock.now() - DELIVERY_MEMORY
        try:
            await services.store.forget_deliveries(before=horizon)
        except Exception:
            log.warning("could not prune old Slack delivery ids", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PRUNE_EVERY.total_seconds())


@contextlib.asynccontextmanager
async def _listening(
    app: AsyncApp,
    settings: Settings,
    *,
    socket: bool,
    host: str,
    reuse_port: bool,
    healthy: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Accept Slack's deliveries over HTTP or Socket Mode while the block runs."""
    if socket:
        token = settings.slack_app_token
        assert token is not None
        handler = AsyncSocketModeHandler(app, token.get_secret_value())
        await handler.connect_async()  # type: ignore[no-untyped-call]
        try:
            yield "Socket Mode"
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]
        return
    runner = web.AppRunner(web_application(app, healthy=healthy), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, settings.port, reuse_port=reuse_port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{settings.port}: {exc.strerror}") from None
        port = runner.addresses[0][1]
        yield f"http://{host}:{port}{SLACK_PATH}"
    finally:
        await runner.cleanup()


async def _check_token(client: AsyncWebClient) -> None:
    """Refuse to start with a token Slack rejects; start anyway if Slack is just down."""
    try:
        await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in BAD_TOKEN:
            raise ConfigError(f"Slack refused SLACK_BOT_TOKEN ({error}): check the token") from None
        log.warning("auth.test failed (%s); starting anyway", error)
    except Exception as exc:
        log.warning("Slack is unreachable (%s); starting anyway, messages will catch up", exc)
