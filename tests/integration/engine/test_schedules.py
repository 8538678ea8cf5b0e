"""Flow triggers start runs: the real APScheduler wakes, the database decides, once per fire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from bot.definitions.models import Trigger
from bot.demo.services import DemoServices
from bot.engine.records import Run
from bot.engine.states import RunState
from bot.scheduler import Scheduler
from bot.store.tables import schedule_fires
from bot.worker import follow, run_worker
from tests.integration.engine.support import MovableClock, Replica, flow, replica

TICKING = flow(
    """
name: ticking
inputs:
  label: {type: string}
services:
  echo: {env: ECHO_URL}
triggers:
  - schedule: "* * * * *"
    inputs: {label: "fired {{ run.source.fire_time }}"}
steps:
  - id: ping
    kind: http
    method: POST
    service: echo
    path: /echo
    json: {label: "{{ inputs.label }}"}
"""
)

PARIS = flow(
    """
name: paris-report
triggers:
  - schedule: "30 2 * * *"
    timezone: Europe/Paris
steps:
  - id: note
    kind: notify
    channel: C0REPORTS
    text: "report {{ run.source.fire_time }}"
"""
)

PLAIN = flow(
    """
name: plain
steps:
  - id: note
    kind: notify
    channel: C0REPORTS
    text: hello
"""
)


def every_second(trigger: Trigger) -> BaseTrigger:
    """Cron's finest unit is a minute; the alarm under test fires every second instead."""
    return CronTrigger(second="*", timezone=UTC)


@pytest.fixture
async def demo() -> AsyncIterator[DemoServices]:
    async with DemoServices() as services:
        yield services


async def fires(one: Replica) -> list[tuple[datetime, str]]:
    query = sa.select(schedule_fires.c.fire_time, schedule_fires.c.run_id).order_by(
        schedule_fires.c.fire_time
    )

    def work(conn: sa.Connection) -> list[tuple[datetime, str]]:
        return [(fire_time, run_id) for fire_time, run_id in conn.execute(query)]

    return await one.store.database.read(work)


async def work_for(seconds: float, *replicas: Replica, schedulers: list[Scheduler]) -> None:
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(run_worker(r.engine, r.outbox, stop=stop, scheduler=s))
        for r, s in zip(replicas, schedulers, strict=True)
    ]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*loops)
    for one in replicas:
        await one.engine.drain_flights()


async def test_worker_loop_starts_a_run_for_each_fire(sqlite_url: str, demo: DemoServices) -> None:
    env = {"ECHO_URL": demo.base_url}
    async with replica(sqlite_url, [TICKING], environ=env) as one:
        scheduler = Scheduler(engine=one.engine, timing=every_second)
        await work_for(2.2, one, schedulers=[scheduler])
        runs = await one.store.list_runs(flow="ticking")
        claimed = await fires(one)

    assert len(runs) >= 2
    assert sorted(run.id for run in runs) == sorted(run_id for _, run_id in claimed)
    fire_times = [fire_time for fire_time, _ in claimed]
    assert all(t.microsecond == 0 for t in fire_times)
    assert len(set(fire_times)) == len(fire_times)
    for run in runs:
        assert run.state is RunState.SUCCEEDED
        assert run.started_by == "schedule:* * * * *"
        assert run.source["via"] == "schedule"
        assert run.inputs == {"label": f"fired {run.source['fire_time']}"}
    bodies = [request.json()["label"] for request in demo.requests("/echo")]
    assert sorted(bodies) == sorted(run.inputs["label"] for run in runs)


async def test_two_replicas_start_each_fire_once(db_url: str, demo: DemoServices) -> None:
    env = {"ECHO_URL": demo.base_url}
    async with (
        replica(db_url, [TICKING], environ=env) as first,
        replica(db_url, [TICKING], environ=env) as second,
    ):
        schedulers = [Scheduler(engine=r.engine, timing=every_second) for r in (first, second)]
        await work_for(2.2, first, second, schedulers=schedulers)
        runs = await first.store.list_runs(flow="ticking")
        claimed = await fires(first)

    assert len(runs) >= 2
    assert len(claimed) == len(runs)
    assert len({fire_time for fire_time, _ in claimed}) == len(claimed)
    assert all(run.state is RunState.SUCCEEDED for run in runs)
    assert all(count == 1 for count in demo.keys_seen("/echo").values())
    assert len(demo.requests("/echo")) == len(runs)


async def test_concurrent_wakes_for_one_fire_start_one_run(db_url: str, demo: DemoServices) -> None:
    env = {"ECHO_URL": demo.base_url}
    clock = MovableClock(datetime(2026, 3, 2, 9, 0, 7, tzinfo=UTC))
    async with (
        replica(db_url, [TICKING], environ=env, clock=clock) as a,
        replica(db_url, [TICKING], environ=env, clock=clock) as b,
        replica(db_url, [TICKING], environ=env, clock=clock) as c,
        replica(db_url, [TICKING], environ=env, clock=clock) as d,
    ):
        schedulers = [Scheduler(engine=r.engine) for r in (a, b, c, d)]
        job = "schedule:ticking:0"
        results = await asyncio.gather(*(s.wake(job) for s in schedulers for _ in range(3)))
        for one in (a, b, c, d):
            await one.settle()
        started = [run for run in results if run is not None]
        assert len(started) == 1
        assert started[0].source["fire_time"] == "2026-03-02T09:00:00+00:00"
        assert [run.id for run in await a.store.list_runs()] == [started[0].id]
        assert await fires(a) == [(datetime(2026, 3, 2, 9, 0, tzinfo=UTC), started[0].id)]
    assert len(demo.requests("/echo")) == 1


async def test_fire_time_is_read_in_the_triggers_time_zone(sqlite_url: str) -> None:
    clock = MovableClock(datetime(2026, 1, 15, 1, 30, 40, tzinfo=UTC))  # 02:30:40 in Paris
    async with replica(sqlite_url, [PARIS], clock=clock) as one:
        scheduler = Scheduler(engine=one.engine)
        winter = await scheduler.wake("schedule:paris-report:0")
        clock.moment = datetime(2026, 7, 15, 0, 31, tzinfo=UTC)  # 02:31 in Paris (summer)
        summer = await scheduler.wake("schedule:paris-report:0")
        clock.moment = datetime(2026, 7, 16, 1, 30, tzinfo=UTC)  # 03:30 in Paris: no fire
        nothing = await scheduler.wake("schedule:paris-report:0")
        await one.settle()
        claimed = await fires(one)

    assert isinstance(winter, Run) and isinstance(summer, Run)
    assert nothing is None
    assert claimed == [
        (datetime(2026, 1, 15, 1, 30, tzinfo=UTC), winter.id),
        (datetime(2026, 7, 15, 0, 30, tzinfo=UTC), summer.id),
    ]
    assert winter.started_by == "schedule:30 2 * * *"
    assert winter.source["timezone"] == "Europe/Paris"


async def test_misfires_coalesce_within_the_grace_and_lapse_after_it(sqlite_url: str) -> None:
    fire = datetime(2026, 1, 15, 1, 30, tzinfo=UTC)
    clock = MovableClock(fire + timedelta(minutes=4, seconds=59))
    async with replica(sqlite_url, [PARIS], clock=clock) as one:
        late = await Scheduler(engine=one.engine).catch_up()
        again = await Scheduler(engine=one.engine).catch_up()
        clock.moment = fire + timedelta(days=1, minutes=5, seconds=1)
        lapsed = await Scheduler(engine=one.engine).catch_up()
        await one.settle()
        claimed = await fires(one)

    assert [run.source["fire_time"] for run in late] == [fire.isoformat()]
    assert again == []
    assert lapsed == []
    assert [fire_time for fire_time, _ in claimed] == [fire]


async def test_following_a_run_starts_no_scheduled_run(sqlite_url: str) -> None:
    async with replica(sqlite_url, [TICKING, PLAIN]) as one:
        run = await one.engine.create("plain", {}, started_by="U0OPS")
        finished = await follow(one.engine, one.outbox, run.id)
        listed = await one.store.list_runs()

    assert finished.state is RunState.SUCCEEDED
    assert [r.id for r in listed] == [run.id]
