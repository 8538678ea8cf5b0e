"""The work of acknowledged Slack requests, held back while a burst is still arriving.

Slack allows 3 s for an acknowledgement and nothing for the work behind it, but
both share one event loop: started at once, the first requests of a burst of
a hundred (claiming their delivery, starting runs, answering) would delay the
acknowledgement of the last by tens of milliseconds. So work waits until no
request has been acknowledged for ``quiet`` seconds, and never longer than
``patience``, so a steady stream of requests cannot starve it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("relay.slack")

QUIET = 0.02
PATIENCE = 0.25


class Backlog:
    """Starts held work in arrival order once requests stop arriving; ``close`` awaits it."""

    def __init__(self, *, quiet: float = QUIET, patience: float = PATIENCE) -> None:
        self.quiet = quiet
        self.patience = patience
        self._held: list[Coroutine[Any, Any, None]] = []
        self._oldest = 0.0
        self._newest = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    def add(self, work: Coroutine[Any, Any, None]) -> None:
        """Hold ``work`` (a request was just acknowledged) and start it when things calm down."""
        loop = asyncio.get_running_loop()
        self._newest = loop.time()
        if not self._held:
            self._oldest = self._newest
        self._held.append(work)
        if self._timer is None:
            self._timer = loop.call_at(self._newest + self.quiet, self._release)

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        calm_at = self._newest + self.quiet
        if now < calm_at and now < self._oldest + self.patience:
            self._timer = loop.call_at(min(calm_at, self._oldest + self.patience), self._release)
            return
        self._timer = None
        self._start_held()

    def _start_held(self) -> None:
        held, self._held = self._held, []
        for work in held:
            task = asyncio.create_task(work)
            self._running.add(task)
            task.add_done_callback(self._landed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a Slack request failed", exc_info=task.exception())

    async def close(self) -> None:
        """Start what is held and wait for all of it: Slack never resends what was acked."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._start_held()
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
