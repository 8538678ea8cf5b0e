"""Write transactions: round trips of every record, the version guard, fire-once claims."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import UTC, timedelta, timezone, tzinfo
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from bot.engine.records import Snapshot
from bot.engine.states import Decision, RunState, StepState, TimerPurpose
from bot.errors import OperationRefused, RunNotFound
from bot.store import Database, Store, Tx, open_database
from bot.store.tables import UTCDateTime
from tests.conftest import elsewhere
from tests.integration.store.builders import (
    T0,
    at,
    effect,
    make_approval,
    make_attempt,
    make_audit,
    make_run,
    make_step,
    make_timer,
    make_vote,
    next_transition,
)


async def started(store: Store, **fields: Any) -> Snapshot:
    run = make_run(**fields)
    await store.transaction(lambda tx: tx.insert_run(run))
    return await store.snapshot(run.id)


def assert_utc(*values: Any) -> None:
    for value in values:
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0), value


async def test_insert_and_get_run_round_trip(store: Store) -> None:
    run = make_run(
        undo_plan=("fetch", "deploy"),
        error={"message": "boom", "status": 502},
        outputs={"url": "https://example.test", "n": 1.5},
        finished_at=at(99),
        audit_seq=4,
        audit_head="f" * 64,
        chat={"channel": "C1", "ts": "1.2"},
    )
    await store.transaction(lambda tx: tx.insert_run(run))
    back = await store.get_run(run.id)
    assert back == run
    assert isinstance(back.state, RunState)
    assert isinstance(back.undo_plan, tuple)
    assert_utc(back.created_at, back.updated_at, back.finished_at)


async def test_datetimes_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    east = timezone(timedelta(hours=5, minutes=30))
    run = make_run(created_at=T0.astimezone(east), updated_at=T0.astimezone(east))
    await store.transaction(lambda tx: tx.insert_run(run))
    back = await store.get_run(run.id)
    assert back.created_at == T0
    assert back.created_at.tzinfo == UTC


@pytest.mark.parametrize("micro", [0, 7, 999_999])
def test_datetimes_are_stored_as_sqlalchemys_sqlite_datetime_text(micro: int) -> None:
    # Databases written before UTCDateTime formatted the text itself must read the same.
    stock = sqlite.DATETIME()
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect)
    instant = T0.replace(microsecond=micro)
    text = ours.bind_processor(dialect)(instant)
    assert text == stock.bind_processor(dialect)(instant.replace(tzinfo=None))
    assert stock.result_processor(dialect, None)(text) == instant.replace(tzinfo=None)
    assert ours.result_processor(dialect, None)(text) == instant


def test_each_datetime_gets_its_own_text_however_often_it_repeats() -> None:
    dialect = sqlite.dialect()
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    first, second = T0, T0 + timedelta(microseconds=1)
    texts = [bind(value) for value in (first, first, second, first, T0.replace())]
    one, two = (
        value.replace(tzinfo=None).isoformat(" ", "microseconds") for value in (first, second)
    )
    assert texts == [one, one, two, one, one]


@pytest.mark.parametrize(
    "zone", [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
)
def test_an_instant_binds_to_the_same_utc_text_in_any_zone(zone: tzinfo) -> None:
    dialect = sqlite.dialect()
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    instant = T0.replace(microsecond=7)
    assert bind(instant.astimezone(zone)) == "2026-03-04 05:06:07.000007"


async def test_naive_datetimes_are_refused(store: Store) -> None:
    run = make_run(created_at=T0.replace(tzinfo=None))
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        await store.transaction(lambda tx: tx.insert_run(run))


async def test_write_round_trips_every_record_type(store: Store) -> None:
    before = await started(store)
    run_id = before.run.id
    child = make_run(parent_run_id=run_id, parent_step_key="sub", flow="child")
    steps = (
        make_step(run_id, "fetch", output={"items": [1, 2]}, failures=1, finish_seq=2),
        make_step(
            run_id,
            "ok",
            kind="approval",
            state=StepState.WAITING,
            lease_owner=None,
            lease_until=None,
            error={"message": "late"},
        ),
        make_step(run_id, "sub", kind="flow", state=StepState.WAITING, output=None),
    )
    transition = next_transition(
        before,
        run_fields={"state": RunState.WAITING, "undo_plan": ("fetch",)},
        steps=steps,
        attempts=(
            make_attempt(run_id, "fetch", 1, finished_at=at(5), outcome="failed", status=503),
            make_attempt(run_id, "fetch", 2, error="connection reset"),
        ),
        approvals=(make_approval(run_id, "ok", deadline=at(3600), decided_by=("U1", "U2")),),
        votes=(
            make_vote(
                run_id,
                "U1",
                reason="lgtm",
                fields={"ticket": "OPS-1"},
                via="slack",
                groups=("S-ops", "S-leads"),
            ),
            make_vote(run_id, "U2", decision=Decision.REJECTED, level=1),
        ),
        timers_set=(
            make_timer(run_id, "fetch", TimerPurpose.RETRY, due=20),
            make_timer(run_id, "ok", TimerPurpose.APPROVAL_TIMEOUT, due=3600),
        ),
        audit=(make_audit(run_id, 1), make_audit(run_id, 2, detail={"nested": {"a": [1]}})),
        chat=(effect(run_id, "run"), effect(run_id, "approval", step_key="ok", payload={"x": 1})),
        new_runs=(child,),
    )
    await store.transaction(lambda tx: tx.write(before, transition))
    queued = await store.claim_outbox("w", transition.run.updated_at, lease=timedelta(seconds=9))
    assert [(item.kind, item.step_key, item.payload) for item in queued] == [
        ("run", "", {}),
        ("approval", "ok", {"x": 1}),
    ]

    after = await store.snapshot(run_id)
    assert after.run == transition.run
    assert after.steps == {step.key: step for step in steps}
    assert after.approvals == {"ok": transition.approvals[0]}
    assert sorted(after.votes, key=lambda v: v.voter) == list(transition.votes)
    assert sorted(after.timers, key=lambda t: t.due_at) == list(transition.timers_set)
    assert all(isinstance(vote.decision, Decision) for vote in after.votes)
    assert all(isinstance(timer.purpose, TimerPurpose) for timer in after.timers)
    assert_utc(*(step.started_at for step in after.steps.values()))
    assert await store.attempts(run_id) == list(transition.attempts)
    assert await store.audit(run_id) == list(transition.audit)
    assert await store.get_run(child.id) == child
    assert await store.transaction(lambda tx: tx.load(run_id)) == after


async def test_write_upserts_changed_rows(store: Store) -> None:
    before = await started(store)
    run_id = before.run.id
    first = next_transition(
        before,
        steps=(make_step(run_id),),
        attempts=(make_attempt(run_id),),
        approvals=(make_approval(run_id),),
        votes=(make_vote(run_id, "U1"),),
    )

    def write_first(tx: Tx) -> Snapshot:
        tx.write(before, first)
        return tx.load(run_id)

    middle = await store.transaction(write_first)
    step = replace(middle.steps["fetch"], state=StepState.SUCCEEDED, output=[1], finished_at=at(9))
    attempt = replace(first.attempts[0], finished_at=at(9), outcome="succeeded", status=200)
    approval = replace(first.approvals[0], state="approved", decided_at=at(9), how="votes")
    vote = replace(first.votes[0], decision=Decision.REJECTED, reason="changed my mind")
    second = next_transition(
        middle, now=20, steps=(step,), attempts=(attempt,), approvals=(approval,), votes=(vote,)
    )
    await store.transaction(lambda tx: tx.write(middle, second))
    after = await store.snapshot(run_id)
    assert after.run.version == before.run.version + 2
    assert after.steps == {"fetch": step}
    assert after.approvals == {approval.step_key: approval}
    assert after.votes == (vote,)
    assert await store.attempts(run_id) == [attempt]


async def test_version_guard_refuses_a_stale_writer(store: Store) -> None:
    before = await started(store)
    moved = next_transition(before, steps=(make_step(before.run.id),))
    await store.transaction(lambda tx: tx.write(before, moved))
    stale = next_transition(
        before, run_fields={"state": RunState.FAILED}, audit=(make_audit(before.run.id, 1),)
    )
    with pytest.raises(OperationRefused, match="changed underneath"):
        await store.transaction(lambda tx: tx.write(before, stale))
    after = await store.snapshot(before.run.id)
    assert after.run.state is RunState.RUNNING
    assert after.run.version == before.run.version + 1
    assert await store.audit(before.run.id) == []


async def test_write_requires_the_version_to_move_on(store: Store) -> None:
    before = await started(store)
    unchanged = next_transition(before, run_fields={"version": before.run.version})
    with pytest.raises(ValueError, match="does not follow"):
        await store.transaction(lambda tx: tx.write(before, unchanged))


async def test_unchanged_transition_writes_nothing(store: Store) -> None:
    before = await started(store)
    transition = replace(
        next_transition(before, steps=(make_step(before.run.id),), chat=(effect(before.run.id),)),
        changed=False,
    )
    await store.transaction(lambda tx: tx.write(before, transition))
    assert await store.snapshot(before.run.id) == before
    assert await store.count_outbox() == 0


async def test_timers_cleared_and_set_again_end_up_set(store: Store) -> None:
    before = await started(store)
    run_id = before.run.id
    first = next_transition(
        before,
        timers_set=(make_timer(run_id, "a", due=5), make_timer(run_id, "b", TimerPurpose.WAIT)),
    )
    again = make_timer(run_id, "a", due=50)

    def work(tx: Tx) -> None:
        tx.write(before, first)
        middle = tx.load(run_id)
        second = next_transition(
            middle,
            timers_cleared=(("a", TimerPurpose.RETRY), ("b", TimerPurpose.WAIT)),
            timers_set=(again,),
        )
        tx.write(middle, second)

    await store.transaction(work)
    assert (await store.snapshot(run_id)).timers == (again,)


async def test_a_raising_block_rolls_everything_back(store: Store) -> None:
    run = make_run()

    def work(tx: Tx) -> None:
        tx.insert_run(run)
        assert tx.claim_delivery("slack", "evt-1", T0)
        raise RuntimeError

    with pytest.raises(RuntimeError):
        await store.transaction(work)
    with pytest.raises(RunNotFound):
        await store.get_run(run.id)
    assert await store.transaction(lambda tx: tx.claim_delivery("slack", "evt-1", T0))


async def test_missing_runs_raise_run_not_found(store: Store) -> None:
    with pytest.raises(RunNotFound):
        await store.get_run("nope")
    with pytest.raises(RunNotFound):
        await store.snapshot("nope")
    with pytest.raises(RunNotFound):
        await store.transaction(lambda tx: tx.load("nope"))


async def test_load_makes_writers_of_a_run_queue(store: Store) -> None:
    before = await started(store)
    holding = threading.Event()
    release = threading.Event()

    def first(tx: Tx) -> None:
        snap = tx.load(before.run.id)
        holding.set()
        assert release.wait(timeout=20), "never released"
        tx.write(snap, next_transition(snap))

    async def hold(database: Database) -> None:
        await Store(database=database).transaction(first)

    url = store.database.url.render_as_string(hide_password=False)
    try:
        async with asyncio.timeout(30):
            # The first writer is another replica: its work blocks its own loop, not this one.
            one = asyncio.create_task(elsewhere(url, hold))
            assert await asyncio.to_thread(holding.wait, 20)

            def second(tx: Tx) -> int:
                # As the engine loads: a remembered snapshot is confirmed before use.
                snap = tx.load(before.run.id)
                return (
                    snap if tx.confirmed(snap) else tx.load(snap.run.id, fresh=True)
                ).run.version

            two = asyncio.create_task(store.transaction(second))
            await asyncio.sleep(0.3)
            assert not two.done()
            release.set()
            await one
            assert await two == before.run.version + 1
    finally:
        release.set()


@pytest.mark.postgres
async def test_runs_locked_in_opposite_orders_refuse_one_side(pg_url: str) -> None:
    # PostgreSQL only: SQLite's BEGIN IMMEDIATE admits one writer, so no lock cycle can form.
    store = Store(database=open_database(pg_url))
    try:
        await store.migrate()
        a = (await started(store)).run.id
        b = (await started(store)).run.id
        both_hold = threading.Barrier(2, timeout=20)

        async def lock(first: str, then: str) -> str:
            def work(tx: Tx) -> None:
                tx.load(first)
                both_hold.wait()
                tx.load(then)

            async def replica(database: Database) -> None:
                await Store(database=database).transaction(work)

            # Each side is a replica of its own: its work blocks its own loop.
            try:
                await elsewhere(pg_url, replica)
            except OperationRefused:
                return "refused"
            return "done"

        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(lock(a, b), lock(b, a))
        assert sorted(outcomes) == ["done", "refused"]
    finally:
        await store.database.close()


async def test_take_timer_fires_once_under_concurrency(store: Store) -> None:
    before = await started(store)
    timer = make_timer(before.run.id)
    await store.transaction(
        lambda tx: tx.write(before, next_transition(before, timers_set=(timer,)))
    )
    start = asyncio.Event()

    async def take() -> bool:
        await start.wait()
        return await store.transaction(
            lambda tx: tx.take_timer(timer.run_id, timer.step_key, timer.purpose)
        )

    racers = [asyncio.create_task(take()) for _ in range(4)]
    start.set()
    async with asyncio.timeout(30):
        assert sorted(await asyncio.gather(*racers)) == [False, False, False, True]
    assert await store.due_timers(at(10_000)) == []


async def test_claim_delivery_dedupes_without_breaking_the_transaction(store: Store) -> None:
    run = make_run()

    def work(tx: Tx) -> None:
        assert tx.claim_delivery("slack", "Ev1", T0)
        assert not tx.claim_delivery("slack", "Ev1", at(1))
        assert tx.claim_delivery("slack", "Ev2", T0)
        assert tx.claim_delivery("hook", "Ev1", T0)
        tx.insert_run(run)

    await store.transaction(work)
    assert (await store.get_run(run.id)).id == run.id
    assert not await store.transaction(lambda tx: tx.claim_delivery("slack", "Ev1", at(2)))


async def test_concurrent_duplicate_deliveries_are_claimed_once(store: Store) -> None:
    async def claim() -> bool:
        return await store.transaction(lambda tx: tx.claim_delivery("slack", "Ev-race", T0))

    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*(claim() for _ in range(4)))
    assert sorted(outcomes) == [False] * 3 + [True]


async def test_claim_schedule_fire_once_per_flow_and_time(store: Store) -> None:
    def work(tx: Tx) -> None:
        assert tx.claim_schedule_fire("nightly", at(0), "run-1")
        assert not tx.claim_schedule_fire("nightly", at(0), "run-2")
        assert tx.claim_schedule_fire("nightly", at(86400), "run-3")
        assert tx.claim_schedule_fire("hourly", at(0), "run-4")

    await store.transaction(work)
    east = timezone(timedelta(hours=2))
    assert not await store.transaction(
        lambda tx: tx.claim_schedule_fire("nightly", at(0).astimezone(east), "run-5")
    )
