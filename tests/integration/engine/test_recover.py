"""An engine takes back a dead local worker's attempts when it starts working, and only then.

A worker whose process is gone (its id names this host and a pid that no
longer runs) leaves its steps leased for up to the lease's length; recovery
hands them over at once. Later deaths are left to the leases' lapse: recovery
runs once per engine, not at every ``relay run`` follow of a run.
"""

from __future__ import annotations

import socket
import subprocess
import sys

from bot.demo.services import DemoServices
from bot.engine.operations import Actor
from bot.engine.states import StepState
from tests.integration.engine.support import ECHO, Replica, replica


def dead_worker_id() -> str:
    """A worker id on this host whose pid has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:dead"


async def started_by(dead: Replica) -> str:
    """A run whose step is in flight on ``dead``, then abandoned as by a killed process."""
    run = await dead.operations.start("echo", {"n": 1}, Actor(user="U0ALICE"))
    await dead.engine.shutdown()
    return run.id


async def holder(one: Replica, run_id: str) -> str | None:
    row = (await one.store.snapshot(run_id)).steps["call"]
    assert row.state is StepState.RUNNING
    return row.lease_owner


async def test_recovery_takes_over_at_once_and_only_once(db_url: str) -> None:
    async with DemoServices() as services:
        services.delay("POST /echo", 30)
        env = {"API_URL": services.base_url}
        gone = dead_worker_id()
        async with replica(db_url, [ECHO], environ=env) as worker:
            async with replica(db_url, [ECHO], environ=env, worker_id=gone) as dead:
                first = await started_by(dead)
            assert await holder(worker, first) == gone
            assert await worker.engine.recover() == 1
            assert await holder(worker, first) == worker.engine.worker_id, "taken over at once"

            async with replica(db_url, [ECHO], environ=env, worker_id=gone) as dead:
                second = await started_by(dead)
            assert await worker.engine.recover() == 0
            assert await holder(worker, second) == gone, "left for its lease to lapse"
            await worker.engine.shutdown()
