"""The chat outbox: written with transitions, claimed under leases, finished or deferred."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from bot.engine.events import ChatEffect
from bot.store import OutboxItem, Store, Tx
from tests.integration.store.builders import (
    at,
    effect,
    make_attempt,
    make_audit,
    make_run,
    make_step,
    next_transition,
    statements_sent,
)

LEASE = timedelta(seconds=30)


async def queue(store: Store, count: int, *, now: float = 10) -> tuple[str, list[int]]:
    run = make_run()
    effects = tuple(
        effect(run.id, "alert", step_key=f"s{n}", payload={"n": n}) for n in range(count)
    )

    def work(tx: Tx) -> None:
        tx.insert_run(run)
        before = tx.load(run.id)
        tx.write(before, next_transition(before, now=now, chat=effects))

    await store.transaction(work)
    ids = await store.database.read(
        lambda conn: list(conn.scalars(sa.text("SELECT id FROM outbox ORDER BY id")))
    )
    return run.id, ids


async def test_claim_returns_due_items_with_their_payload(store: Store) -> None:
    run_id, ids = await queue(store, 2, now=10)
    assert await store.claim_outbox("w1", at(9), lease=LEASE) == [], "not due yet"
    items = await store.claim_outbox("w1", at(10), lease=LEASE)
    assert items == [
        OutboxItem(
            id=ids[n],
            run_id=run_id,
            kind="alert",
            step_key=f"s{n}",
            payload={"n": n},
            tries=0,
            created_at=at(10),
        )
        for n in range(2)
    ]


async def test_a_lease_hides_items_until_it_expires(store: Store) -> None:
    _, ids = await queue(store, 3)
    first = await store.claim_outbox("w1", at(10), limit=2, lease=LEASE)
    assert [item.id for item in first] == ids[:2]
    second = await store.claim_outbox("w2", at(20), lease=LEASE)
    assert [item.id for item in second] == ids[2:]
    assert await store.claim_outbox("w2", at(39), lease=LEASE) == []
    again = await store.claim_outbox("w2", at(41), lease=LEASE)
    assert [item.id for item in again] == ids[:2], "w1 stopped renewing: its items come back"


async def test_defer_counts_the_failure_and_delays_the_item(store: Store) -> None:
    _, ids = await queue(store, 1)
    await store.claim_outbox("w1", at(10), lease=LEASE)
    await store.defer_outbox(ids[0], until=at(100), error="slack said ratelimited")
    assert await store.claim_outbox("w1", at(99), lease=LEASE) == []
    (item,) = await store.claim_outbox("w1", at(100), lease=LEASE)
    assert item.tries == 1
    error = await store.database.read(
        lambda conn: conn.scalar(sa.text("SELECT last_error FROM outbox"))
    )
    assert error == "slack said ratelimited"


async def test_finish_deletes_delivered_items(store: Store) -> None:
    _, ids = await queue(store, 3)
    await store.claim_outbox("w1", at(10), lease=LEASE)
    await store.finish_outbox(ids[:2])
    await store.finish_outbox([])
    assert await store.count_outbox() == 1
    (left,) = await store.claim_outbox("w1", at(1000), lease=LEASE)
    assert left.id == ids[2]


async def test_concurrent_claimers_never_share_an_item(store: Store) -> None:
    _, ids = await queue(store, 40)
    start = asyncio.Event()

    async def claimer(name: str) -> list[int]:
        await start.wait()
        got: list[int] = []
        while batch := await store.claim_outbox(name, at(10), limit=3, lease=LEASE):
            got.extend(item.id for item in batch)
        return got

    tasks = [asyncio.create_task(claimer(f"w{n}")) for n in range(4)]
    start.set()
    async with asyncio.timeout(30):
        batches = await asyncio.gather(*tasks)
    claimed = [item for batch in batches for item in batch]
    assert sorted(claimed) == ids


async def test_a_typical_transition_is_six_statements_or_five(store: Store) -> None:
    run = make_run()
    await store.transaction(lambda tx: tx.insert_run(run))

    def work(seq: int) -> Callable[[Tx], list[str]]:
        def write(tx: Tx) -> list[str]:
            before = tx.load(run.id)
            transition = next_transition(
                before,
                steps=(make_step(run.id),),
                attempts=(make_attempt(run.id),),
                audit=(make_audit(run.id, seq),),
                chat=(effect(run.id),),
            )
            with statements_sent(store) as sent:
                tx.write(before, transition)
            return sent

        return write

    written = ["UPDATE", "INSERT", "INSERT", "INSERT", "SELECT"]
    assert await store.transaction(work(1)) == [*written, "INSERT"]
    assert await store.transaction(work(2)) == written, "the status edit already waits"


async def targets(store: Store) -> list[tuple[str, str, int]]:
    """Each outbox row's kind, step and tries, oldest first."""
    return await store.database.read(
        lambda conn: [
            tuple(row)
            for row in conn.execute(sa.text("SELECT kind, step_key, tries FROM outbox ORDER BY id"))
        ]
    )


async def test_a_status_or_approval_edit_waiting_unclaimed_stands_for_later_ones(
    store: Store,
) -> None:
    run = make_run()
    await store.transaction(lambda tx: tx.insert_run(run))

    async def transition(*effects: ChatEffect) -> None:
        def work(tx: Tx) -> None:
            before = tx.load(run.id)
            tx.write(before, next_transition(before, chat=effects))

        await store.transaction(work)

    await transition(effect(run.id), effect(run.id), effect(run.id, "approval", step_key="ok"))
    await transition(effect(run.id), effect(run.id, "approval", step_key="ok"))
    await transition(effect(run.id, "approval", step_key="other"), effect(run.id, "alert"))
    await transition(effect(run.id, "alert"))
    assert await targets(store) == [
        ("run", "", 0),
        ("approval", "ok", 0),
        ("approval", "other", 0),
        ("alert", "", 0),
        ("alert", "", 0),
    ], "one row per waiting edit; alerts are each their own message"

    (status,) = await store.claim_outbox("w1", at(10), limit=1, lease=LEASE)
    await transition(effect(run.id))
    assert len(await targets(store)) == 6, "a claimed edit may have rendered already"
    rest = await store.claim_outbox("w2", at(10), lease=LEASE)
    await store.finish_outbox([item.id for item in rest])
    await store.defer_outbox(status.id, until=at(99), error="chat down")
    await transition(effect(run.id))
    assert await targets(store) == [("run", "", 1), ("run", "", 0)], "nor waits for a retry"
