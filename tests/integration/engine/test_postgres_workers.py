"""The shipped order flow end to end on PostgreSQL, worked by two replicas sharing the database.

Each replica has its own engine, connection pool and HTTP client and runs the
real worker loop; orders are started on both, and shipping answers 503 twice,
so retry timers are up for grabs by either worker. Every call that succeeds
happens once per run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.definitions.loader import load_flows
from bot.demo.services import DemoServices
from bot.engine.operations import Actor
from bot.engine.states import RunState
from bot.store import Store, open_database
from bot.worker import run_worker
from tests.integration.engine.support import replica

FLOWS_DIR = Path(__file__).resolve().parents[3] / "flows"
ORDERS = 6


@pytest.fixture
async def demo() -> AsyncIterator[DemoServices]:
    async with DemoServices(billing_token="test-billing-token") as services:
        yield services


@pytest.mark.postgres
async def test_two_workers_run_every_order_once(pg_url: str, demo: DemoServices) -> None:
    database = open_database(pg_url)
    await Store(database=database).migrate()
    await database.close()
    order_flow = load_flows(FLOWS_DIR).get("order-processing").definition
    env = {name.upper() + "_URL": demo.url(name) for name in ("inventory", "billing", "shipping")}
    env |= {"ACCOUNTING_URL": demo.url("accounting"), "BILLING_TOKEN": demo.billing_token}
    demo.fail("POST /shipping/shipments", status=503, times=2)
    orderer = Actor(user="U0OPS", channel="C0ORDERS", via="test")

    async with (
        replica(pg_url, [order_flow], environ=env) as first,
        replica(pg_url, [order_flow], environ=env) as second,
    ):
        stop = asyncio.Event()
        loops = [
            asyncio.create_task(run_worker(one.engine, one.outbox, stop=stop))
            for one in (first, second)
        ]
        runs = []
        for number in range(ORDERS):
            starter = (first, second)[number % 2]
            inputs = {
                "order_id": str(1000 + number),
                "customer": f"buyer{number}@example.com",
                "sku": "SKU-1",
                "amount": "99.5",
            }
            runs.append(await starter.operations.start("order-processing", inputs, orderer))
        deadline = time.monotonic() + 20
        while True:
            states = [(await first.store.get_run(run.id)).state for run in runs]
            if all(state.finished for state in states) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*loops)
        for one in (first, second):
            await one.engine.drain_flights()
            await one.outbox.deliver()
        attempts = {run.id: await first.store.attempts(run.id) for run in runs}
        texts = first.chat.texts + second.chat.texts

    assert states == [RunState.SUCCEEDED] * ORDERS
    assert len(demo.requests("/inventory/items")) == ORDERS
    assert len(demo.requests("/inventory/reservations")) == ORDERS
    assert len(demo.requests("/billing/invoices")) == ORDERS
    assert len(demo.requests("/shipping/shipments")) == ORDERS + 2
    assert len(demo.requests("/accounting/entries")) == ORDERS
    assert demo.duplicates == 0
    for path in ("/inventory/reservations", "/billing/invoices", "/accounting/entries"):
        assert all(count == 1 for count in demo.keys_seen(path).values()), path
    shipping_keys = demo.keys_seen("/shipping/shipments")
    assert len(shipping_keys) == ORDERS
    assert sum(shipping_keys.values()) == ORDERS + 2
    for tries in attempts.values():
        assert all(a.outcome == "succeeded" for a in tries if a.step_key != "request_shipment")
    assert sum("is on its way" in text for text in texts) == ORDERS
