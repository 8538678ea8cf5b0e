"""Where a new run is written: alone on the event loop, together on the writer thread.

A run started while nothing else of the engine is under way (a terminal's run,
a chain of runs one after another) has nothing to share a commit with, and a
hop to the writer thread and back was most of its start. Runs started at
the same moment (a burst of Slack commands) commit together on the writer
thread, a few to a commit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bot.engine.operations import Actor
from bot.store import Store
from tests.integration.engine.support import flow, replica
from tests.integration.store.builders import driver_trace

PAUSE = flow(
    """
name: pause
steps:
  - {id: nap, kind: wait, duration: 1h}
"""
)

ALICE = Actor(user="U0ALICE")


@contextmanager
def run_inserts(store: Store) -> Iterator[list[tuple[int, str]]]:
    """(thread, statement) for each run inserted and each commit while the block runs."""
    sent: list[tuple[int, str]] = []

    def trace(sql: str) -> None:
        if sql.startswith(("INSERT INTO runs", "COMMIT")):
            sent.append((threading.get_ident(), sql.split()[0]))

    with driver_trace(store, trace):
        yield sent


async def test_a_run_started_alone_is_written_on_the_event_loop(sqlite_url: str) -> None:
    async with replica(sqlite_url, [PAUSE]) as one:
        await one.operations.start("pause", {}, ALICE)  # opens the writer's connection
        with run_inserts(one.store) as sent:
            for _ in range(3):
                await one.operations.start("pause", {}, ALICE)
        loop = threading.get_ident()
        assert [thread for thread, word in sent if word == "INSERT"] == [loop] * 3


async def test_runs_started_together_commit_together_on_the_writer_thread(
    sqlite_url: str,
) -> None:
    async with replica(sqlite_url, [PAUSE]) as one:
        await one.operations.start("pause", {}, ALICE)
        with run_inserts(one.store) as sent:
            runs = await asyncio.gather(
                *(one.operations.start("pause", {}, ALICE) for _ in range(8))
            )
        assert len({run.id for run in runs}) == 8
        inserts = [thread for thread, word in sent if word == "INSERT"]
        assert len(inserts) == 8
        assert threading.get_ident() not in inserts
        assert sum(1 for _, word in sent if word == "COMMIT") < 8, "some shared a commit"
