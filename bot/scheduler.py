"""Flow ``triggers`` start runs: APScheduler is the alarm clock, the database the truth.

Each trigger of each loaded flow is one APScheduler job (id
``schedule:<flow>:<n>``, memory job store, ``replace_existing=True``) whose only
work is to call ``Scheduler.wake``. The wake works out which fire it is for from
the trigger and the clock (the scheduled time, never "now") and starts the run
with ``Engine.create_scheduled``, which claims ``schedule_fires (flow,
fire_time)`` in the run's own transaction. Every replica (``relay worker``,
later ``relay serve``) runs the same jobs; the claim makes exactly one of them
start each fire, and nothing about a schedule lives only in memory.

Misfires: jobs coalesce (a backlog of missed fires becomes one run, for the
latest) and a fire starts at most ``GRACE`` after its time. A wake that comes
late (a blocked loop, a suspended host) or a restart inside the grace still
starts the fire it missed: ``start()`` catches up the latest fire of each
trigger within ``GRACE``, and a claim by another replica makes that a no-op.
Older fires are skipped with a warning: a nightly job hours late is better
started by a person who knows why it is late.

Cron strings mean what crontab(5) says, not what APScheduler 3 says: weekday
numbers count from Sunday = 0 (or 7), where APScheduler 3 counts from Monday, so
numbers are rewritten as day names; and when both day-of-month and weekday are
restricted, a day matching either fires. Times are read in the trigger's
``timezone``. A flow has at most one run per instant (``schedule_fires`` is keyed
on the flow): when two of its triggers fire together, the first listed starts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from bot.definitions.cron import crontab_trigger
from bot.definitions.inputs import coerce_inputs
from bot.definitions.models import FlowDef, Trigger
from bot.definitions.templating import render_data
from bot.engine.move import scope_of
from bot.engine.records import Run, evolve
from bot.engine.runner import Engine
from bot.errors import InputInvalid, TemplateError

log = logging.getLogger("relay.scheduler")

GRACE = timedelta(minutes=5)
"""How late a fire may still start a run (also APScheduler's ``misfire_grace_time``)."""


def trigger_timing(trigger: Trigger) -> BaseTrigger:
    """When a flow trigger fires, in crontab's meaning and the trigger's time zone."""
    return crontab_trigger(trigger.schedule, trigger.timezone)


@dataclass(frozen=True)
class Schedule:
    """One trigger of one flow, with the APScheduler trigger that times it."""

    flow: str
    index: int
    trigger: Trigger
    timing: BaseTrigger

    @property
    def job_id(self) -> str:
        return f"schedule:{self.flow}:{self.index}"

    @property
    def started_by(self) -> str:
        return f"schedule:{self.trigger.schedule}"

    def fires_at(self, moment: datetime) -> bool:
        """Whether ``moment`` is one of this trigger's fire times."""
        following: datetime | None = self.timing.get_next_fire_time(None, moment)
        return following == moment

    def latest(self, now: datetime, grace: timedelta) -> datetime | None:
        """The last fire time in ``[now - grace, now]``, in UTC; None if there is none."""
        latest: datetime | None = None
        moment = self.timing.get_next_fire_time(None, now - grace)
        while moment is not None and moment <= now:
            latest = moment
            moment = self.timing.get_next_fire_time(moment, moment + timedelta(microseconds=1))
        return None if latest is None else latest.astimezone(UTC)


def schedules_of(
    flows: Mapping[str, FlowDef], timing: Callable[[Trigger], BaseTrigger] = trigger_timing
) -> list[Schedule]:
    """Every trigger of every flow, in flow-name then file order."""
    return [
        Schedule(flow=name, index=index, trigger=trigger, timing=timing(trigger))
        for name in sorted(flows)
        for index, trigger in enumerate(flows[name].triggers)
    ]


class Scheduler:
    """Starts the runs flow triggers ask for, once per fire across every replica.

    ``timing`` turns a trigger into the APScheduler trigger that wakes it;
    tests pass one that fires every second, since cron's finest unit is a minute.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        grace: timedelta = GRACE,
        timing: Callable[[Trigger], BaseTrigger] = trigger_timing,
    ) -> None:
        self.engine = engine
        self.grace = grace
        self.schedules = {s.job_id: s for s in schedules_of(engine.flows, timing)}
        self._alarm: AsyncIOScheduler | None = None
        self._waking: set[asyncio.Task[Any]] = set()

    async def start(self) -> list[Run]:
        """Set the alarms, then start the fires missed within the grace; returns those runs.

        The alarms go first so that no fire falls between the catch-up and them;
        a fire both see is claimed once.
        """
        if self.schedules and self._alarm is None:
            alarm = AsyncIOScheduler(timezone=UTC)
            for schedule in self.schedules.values():
                alarm.add_job(
                    self.wake,
                    trigger=schedule.timing,
                    args=[schedule.job_id],
                    id=schedule.job_id,
                    name=f"{schedule.flow} {schedule.trigger.schedule}",
                    replace_existing=True,
                    coalesce=True,
                    misfire_grace_time=int(self.grace.total_seconds()),
                    max_instances=1,
                )
            alarm.start()
            self._alarm = alarm
        return await self.catch_up()

    async def stop(self) -> None:
        """Stop the alarms and let wakes already running finish their transaction."""
        alarm, self._alarm = self._alarm, None
        if alarm is None:
            return
        alarm.pause()
        await asyncio.gather(*self._waking, return_exceptions=True)
        alarm.shutdown(wait=False)
        # AsyncIOScheduler shuts down in a loop callback: let it run.
        await asyncio.sleep(0)

    async def catch_up(self) -> list[Run]:
        """Start the latest fire of each trigger within the grace, unless already started."""
        started = []
        for job_id in self.schedules:
            run = await self.wake(job_id)
            if run is not None:
                started.append(run)
        return started

    async def wake(self, job_id: str) -> Run | None:
        """APScheduler's target: start the fire of ``job_id`` that is due now, if any."""
        task = asyncio.current_task()
        if task is not None:
            self._waking.add(task)
        try:
            schedule = self.schedules[job_id]
            fire_time = schedule.latest(self.engine.clock.now(), self.grace)
            if fire_time is None:
                return None
            return await self.fire(schedule, fire_time)
        finally:
            if task is not None:
                self._waking.discard(task)

    async def fire(self, schedule: Schedule, fire_time: datetime) -> Run | None:
        """Start the run of one fire; None if another replica (or trigger) already did."""
        first = _first_firing(self.schedules.values(), schedule.flow, fire_time)
        if first is not None and first.index < schedule.index:
            return None
        flow = self.engine.definition(schedule.flow).flow
        run = self.engine.new_run(
            schedule.flow,
            {},
            started_by=schedule.started_by,
            source={
                "via": "schedule",
                "schedule": schedule.trigger.schedule,
                "timezone": schedule.trigger.timezone,
                "fire_time": fire_time.isoformat(),
            },
        )
        masked = {name: "***" for name in flow.secrets}
        try:
            given = render_data(dict(schedule.trigger.inputs), scope_of(run, (), secrets=masked))
            inputs = coerce_inputs(flow, given)
        except (TemplateError, InputInvalid) as exc:
            log.error(
                "schedule %r of %s did not start a run for %s: %s",
                schedule.trigger.schedule,
                schedule.flow,
                fire_time.isoformat(),
                exc.user_message,
            )
            return None
        started = await self.engine.create_scheduled(
            evolve(run, inputs=inputs), fire_time=fire_time
        )
        if started is not None:
            log.info(
                "schedule %r started run %s of %s for %s",
                schedule.trigger.schedule,
                started.id,
                schedule.flow,
                fire_time.isoformat(),
            )
        return started


def _first_firing(schedules: Iterable[Schedule], flow: str, moment: datetime) -> Schedule | None:
    for schedule in schedules:
        if schedule.flow == flow and schedule.fires_at(moment):
            return schedule
    return None
