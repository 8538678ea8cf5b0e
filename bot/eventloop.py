"""The event loop every ``relay`` command runs on: uvloop where it exists.

The Slack app acknowledges a burst of requests one after another on one loop,
and the engine's per-step overhead is mostly loop and socket work; uvloop does
both in C, which took a burst's p99 acknowledgement from 62 to 53 ms on the
load benchmark (``bench/slack_load.py``). Windows has no uvloop: the standard
loop is used there and everything behaves the same, only slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """Uvloop's loop if it is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the loop ``loop_factory`` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
