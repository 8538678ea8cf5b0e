"""Crash tests: `relay worker` SIGKILLed at random points, restarted, and nothing lost.

Runs are committed by a passive engine, so their first attempts wait for a
worker. A worker subprocess then works on them and is killed with SIGKILL a
random time after it is seen calling the service, again and again; a last
`relay worker --drain` finishes the lot. The loopback service records every
call, so the test can check what the engine promises after a crash: every run
finishes, a finished step is never called again, and every call of a step
carries that step's one Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from bot.engine.operations import Actor
from bot.engine.records import StepRun
from bot.engine.runner import idempotency_key
from bot.engine.states import RunState, StepState
from bot.settings import load_settings
from bot.store import Store, open_database
from bot.terminal import TerminalChat
from bot.wiring import build_services

from .counting_service import Arrival, CountingService

SEED = 20261121
RUNS = 36
KILLS = 6

FLOW = """
name: crashy
permissions:
  run: {users: [U0CRASH]}
services:
  svc: {env: CRASH_SERVICE_URL}
steps:
  - {id: a, kind: http, method: POST, service: svc, path: "/step/{{ run.id }}/a"}
  - id: fan
    kind: parallel
    branches:
      left:
        - {id: b, kind: http, method: POST, service: svc, path: "/step/{{ run.id }}/b"}
      right:
        - {id: c, kind: http, method: POST, service: svc, path: "/step/{{ run.id }}/c"}
  - id: d
    kind: http
    method: POST
    service: svc
    path: "/step/{{ run.id }}/d/{{ index }}"
    for_each: {items: [0, 1, 2], concurrency: 3}
  - {id: e, kind: http, method: POST, service: svc, path: "/step/{{ run.id }}/e"}
"""

HTTP_KEYS = ("a", "b", "c", "d[0]", "d[1]", "d[2]", "e")


def step_of(arrival: Arrival) -> tuple[str, str]:
    """(run id, step key) from a path the flow built: /step/RUN/KEY or /step/RUN/d/INDEX."""
    _, _, run_id, *rest = arrival.path.split("/")
    key = rest[0] if len(rest) == 1 else f"{rest[0]}[{rest[1]}]"
    return run_id, key


def worker_env(workdir: Path, service_url: str) -> dict[str, str]:
    environ = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'relay.db'}",
        "RELAY_FLOWS_DIR": str(workdir / "flows"),
        "CRASH_SERVICE_URL": service_url,
    }
    environ.pop("CI", None)
    environ.pop("RELAY_WORKER_ID", None)
    return environ


def spawn_worker(workdir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    with (workdir / "worker.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "worker", *args],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


def wait_for(condition: Callable[[], bool], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


LOST_TWICE = """
select count(*) from step_runs s
where s.state = 'running' and s.attempt >= 3 and 2 = (
    select count(*) from attempts a
    where a.run_id = s.run_id and a.step_key = s.key and a.outcome = 'abandoned'
      and a.number between s.attempt - 2 and s.attempt - 1)
"""


def third_loss_possible(workdir: Path) -> bool:
    """Whether a step in flight lost its last two attempts to kills.

    A third loss in a row fails the step on purpose (the engine takes a step that
    keeps killing its worker for the culprit), so the test kills only once such
    steps have reported: the kills stay random, the runs stay innocent.
    """
    with contextlib.closing(sqlite3.connect(workdir / "relay.db")) as db:
        return bool(db.execute(LOST_TWICE).fetchone()[0])


async def start_runs(workdir: Path, service_url: str, count: int) -> list[str]:
    """Commit ``count`` runs whose first attempt waits for a worker to claim it."""
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{workdir / 'relay.db'}", RELAY_FLOWS_DIR=str(workdir / "flows")
    )
    async with build_services(
        settings,
        chat=TerminalChat(out=io.StringIO()),
        passive=True,
        environ={"CRASH_SERVICE_URL": service_url},
    ) as services:
        actor = Actor(user="U0CRASH")
        return [(await services.operations.start("crashy", {}, actor)).id for _ in range(count)]


async def read_runs(workdir: Path) -> dict[str, tuple[RunState, dict[str, StepRun]]]:
    database = open_database(f"sqlite:///{workdir / 'relay.db'}")
    try:
        store = Store(database=database)
        found = {}
        for run in await store.list_runs(limit=10 * RUNS):
            snapshot = await store.snapshot(run.id)
            found[run.id] = (run.state, dict(snapshot.steps))
        return found
    finally:
        await database.close()


@pytest.mark.slow
def test_sigkilled_worker_loses_no_run_and_repeats_no_finished_step(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "crashy.yaml").write_text(FLOW)
    chance = random.Random(SEED)
    with CountingService(delay=(0.1, 0.4), seed=SEED) as service:
        env = worker_env(tmp_path, service.url)
        run_ids = asyncio.run(start_runs(tmp_path, service.url, RUNS))
        kills = 0
        for _ in range(KILLS):
            seen = service.count()
            if len({step_of(arrival) for arrival in service.arrivals()}) == RUNS * len(HTTP_KEYS):
                break
            worker = spawn_worker(tmp_path, env)
            try:
                # Kill a random time after this worker is seen calling out, so the
                # kill lands among calls in flight rather than during start-up.
                working = wait_for(lambda seen=seen: service.count() > seen, timeout=15)
                settled = wait_for(lambda: not third_loss_possible(tmp_path), timeout=15)
                time.sleep(chance.uniform(0.0, 0.25))
            finally:
                worker.send_signal(signal.SIGKILL)
                # Reaped, so the next worker sees the pid gone and takes over its leases.
                worker.wait()
            assert working, f"a restarted worker called nothing:\n{log_of(tmp_path)}"
            assert settled, (
                f"a restarted worker did not finish what it took over:\n{log_of(tmp_path)}"
            )
            kills += 1
        drain = spawn_worker(tmp_path, env, "--drain")
        assert drain.wait(timeout=45) == 0, log_of(tmp_path)
        arrivals = service.arrivals()

    assert kills == KILLS, f"the runs finished after {kills} of {KILLS} kills"
    found = asyncio.run(read_runs(tmp_path))
    assert set(found) == set(run_ids), "a run was lost"
    calls: dict[tuple[str, str], list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        calls[step_of(arrival)].append(arrival)
    for run_id in run_ids:
        state, steps = found[run_id]
        assert state is RunState.SUCCEEDED, (run_id, state, log_of(tmp_path))
        assert {row.state for row in steps.values()} == {StepState.SUCCEEDED}, run_id
        for key in HTTP_KEYS:
            finished_at = steps[key].finished_at
            assert isinstance(finished_at, datetime)
            made = calls[(run_id, key)]
            assert made, f"{run_id}/{key} succeeded without being called"
            assert {a.idempotency_key for a in made} == {idempotency_key(run_id, key)}
            late = [a.at for a in made if a.at >= finished_at]
            assert not late, f"{run_id}/{key} finished at {finished_at}, called again at {late}"
    repeated = sum(len(made) - 1 for made in calls.values())
    assert repeated > 0, "no kill landed while a call was in flight: the test proves nothing"

    with contextlib.closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    verified = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "verify"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{RUNS} runs checked, 0 with a broken audit chain" in verified.stdout


def log_of(workdir: Path) -> str:
    """The workers' output, tail first, for a failure message."""
    path = workdir / "worker.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""
