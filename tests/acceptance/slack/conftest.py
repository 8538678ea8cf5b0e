"""`relay serve` in the test's event loop, on loopback, against the fake Slack.

The real Bolt app listens on 127.0.0.1 (a free port) and receives requests
signed as Slack signs them; its Web API client talks to `FakeSlack` over real
HTTP through `SLACK_API_URL`. The order flows call the demo stand-in services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.demo.services import DEFAULT_BILLING_TOKEN, SERVICES, DemoServices
from bot.engine.runner import Clock
from bot.engine.states import RunState
from bot.serve import serve
from bot.settings import load_settings
from bot.store import Store, open_database
from tests.fakeslack import FakeSlack, SentResponse, SlackRequest, SlackSender

ROOT = Path(__file__).resolve().parents[3]
SECRET = "test-signing-secret"

OPS = "U0ALICE"
"""In S0ORDEROPS: may run and operate order-processing."""
FINANCE = ("U0BOB", "U0CAROL")
"""Members of S0FINANCE, the finance approvers."""
OUTSIDER = "U0DAVE"
"""In no group: may run nothing."""

USERGROUPS = {"S0ORDEROPS": [OPS], "S0FINANCE": list(FINANCE)}
CHANNELS = ("C0ORDERS", "C0FINANCE", "C0ORDERALERT", "C0ORDERADMIN", "C0GENERAL", "C0ALERTS")


@dataclass
class Relay:
    """One running `relay serve` and what a test needs around it."""

    fake: FakeSlack
    sender: SlackSender
    services: DemoServices
    store: Store

    async def send(self, request: SlackRequest, **kwargs: Any) -> SentResponse:
        """Deliver a signed request; asserts Slack's 3-second limit was kept."""
        response = await self.sender.send(request, **kwargs)
        assert response.elapsed < 3.0, f"acknowledged after {response.elapsed:.2f} s"
        return response

    async def until(
        self, check: Callable[[], Awaitable[Any]] | Callable[[], Any], within: float = 10.0
    ) -> Any:
        """Poll ``check`` until it returns something truthy."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            if asyncio.get_running_loop().time() > deadline:
                runs = [
                    (run.id, run.state.value, run.error) for run in await self.store.list_runs()
                ]
                calls = [(call.method, call.args.get("channel")) for call in self.fake.calls]
                raise AssertionError(
                    f"gave up after {within} s; runs: {runs}; Slack calls: {calls}"
                )
            await asyncio.sleep(0.02)

    async def run_in(self, *states: RunState) -> Any:
        """Wait for the single run to reach one of ``states``; returns it."""

        async def check() -> Any:
            runs = await self.store.list_runs()
            return runs[0] if runs and runs[0].state in states else None

        return await self.until(check)

    def ephemeral_texts(self, user: str) -> list[str]:
        """Every ephemeral answer ``user`` got (its text, then its blocks as JSON)."""
        return [
            f"{m.get('text', '')} {json.dumps(m.get('blocks', []))}"
            for m in self.fake.ephemerals(user)
        ]


def write_flows(directory: Path, services: DemoServices, extra: Iterable[Path] = ()) -> None:
    """The shipped order flow, small flows for the edge cases, and any ``extra`` flow files."""
    directory.mkdir()
    for path in extra:
        (directory / path.name).write_text(path.read_text())
    (directory / "order-processing.yaml").write_text(
        (ROOT / "flows" / "order-processing.yaml").read_text()
    )
    (directory / "ping.yaml").write_text(
        f"""
name: ping
description: Call the echo route, then ask for a go-ahead.
permissions:
  run: {{users: [{OPS}, U0BOB]}}
  operate: {{users: [{OPS}]}}
alerts: {{channel: C0ALERTS}}
inputs:
  note: {{type: string, required: true, max_length: 50}}
  count: {{type: integer, default: 1, min: 1}}
steps:
  - id: call
    kind: http
    method: POST
    url: "{services.base_url}/echo"
    json: {{note: "{{{{ inputs.note }}}}"}}
    retry: {{attempts: 1}}
  - id: go
    kind: approval
    question: "Ship {{{{ inputs.note }}}}?"
    approvers: {{users: [U0BOB, U0CAROL]}}
    channel: C0GENERAL
"""
    )


@contextlib.asynccontextmanager
async def running_relay(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    socket: bool,
    clock: Clock | None = None,
    flows: Iterable[Path] = (),
) -> AsyncIterator[Relay]:
    """A running Relay wired to a fresh SQLite file, the fake Slack and the demo services.

    ``clock`` replaces the wall clock of the engine, the outbox and the chat (a test
    moves it to fire timers); ``flows`` are extra flow files to load.
    """
    fake = FakeSlack(
        users=[OPS, *FINANCE, OUTSIDER, "U0OPSLEAD1"], usergroups=USERGROUPS, channels=CHANNELS
    ).start()
    async with DemoServices() as services:
        for name in SERVICES:
            monkeypatch.setenv(f"{name.upper()}_URL", services.url(name))
        monkeypatch.setenv("BILLING_TOKEN", DEFAULT_BILLING_TOKEN)
        write_flows(tmp_path / "flows", services, flows)
        database_url = f"sqlite:///{tmp_path / 'relay.db'}"
        settings = load_settings(
            DATABASE_URL=database_url,
            RELAY_FLOWS_DIR=str(tmp_path / "flows"),
            SLACK_BOT_TOKEN=fake.bot_token,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_APP_TOKEN=fake.app_token,
            SLACK_API_URL=fake.api_url,
            RELAY_ALERT_CHANNEL="C0ALERTS",
            PORT=0,
        )
        stop = asyncio.Event()
        url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            serve(
                settings,
                socket=socket,
                host="127.0.0.1",
                stop=stop,
                ready=url.set_result,
                clock=clock,
            )
        )
        await asyncio.wait({server, url}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()
        base = (await url).removesuffix("/slack/events")
        database = open_database(database_url)
        try:
            async with SlackSender(base, SECRET) as sender:
                yield Relay(
                    fake=fake, sender=sender, services=services, store=Store(database=database)
                )
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(server, 10)
            await database.close()
            fake.stop()


@pytest.fixture
async def relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Relay]:
    """`relay serve` over HTTP."""
    async with running_relay(tmp_path, monkeypatch, socket=False) as running:
        yield running


@pytest.fixture
async def relay_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Relay]:
    """`relay serve --socket`: deliveries come over the fake's WebSocket."""
    async with running_relay(tmp_path, monkeypatch, socket=True) as running:
        yield running
