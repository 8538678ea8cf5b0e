"""Read queries and the small writes outside events: lists, lookups, leases, chat refs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import fields
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bot.engine import records
from bot.engine.states import RunState, StepState, TimerPurpose
from bot.errors import RunNotFound
from bot.store import Store, Tx, tables
from tests.integration.store.builders import (
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


async def add(store: Store, run: records.Run, **transition: Any) -> records.Run:
    """Insert ``run`` and, if given, write one transition's rows for it."""

    def work(tx: Tx) -> records.Run:
        tx.insert_run(run)
        if transition:
            before = tx.load(run.id)
            change = next_transition(before, **transition)
            tx.write(before, change)
            return change.run
        return run

    return await store.transaction(work)


def test_every_record_field_has_a_column() -> None:
    pairs = [
        (records.Run, tables.runs),
        (records.StepRun, tables.step_runs),
        (records.Attempt, tables.attempts),
        (records.Approval, tables.approvals),
        (records.Vote, tables.votes),
        (records.Timer, tables.timers),
        (records.AuditEntry, tables.audit),
    ]
    for record, table in pairs:
        assert {field.name for field in fields(record)} <= set(table.c.keys()), record


async def test_list_runs_filters_and_orders_newest_first(store: Store) -> None:
    a = await add(store, make_run("aaaa0001", created_at=at(1)))
    b = await add(store, make_run("aaaa0002", created_at=at(2), flow="backup", started_by="U9"))
    c = await add(store, make_run("aaaa0003", created_at=at(3), state=RunState.FAILED))
    d = await add(store, make_run("aaaa0004", created_at=at(3)))
    assert await store.list_runs() == [d, c, b, a]
    assert await store.list_runs(limit=2) == [d, c]
    assert await store.list_runs(flow="backup") == [b]
    assert await store.list_runs(started_by="U9") == [b]
    assert await store.list_runs(states=[RunState.FAILED, RunState.CANCELLED]) == [c]
    assert await store.list_runs(states=[]) == []
    assert await store.list_runs(since=at(2)) == [d, c, b]
    assert await store.list_runs(flow="deploy", states=[RunState.RUNNING], since=at(1)) == [d, a]


async def run_of_snapshot(store: Store, prefix: str) -> records.Run:
    return (await store.find_snapshot(prefix)).run


@pytest.mark.parametrize(
    "find", [Store.find_run, run_of_snapshot], ids=["find_run", "find_snapshot"]
)
async def test_find_run_by_id_or_unique_prefix(
    store: Store, find: Callable[[Store, str], Awaitable[records.Run]]
) -> None:
    one = await add(store, make_run("7f3a9c01"))
    await add(store, make_run("7f3a9c02"))
    longer = await add(store, make_run("5b2e77aa01"))
    short = await add(store, make_run("5b2e77aa"))
    assert await find(store, "7f3a9c01") == one
    assert await find(store, " 5b2e77aa0 ") == longer
    assert await find(store, "5b2e77aa") == short, "an exact id wins over longer ids"
    with pytest.raises(RunNotFound) as ambiguous:
        await find(store, "7f3a")
    assert "7f3a9c01" in ambiguous.value.message and "7f3a9c02" in ambiguous.value.message
    assert ambiguous.value.fields["candidates"] == ["7f3a9c01", "7f3a9c02"]
    with pytest.raises(RunNotFound, match="no run id starts with"):
        await find(store, "ffff")
    with pytest.raises(RunNotFound, match="at least 4"):
        await find(store, "7f3")
    with pytest.raises(RunNotFound):
        await find(store, "7f3%")
    with pytest.raises(RunNotFound):
        await find(store, "7f3_9c01")
    with pytest.raises(RunNotFound):
        await find(store, "7F3A9C01")


async def test_attempts_audit_and_audited_runs(store: Store) -> None:
    run = make_run()
    later = [make_attempt(run.id, "b", 1), make_attempt(run.id, "a", 2)]
    await add(
        store,
        run,
        attempts=(later[1], later[0]),
        audit=(make_audit(run.id, 2), make_audit(run.id, 1)),
    )
    quiet = await add(store, make_run())
    assert await store.attempts(run.id) == later
    assert [entry.seq for entry in await store.audit(run.id)] == [1, 2]
    assert await store.audited_run_ids() == [run.id]
    assert await store.attempts(quiet.id) == []


async def test_due_timers_are_the_ones_due_earliest_first(store: Store) -> None:
    run = make_run()
    late = make_timer(run.id, "a", TimerPurpose.WAIT, due=30)
    early = make_timer(run.id, "b", TimerPurpose.REMINDER, due=10)
    future = make_timer(run.id, "c", TimerPurpose.RETRY, due=31)
    await add(store, run, timers_set=(late, early, future))
    assert await store.due_timers(at(30)) == [early, late]
    assert await store.due_timers(at(30), limit=1) == [early]
    assert await store.due_timers(at(9)) == []


async def test_expired_leases_are_running_steps_past_their_lease(store: Store) -> None:
    run = make_run()
    lapsed = make_step(run.id, "a", lease_until=at(5))
    held = make_step(run.id, "b", lease_until=at(50))
    done = make_step(run.id, "c", state=StepState.SUCCEEDED, lease_until=at(1))
    await add(store, run, steps=(lapsed, held, done))
    assert await store.expired_leases(at(10)) == [lapsed]
    assert await store.expired_leases(at(60)) == [lapsed, held]
    assert await store.expired_leases(at(60), limit=1) == [lapsed]


async def test_leased_on_is_running_steps_leased_on_that_host(store: Store) -> None:
    run = make_run()
    here = make_step(run.id, "a", lease_owner="web_1:41:ab")
    elsewhere = make_step(run.id, "b", lease_owner="web-2:41:ab")
    lookalike = make_step(run.id, "c", lease_owner="webx1:41:ab")
    finished = make_step(run.id, "d", state=StepState.SUCCEEDED, lease_owner="web_1:9:cd")
    await add(store, run, steps=(here, elsewhere, lookalike, finished))
    assert await store.leased_on("web_1") == [here]
    assert await store.leased_on("web-2") == [elsewhere]


async def test_lease_owners_on_a_host_hold_running_steps_or_outbox_rows(store: Store) -> None:
    run = make_run()
    steps = (
        make_step(run.id, "a", lease_owner="web_1:41:ab"),
        make_step(run.id, "b", lease_owner="webx1:42:ab"),
        make_step(run.id, "c", lease_owner="web%1:43:ab"),
        make_step(run.id, "d", state=StepState.SUCCEEDED, lease_owner="web_1:9:cd"),
    )
    await add(store, run, steps=steps, chat=(effect(run.id),))
    await store.claim_outbox("web_1:7:ef", at(10_000), lease=timedelta(seconds=60))
    assert await store.lease_owners_on("web_1") == {"web_1:41:ab", "web_1:7:ef"}
    assert await store.lease_owners_on("web%1") == {"web%1:43:ab"}, "% is no wildcard"
    assert await store.lease_owners_on("web") == set()


async def test_renew_leases_only_where_still_held(store: Store) -> None:
    run = make_run()
    mine = make_step(run.id, "a", lease_owner="me")
    theirs = make_step(run.id, "b", lease_owner="them")
    finished = make_step(run.id, "c", lease_owner="me", state=StepState.SUCCEEDED)
    await add(store, run, steps=(mine, theirs, finished))
    keys = {(run.id, "a"), (run.id, "b"), (run.id, "c"), (run.id, "gone")}
    assert await store.renew_leases("me", keys, at(500)) == {(run.id, "a")}
    steps = (await store.snapshot(run.id)).steps
    assert steps["a"].lease_until == at(500)
    assert steps["b"].lease_until == theirs.lease_until
    assert steps["c"].lease_until == finished.lease_until
    assert await store.renew_leases("me", set(), at(600)) == set()


async def test_runs_in_state_least_recently_updated_first(store: Store) -> None:
    older = await add(store, make_run(updated_at=at(1)))
    newer = await add(store, make_run(updated_at=at(2)))
    await add(store, make_run(state=RunState.SUCCEEDED))
    waiting = await add(store, make_run(state=RunState.WAITING, updated_at=at(3)))
    assert await store.runs_in_state([RunState.RUNNING], 10) == [older.id, newer.id]
    assert await store.runs_in_state([RunState.RUNNING, RunState.WAITING], 2) == [
        older.id,
        newer.id,
    ]
    assert await store.runs_in_state([RunState.WAITING], 10) == [waiting.id]


async def test_pending_approvals_with_their_run_and_step(store: Store) -> None:
    run = make_run()
    step = make_step(run.id, "ok", kind="approval", state=StepState.WAITING)
    pending = make_approval(run.id, "ok", deadline=at(99))
    decided_step = make_step(run.id, "old", kind="approval", state=StepState.SUCCEEDED)
    decided = make_approval(run.id, "old", state="approved", decided_by=("U1",))
    after = await add(
        store,
        run,
        run_fields={"state": RunState.WAITING},
        steps=(step, decided_step),
        approvals=(pending, decided),
    )
    assert await store.pending_approvals() == [(after, step, pending)]
    assert await store.pending_approvals(limit=0) == []


async def test_waiting_children_finds_finished_children_of_waiting_parents(store: Store) -> None:
    parent = make_run()
    waiting = make_step(parent.id, "sub", kind="flow", state=StepState.WAITING)
    done = make_step(parent.id, "sub2", kind="flow", state=StepState.SUCCEEDED)
    running = make_step(parent.id, "sub3", kind="flow", state=StepState.WAITING)
    await add(store, parent, steps=(waiting, done, running))
    finished = make_run(parent_run_id=parent.id, parent_step_key="sub", state=RunState.FAILED)
    told = make_run(parent_run_id=parent.id, parent_step_key="sub2", state=RunState.SUCCEEDED)
    busy = make_run(parent_run_id=parent.id, parent_step_key="sub3")
    for child in (finished, told, busy):
        await add(store, child)
    assert await store.waiting_children() == [(parent.id, "sub", finished.id)]


async def test_set_chat_ref_merges_without_a_version_bump(store: Store) -> None:
    run = await add(store, make_run(chat={"channel": "C1"}))
    stale = await store.snapshot(run.id)
    await store.set_chat_ref(run.id, "ts", "1700000000.000100")
    await store.set_chat_ref(run.id, "thread", {"ts": "1.1", "n": 2})
    after = await store.get_run(run.id)
    assert after.version == run.version
    assert after.chat == {
        "channel": "C1",
        "ts": "1700000000.000100",
        "thread": {"ts": "1.1", "n": 2},
    }
    waiting = next_transition(stale, run_fields={"state": RunState.WAITING})
    await store.transaction(lambda tx: tx.write(stale, waiting))
    assert (await store.get_run(run.id)).chat == after.chat, "a transition keeps chat refs"
    current = await store.snapshot(run.id)
    reset = next_transition(current, run_fields={"chat": {"reset": True}})
    await store.transaction(lambda tx: tx.write(current, reset))
    assert (await store.get_run(run.id)).chat == {"reset": True}
    with pytest.raises(RunNotFound):
        await store.set_chat_ref("nope", "ts", "1")


async def test_counts(store: Store) -> None:
    run = make_run()
    await add(
        store,
        run,
        steps=(
            make_step(run.id, "a"),
            make_step(run.id, "b", state=StepState.RETRYING),
            make_step(run.id, "c", state=StepState.SUCCEEDED),
        ),
        chat=(effect(run.id), effect(run.id, "alert")),
    )
    await add(store, make_run(state=RunState.FAILED))
    assert await store.count_runs() == 2
    assert await store.count_runs(states=[RunState.FAILED]) == 1
    assert await store.count_steps() == 3
    assert await store.count_steps(states=[StepState.RUNNING, StepState.RETRYING]) == 2
    assert await store.count_outbox() == 2


async def test_deleting_a_run_cascades_to_its_rows(store: Store) -> None:
    run = make_run()
    await add(
        store,
        run,
        steps=(make_step(run.id),),
        attempts=(make_attempt(run.id),),
        approvals=(make_approval(run.id),),
        votes=(make_vote(run.id, "U1"),),
        timers_set=(make_timer(run.id),),
        audit=(make_audit(run.id, 1),),
        chat=(effect(run.id),),
    )
    delete = sa.delete(tables.runs).where(tables.runs.c.id == run.id)
    await store.database.write(lambda conn: conn.execute(delete))

    def counts(conn: sa.Connection) -> dict[str, Any]:
        return {
            table.name: conn.scalar(sa.select(sa.func.count()).select_from(table))
            for table in tables.metadata.sorted_tables
            if "run_id" in table.c and table is not tables.schedule_fires
        }

    left = await store.database.read(counts)
    assert left, "some tables hold run rows"
    for name, count in left.items():
        assert count == 0, name


async def test_foreign_keys_are_enforced(store: Store) -> None:
    orphan = {"run_id": "nope", "step_key": "a", "purpose": "wait", "due_at": at(1)}
    with pytest.raises(sa.exc.IntegrityError):
        await store.database.write(lambda conn: conn.execute(sa.insert(tables.timers), orphan))


async def test_old_delivery_ids_are_forgotten_and_recent_ones_kept(store: Store) -> None:
    def claim(tx: Tx) -> None:
        assert tx.claim_delivery("command", "old", at(0))
        assert tx.claim_delivery("command", "new", at(100))

    await store.transaction(claim)
    assert await store.forget_deliveries(before=at(50)) == 1

    def again(tx: Tx) -> None:
        assert tx.claim_delivery("command", "old", at(200)), "forgotten: claimable again"
        assert not tx.claim_delivery("command", "new", at(200)), "still remembered"

    await store.transaction(again)


async def test_the_outbox_can_be_claimed_for_one_run_and_its_sub_runs(store: Store) -> None:
    parent = await add(store, make_run("fam00001"), chat=(effect("fam00001"),))
    child = make_run("fam00002", parent_run_id=parent.id, parent_step_key="sub")
    await add(store, child, chat=(effect("fam00002"),))
    await add(store, make_run("other001"), chat=(effect("other001"),))
    assert await store.count_outbox(family=parent.id) == 2
    mine = await store.claim_outbox("me", at(10_000), lease=timedelta(seconds=60), family=parent.id)
    assert {item.run_id for item in mine} == {"fam00001", "fam00002"}
    rest = await store.claim_outbox("you", at(10_000), lease=timedelta(seconds=60))
    assert [item.run_id for item in rest] == ["other001"]
