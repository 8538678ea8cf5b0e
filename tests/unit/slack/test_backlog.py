"""The backlog holds acknowledged work while requests keep arriving, within its patience."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.slack.backlog import Backlog


async def _note(started: list[tuple[str, float]], name: str) -> None:
    started.append((name, asyncio.get_running_loop().time()))


async def test_work_waits_for_a_quiet_moment_then_starts_in_arrival_order() -> None:
    backlog = Backlog(quiet=0.2, patience=5.0)
    loop = asyncio.get_running_loop()
    started: list[tuple[str, float]] = []
    for n in range(4):
        backlog.add(_note(started, f"w{n}"))
        last = loop.time()
        await asyncio.sleep(0.02)
        assert started == [], "work started while requests were still arriving"
    await asyncio.sleep(0.4)
    assert [name for name, _ in started] == ["w0", "w1", "w2", "w3"]
    assert all(at >= last + 0.19 for _, at in started)


async def test_a_steady_stream_cannot_hold_work_past_its_patience() -> None:
    backlog = Backlog(quiet=0.05, patience=0.15)
    loop = asyncio.get_running_loop()
    started: list[tuple[str, float]] = []
    first = loop.time()
    backlog.add(_note(started, "first"))
    while loop.time() - first < 0.4:
        await asyncio.sleep(0.01)
        if not started:
            backlog.add(_note(started, "more"))
    assert started, "a stream of requests every 10 ms starved the work"
    assert started[0][0] == "first"
    assert 0.14 <= started[0][1] - first < 0.4, "held past its patience, or not held at all"


async def test_close_starts_what_is_held_and_waits_for_everything() -> None:
    backlog = Backlog(quiet=10.0, patience=10.0)
    finished: list[str] = []

    async def slow(name: str) -> None:
        await asyncio.sleep(0.05)
        finished.append(name)

    backlog.add(slow("a"))
    backlog.add(slow("b"))
    await asyncio.wait_for(backlog.close(), 2)
    assert sorted(finished) == ["a", "b"]


async def test_a_failing_piece_of_work_is_logged_and_the_rest_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backlog = Backlog(quiet=0.01, patience=1.0)
    done: list[str] = []

    async def broken() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        done.append("fine")

    with caplog.at_level(logging.ERROR, logger="relay.slack"):
        backlog.add(broken())
        backlog.add(fine())
        await asyncio.sleep(0.1)
        await backlog.close()
    assert done == ["fine"]
    assert any("boom" in str(record.exc_info[1]) for record in caplog.records if record.exc_info)
