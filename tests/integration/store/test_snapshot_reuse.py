"""A store reuses the snapshots it committed or read while their version holds, and only then."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from bot.engine.records import Snapshot
from bot.errors import OperationRefused
from bot.store import Store, Tx, open_database
from bot.store.snapshots import SnapshotCache
from tests.integration.store.builders import (
    connect_every_reader,
    make_run,
    make_step,
    next_transition,
    statements_sent,
)


async def written(store: Store) -> Snapshot:
    """A run inserted and moved once through ``store``, so the store remembers it."""
    run = make_run()
    await store.transaction(lambda tx: tx.insert_run(run))

    def move(tx: Tx) -> Snapshot:
        before = tx.load(run.id)
        tx.write(before, next_transition(before, steps=(make_step(run.id),)))
        return before

    await store.transaction(move)
    return await store.snapshot(run.id)


def version_checks(store: Store) -> list[str]:
    """What loading a remembered snapshot sends: on SQLite nothing (see ``Tx.load``)."""
    return [] if store.database.dialect == "sqlite" else ["SELECT"]


def confirmed_load(run_id: str) -> Callable[[Tx], Snapshot]:
    """Load as the engine does before a decision that writes nothing."""

    def load(tx: Tx) -> Snapshot:
        loaded = tx.load(run_id)
        return loaded if tx.confirmed(loaded) else tx.load(run_id, fresh=True)

    return load


async def test_the_next_event_reuses_the_committed_snapshot(store: Store) -> None:
    after = await written(store)
    with statements_sent(store) as sent:
        loaded = await store.transaction(lambda tx: tx.load(after.run.id))
    assert loaded == after
    assert sent == version_checks(store), "at most a version check instead of five queries"
    with statements_sent(store) as sent:
        loaded = await store.transaction(confirmed_load(after.run.id))
    assert loaded == after
    assert sent == ["SELECT"], "confirmed with one version check"
    with statements_sent(store) as sent:
        await store.transaction(lambda tx: tx.load(after.run.id, fresh=True))
    assert sent == ["SELECT"] * 5


@asynccontextmanager
async def another_replica(store: Store) -> AsyncIterator[Store]:
    """A second store on ``store``'s database, with a snapshot cache of its own."""
    other = Store(database=open_database(store.database.url.render_as_string(False)))
    try:
        yield other
    finally:
        await other.database.close()


async def test_a_run_found_by_prefix_is_remembered_for_the_next_event(store: Store) -> None:
    after = await written(store)
    async with another_replica(store) as other:
        await other.transaction(lambda tx: None)
        found = await other.find_snapshot(after.run.id[:6])
        assert found == after
        with statements_sent(other) as sent:
            loaded = await other.transaction(lambda tx: tx.load(after.run.id))
        assert loaded == after
        assert sent == version_checks(other), "the vote's transaction at most checks the version"


async def moved_by_another_replica(store: Store, run_id: str) -> None:
    """Add step ``b`` to the run through a second store on the same database."""

    def move(tx: Tx) -> None:
        before = tx.load(run_id)
        tx.write(before, next_transition(before, now=30, steps=(make_step(run_id, "b"),)))

    async with another_replica(store) as other:
        await other.transaction(move)


async def test_a_run_moved_by_another_replica_is_read_again(store: Store) -> None:
    after = await written(store)
    await moved_by_another_replica(store, after.run.id)
    loaded = await store.transaction(confirmed_load(after.run.id))
    assert loaded.run.version == after.run.version + 1
    assert set(loaded.steps) == {"fetch", "b"}


async def test_a_write_on_a_run_moved_by_another_replica_is_refused_once(store: Store) -> None:
    after = await written(store)
    await moved_by_another_replica(store, after.run.id)

    def move(tx: Tx) -> None:
        before = tx.load(after.run.id)
        tx.write(before, next_transition(before, now=50, steps=(make_step(after.run.id, "c"),)))

    if store.database.dialect == "postgresql":
        await store.transaction(move)  # the load checked the version, and read afresh
        return
    with pytest.raises(OperationRefused):
        await store.transaction(move)
    # Refused once: what the store remembered of the run was dropped with it.
    loaded = await store.transaction(lambda tx: tx.load(after.run.id))
    assert loaded.run.version == after.run.version + 1


async def test_rendering_reuses_the_committed_snapshot_once_per_run(store: Store) -> None:
    after = await written(store)
    await connect_every_reader(store)
    with statements_sent(store) as sent:
        found = await store.snapshots_with_attempts([after.run.id, after.run.id, "missing"])
    assert set(found) == {after.run.id}
    assert found[after.run.id][0] == after
    # The run's version and its attempts, once although it was asked for twice
    # (a snapshot read is five), then the missing run's row, not found.
    assert sent == ["SELECT"] * 3


async def test_rendering_reads_a_run_moved_elsewhere_again(store: Store) -> None:
    after = await written(store)
    await moved_by_another_replica(store, after.run.id)
    ((snapshot, _),) = (await store.snapshots_with_attempts([after.run.id])).values()
    assert snapshot.run.version == after.run.version + 1
    assert set(snapshot.steps) == {"fetch", "b"}


async def test_a_rolled_back_write_is_not_remembered(store: Store) -> None:
    after = await written(store)

    def doomed(tx: Tx) -> None:
        before = tx.load(after.run.id)
        tx.write(before, next_transition(before, now=40, steps=(make_step(after.run.id, "x"),)))
        raise RuntimeError("after the write, before the commit")

    with pytest.raises(RuntimeError):
        await store.transaction(doomed)
    loaded = await store.transaction(lambda tx: tx.load(after.run.id))
    assert loaded == after


def test_an_older_snapshot_never_replaces_a_newer_one() -> None:
    cache = SnapshotCache(capacity=2)
    run = make_run()
    old = Snapshot(run=run, steps={}, approvals={}, votes=(), timers=())
    new = replace(old, run=replace(run, version=run.version + 1))
    cache.remember(new)
    cache.remember(old)
    assert cache.get(run.id) is new
    for _ in range(2):
        cache.remember(Snapshot(run=make_run(), steps={}, approvals={}, votes=(), timers=()))
    assert cache.get(run.id) is None, "the least recently used run falls out"


def test_a_snapshot_found_stale_is_not_taken_back_from_a_late_read() -> None:
    cache = SnapshotCache()
    run = make_run()
    old = Snapshot(run=run, steps={}, approvals={}, votes=(), timers=())
    cache.remember(old)
    cache.forget(run.id, stale=run.version)
    assert cache.get(run.id) is None
    cache.remember(old)  # a read that began before the other process's commit
    assert cache.get(run.id) is None
    new = replace(old, run=replace(run, version=run.version + 1))
    cache.remember(new)
    assert cache.get(run.id) is new
    cache.remember(old)
    assert cache.get(run.id) is new
