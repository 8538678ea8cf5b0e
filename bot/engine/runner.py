"""The thin shell around the machine: lock, decide, write, commit, then act.

Every event is applied in one write transaction holding the run's row lock; the
transition is committed before any of its effects start. Executions run as
tasks on this worker under a lease it renews; if the worker dies, the lease
lapses and any worker re-runs the attempt with the same Idempotency-Key. Chat
effects wait in the outbox table until the chat confirms them, so an outage of
Slack delays messages but never loses a state change.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.definitions.models import FlowDef
from bot.engine.events import (
    Event,
    LeaseExpired,
    StartRun,
    StepErrored,
    StepSucceeded,
    TimerDue,
    Transition,
)
from bot.engine.machine import decide
from bot.engine.move import Context, Definition, flow_of, scope_of
from bot.engine.records import Run, Snapshot, Timer
from bot.engine.states import RunState
from bot.errors import FlowNotFound, OperationRefused, RelayError
from bot.steps.base import Failed, StepContext, StepExecutor, Succeeded
from bot.store.runs import Store
from bot.store.tx import Tx

log = logging.getLogger("relay.engine")

Applied = list[tuple[Snapshot, Transition]]

RACE_RETRIES = 5

RENEW_AFTER = timedelta(seconds=0.5)
"""How old a lease is before a tick renews it, and so checks that the step is still ours."""

_SETTLED = frozenset({RunState.WAITING, *(state for state in RunState if state.finished)})
"""Run states where nothing moves without a person or the clock."""


class Clock:
    """Wall-clock time; tests pass a clock they move by hand."""

    def now(self) -> datetime:
        return datetime.now(UTC)


_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_run_id() -> str:
    """Short enough to type in Slack, long enough never to collide (60 random bits)."""
    # One draw of the system's randomness, not one per character.
    bits = secrets.randbits(60)
    return "".join(_ID_ALPHABET[(bits >> shift) & 31] for shift in range(0, 60, 5))


def default_worker_id() -> str:
    """host:pid:nonce. Host and pid let a restarted worker see its dead predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def idempotency_key(run_id: str, key: str) -> str:
    """Stable per run and step across retries and crashes, so receivers drop duplicates."""
    return "relay-" + hashlib.sha256(f"{run_id}/{key}".encode()).hexdigest()[:32]


def definition_of(flow: FlowDef) -> Definition:
    """A flow as runs store it: the JSON dump and a hash of it."""
    import json

    data = flow.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return Definition(flow=flow, data=data, hash=digest)


@dataclass(frozen=True)
class _Flight:
    run_id: str
    key: str
    attempt: int


class Engine:
    """Runs flows durably. One per process; several processes may share a database."""

    def __init__(
        self,
        *,
        store: Store,
        flows: Mapping[str, FlowDef],
        executors: Mapping[str, StepExecutor],
        environ: Mapping[str, str],
        clock: Clock | None = None,
        worker_id: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        passive: bool = False,
    ) -> None:
        self.store = store
        self._definitions = {name: definition_of(flow) for name, flow in flows.items()}
        self._executors = dict(executors)
        self._environ = environ
        self.clock = clock or Clock()
        self.worker_id = worker_id or default_worker_id()
        self.lease = lease
        self.passive = passive
        """A passive engine (a one-shot CLI command) commits attempts for workers to claim."""
        self._flights: dict[_Flight, asyncio.Task[None]] = {}
        """Attempts whose executor is still working: renewal and aborts act on these."""
        self._lease_ends: dict[_Flight, datetime] = {}
        """When each flight's lease ends, as this engine last set it."""
        self._settling: set[asyncio.Task[None]] = set()
        """Attempts with an outcome, being recorded: never cancelled half-way."""
        self._wake = asyncio.Event()
        self.chat_pending = asyncio.Event()
        self._recovered = False
        self._creating = 0
        """Runs being created now: one alone is written on the event loop."""

    # ------------------------------------------------------------ lookups

    @property
    def flows(self) -> dict[str, FlowDef]:
        return {name: d.flow for name, d in self._definitions.items()}

    def definition(self, name: str) -> Definition:
        found = self._definitions.get(name)
        if found is None:
            import difflib

            close = difflib.get_close_matches(name, list(self._definitions), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise FlowNotFound(f"no flow named `{name}`{hint}")
        return found

    def _ctx(self) -> Context:
        return Context(
            now=self.clock.now(),
            worker=None if self.passive else self.worker_id,
            lease=self.lease,
            definitions=self._definitions.get,
        )

    # ------------------------------------------------------------ applying events

    async def create(
        self,
        flow: str,
        inputs: dict[str, Any],
        *,
        started_by: str,
        source: dict[str, Any] | None = None,
    ) -> Run:
        """Insert a run and start it, in one transaction. Inputs must already be checked."""
        run = self.new_run(flow, inputs, started_by=started_by, source=source)

        def work(tx: Tx) -> Applied:
            tx.insert_run(run)
            return self._apply_in(tx, run.id, StartRun(actor=started_by))

        self._creating += 1
        try:
            # One turn of the loop lets runs started together show themselves:
            # they commit together on the writer thread (written here one by one,
            # 3,000 runs took four times as long), while a run started alone,
            # as a terminal or a chain of runs does, is written here at once.
            await asyncio.sleep(0)
            alone = self._creating == 1 and not self._flights and not self._settling
            done = await self.store.transaction(work, here=alone)
        finally:
            self._creating -= 1
        await self._perform(done)
        return done[0][0].run

    async def create_scheduled(self, run: Run, *, fire_time: datetime) -> Run | None:
        """Insert and start ``run`` for one schedule fire, unless that fire is claimed already.

        The claim on ``(flow, fire_time)`` commits with the run, so however many
        replicas wake for the same fire, exactly one run starts; the others get None.
        """

        def work(tx: Tx) -> Applied | None:
            if not tx.claim_schedule_fire(run.flow, fire_time, run.id):
                return None
            tx.insert_run(run)
            return self._apply_in(tx, run.id, StartRun(actor=run.started_by))

        done = await self.store.transaction(work)
        if done is None:
            return None
        await self._perform(done)
        return done[0][0].run

    def new_run(
        self,
        flow: str,
        inputs: dict[str, Any],
        *,
        started_by: str,
        source: dict[str, Any] | None = None,
    ) -> Run:
        """A run of ``flow`` as it will be inserted: nothing is written yet."""
        definition = self.definition(flow)
        now = self.clock.now()
        return Run(
            id=new_run_id(),
            flow=flow,
            definition=definition.data,
            definition_hash=definition.hash,
            state=RunState.RUNNING,
            inputs=inputs,
            started_by=started_by,
            source=source or {},
            created_at=now,
            updated_at=now,
        )

    async def apply(self, run_id: str, event: Event, *, alone: bool = False) -> Transition:
        """Apply one event (and whatever it emits to other runs) atomically, then act.

        A transaction that lost a race (the run's version moved, or PostgreSQL broke
        a deadlock) is decided again from a fresh snapshot: the event is never dropped.
        The first time at once: on SQLite that is how a remembered snapshot that
        another process moved on is found out, and nobody is to be waited for.
        ``alone``: nothing else of this engine is under way, so the transaction may
        run on the event loop itself (``Store.transaction(here=True)``).
        """
        for attempt in range(1, RACE_RETRIES + 1):
            try:
                done = await self.store.transaction(
                    lambda tx: self._apply_in(tx, run_id, event), here=alone
                )
                break
            except OperationRefused:
                if attempt == RACE_RETRIES:
                    raise
                await asyncio.sleep(0.01 * (attempt - 1))
        await self._perform(done)
        return done[0][1]

    def _apply_in(self, tx: Tx, run_id: str, event: Event) -> Applied:
        """Load, decide and write ``event`` and what it emits, inside ``tx``."""
        # Leases and timers change without a new run version: judge them on fresh rows.
        before = tx.load(run_id, fresh=isinstance(event, LeaseExpired | TimerDue))
        ctx = self._ctx()
        transition = decide(before, event, ctx)
        if not transition.changed and not tx.confirmed(before):
            # Nothing to write, so no version guard would catch an old snapshot:
            # decide again on the rows.
            before = tx.load(run_id, fresh=True)
            transition = decide(before, event, ctx)
        after = before
        if transition.changed:
            tx.write(before, transition)
            after = tx.seen[run_id]
        done: Applied = [(after, transition)]
        for target, emitted in transition.emits:
            done.extend(self._apply_in(tx, target, emitted))
        return done

    async def _perform(self, done: Applied) -> None:
        for after, transition in done:
            if not transition.changed:
                continue
            for key in transition.aborts:
                self._abort(after.run.id, key)
            for execution in transition.executions:
                flight = _Flight(execution.run_id, execution.key, execution.attempt)
                task = asyncio.create_task(self._execute(after, flight), name=str(flight))
                self._flights[flight] = task
                leased = after.steps[execution.key].lease_until
                self._lease_ends[flight] = leased or self.clock.now()
                task.add_done_callback(functools.partial(self._landed, flight))
            if transition.chat:
                self.chat_pending.set()
            # A run that ended or now waits for people is what ``follow`` and
            # ``--drain`` are waiting to see: wake the loop now, not at its next tick.
            if transition.timers_set or after.run.state in _SETTLED:
                self._wake.set()

    def _landed(self, flight: _Flight, task: asyncio.Task[None]) -> None:
        self._flights.pop(flight, None)
        self._lease_ends.pop(flight, None)
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "could not record the result of %s; its lease will lapse and it will re-run",
                flight,
                exc_info=task.exception(),
            )

    def _abort(self, run_id: str, key: str) -> None:
        for flight, task in list(self._flights.items()):
            if flight.run_id == run_id and flight.key == key:
                task.cancel()

    # ------------------------------------------------------------ executing steps

    def step_context(self, snapshot: Snapshot, key: str, attempt: int) -> StepContext:
        """Everything an executor needs for one attempt, secrets included."""
        flow = flow_of(snapshot.run)
        row = snapshot.steps[key]
        step = flow.step(row.step_id)
        extra: dict[str, Any] = {}
        if key != row.step_id:
            index = int(key.rsplit("[", 1)[1].rstrip("]"))
            items = snapshot.steps[row.step_id].detail.get("items", [])
            loop_name = getattr(getattr(step, "for_each", None), "as_", "item")
            extra = {loop_name: items[index], "index": index}
        secret_values = {name: self._environ.get(name, "") for name in flow.secrets}
        scope = scope_of(snapshot.run, snapshot.steps.values(), secrets=secret_values, extra=extra)
        services = {}
        for name, service in flow.services.items():
            url = service.url if service.url is not None else self._environ.get(service.env or "")
            if url:
                services[name] = url
        timeout = getattr(step, "timeout", None) or flow.defaults.timeout
        return StepContext(
            run_id=snapshot.run.id,
            key=key,
            attempt=attempt,
            idempotency_key=idempotency_key(snapshot.run.id, key),
            step=step,
            flow=flow,
            scope=scope,
            timeout=timeout,
            services=services,
            secrets=secret_values,
        )

    async def _execute(self, snapshot: Snapshot, flight: _Flight) -> None:
        try:
            context = self.step_context(snapshot, flight.key, flight.attempt)
            executor = self._executors.get(context.step.kind)
            if executor is None:
                outcome: Succeeded | Failed = Failed(
                    message=f"no executor for `{context.step.kind}` steps", retryable=False
                )
            else:
                outcome = await executor.execute(context)
        except asyncio.CancelledError:
            raise
        except RelayError as exc:
            outcome = Failed(message=exc.user_message, retryable=False)
        except Exception:
            log.exception("step %s of run %s crashed", flight.key, flight.run_id)
            outcome = Failed(message="the step crashed inside Relay (see logs)", retryable=False)
        # From here the attempt is over: renewal must not cancel the recording of its
        # outcome or the start of the steps it unblocks.
        task = self._flights.pop(flight, None)
        if task is not None:
            self._settling.add(task)
        # A lone attempt (a chain's step) has nothing to share a commit with.
        alone = not self._flights and len(self._settling) <= 1
        event: Event
        if isinstance(outcome, Succeeded):
            event = StepSucceeded(
                key=flight.key,
                attempt=flight.attempt,
                owner=self.worker_id,
                output=outcome.output,
                status=outcome.status,
            )
        else:
            event = StepErrored(
                key=flight.key,
                attempt=flight.attempt,
                owner=self.worker_id,
                message=outcome.message,
                retryable=outcome.retryable,
                retry_after=outcome.retry_after,
                status=outcome.status,
                excerpt=outcome.excerpt,
            )
        await self.apply(flight.run_id, event, alone=alone)

    @property
    def in_flight(self) -> int:
        return len(self._flights) + len(self._settling)

    # ------------------------------------------------------------ the clock's work

    async def tick(self) -> int:
        """Fire due timers, take over lapsed leases, renew ours. Returns events applied."""
        now = self.clock.now()
        applied_count = 0
        for timer in await self.store.due_timers(now):
            done = await self.store.transaction(functools.partial(self._fire, timer))
            if done is None:
                continue
            await self._perform(done)
            applied_count += 1
        await self._renew()
        mine = {(f.run_id, f.key) for f in self._flights}
        for row in await self.store.expired_leases(now):
            if (row.run_id, row.key) in mine:
                continue
            await self.apply(row.run_id, LeaseExpired(key=row.key, attempt=row.attempt))
            applied_count += 1
        return applied_count

    def _fire(self, timer: Timer, tx: Tx) -> Applied | None:
        """Take ``timer`` and apply it; None if another scheduler took it first."""
        if not tx.take_timer(timer.run_id, timer.step_key, timer.purpose):
            return None
        return self._apply_in(tx, timer.run_id, TimerDue(key=timer.step_key, purpose=timer.purpose))

    async def _renew(self) -> None:
        # Renewing is also how a flight learns that another process cancelled its
        # step or took it over, so a lease is renewed once RENEW_AFTER old, not
        # only when it nears its end; but not sooner: a chain's quick steps paid
        # a write transaction for it at every turn of the loop.
        now = self.clock.now()
        fresh = self.lease - RENEW_AFTER
        due = [f for f, end in self._lease_ends.items() if end - now < fresh]
        if not due:
            return
        keys = {(f.run_id, f.key) for f in due}
        until = now + self.lease
        held = await self.store.renew_leases(self.worker_id, keys, until)
        for flight in due:
            if (flight.run_id, flight.key) in held and flight in self._lease_ends:
                self._lease_ends[flight] = until
        # Only flights that were asked about can have lost their lease: one that
        # started while the renewal waited on the database holds a fresh lease.
        lost = keys - held
        for flight, task in list(self._flights.items()):
            if (flight.run_id, flight.key) in lost:
                task.cancel()

    async def recover(self) -> int:
        """At start: take back at once what a dead process on this host was running.

        Its leases would lapse by themselves, but a restart after a crash should
        not wait for them: a lease owner on this host whose pid is gone is dead.
        An engine does this once, when it first starts working (``relay run``
        follows each run with the worker loop); a process that dies later is
        taken over when its leases lapse, by ``tick``.
        """
        if self._recovered:
            return 0
        host = socket.gethostname()
        dead = {owner for owner in await self.store.lease_owners_on(host) if _dead_local(owner)}
        count = await self._take_over(host, dead) if dead else 0
        for parent, key, child in await self.store.waiting_children():
            from bot.engine.events import child_finished

            snap = await self.store.snapshot(child)
            await self.apply(parent, child_finished(snap.run, key))
            count += 1
        # Only once it went through: a recovery that failed is tried again.
        self._recovered = True
        return count

    async def _take_over(self, host: str, dead: set[str]) -> int:
        """Resume the attempts ``dead`` owners on ``host`` left; returns how many."""
        # The machine only resumes lapsed leases, so the dead owners' lapse now.
        await self.store.end_leases(dead, self.clock.now())
        lost = [row for row in await self.store.leased_on(host) if row.lease_owner in dead]
        try:
            # One transaction for them all: a hundred commits one by one took a
            # second, and nothing moves until the last (bench/recovery.py).

            def work(tx: Tx) -> Applied:
                done: Applied = []
                for row in lost:
                    event = LeaseExpired(key=row.key, attempt=row.attempt)
                    done.extend(self._apply_in(tx, row.run_id, event))
                return done

            await self._perform(await self.store.transaction(work))
        except OperationRefused:
            # Lost a race with another replica: one by one, each retried on its own.
            for row in lost:
                await self.apply(row.run_id, LeaseExpired(key=row.key, attempt=row.attempt))
        return len(lost)

    async def wait_for_wake(self, seconds: float) -> None:
        """Sleep until a timer may be due, a run ended or waits for people, or ``seconds`` pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def drain_flights(self) -> None:
        """Wait for every in-flight attempt of this worker to report."""
        while self._flights or self._settling:
            pending = [*self._flights.values(), *self._settling]
            await asyncio.gather(*pending, return_exceptions=True)

    async def shutdown(self) -> None:
        """Abandon in-flight attempts; their leases lapse and another worker resumes them."""
        for task in list(self._flights.values()):
            task.cancel()
        await asyncio.gather(*self._flights.values(), *self._settling, return_exceptions=True)


def _dead_local(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
