"""The fake's journal of Web API calls and Socket Mode acknowledgements.

The server appends from its own thread while tests read from the asyncio loop or
from worker threads, so every access goes through one `threading.Condition`.
Waiting comes in two shapes: `wait_*` blocks the calling thread (for sync code or a
bot running in another thread), `await_*` polls without blocking the event loop
(for a client that lives on the same loop as the test, where blocking would stop
it from ever making the call being waited for).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_POLL_INTERVAL = 0.01


@dataclass(frozen=True)
class Call:
    """One Web API request as the fake saw and answered it.

    Frozen so a test cannot edit history; `args` is the merged query, form and JSON
    arguments with JSON-in-form fields (`blocks`, `view`, ...) already decoded.
    """

    method: str
    args: Mapping[str, Any]
    headers: Mapping[str, str]
    """Request headers with lower-cased names."""
    status: int
    response: Mapping[str, Any]
    warnings: tuple[str, ...]
    """Slack's soft warnings for the call, e.g. `missing_text_in_blocks`."""
    at: float
    """`time.monotonic()` when the request arrived, to check retry spacing."""
    peer: tuple[str, int] | None = None
    """The client's address and port: calls on one kept-alive connection share it."""

    @property
    def ok(self) -> bool:
        """Whether Slack would have reported success."""
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        """Slack's error code, or None on success."""
        error = self.response.get("error")
        return str(error) if error is not None else None


class Journal(Generic[T]):
    """An append-only, thread-safe list that callers can wait on."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._changed = threading.Condition()

    def append(self, item: T) -> None:
        """Record one item and wake every waiter."""
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._changed:
            self._items.clear()

    def select(self, keep: Callable[[T], bool]) -> list[T]:
        """A snapshot of the items `keep` accepts, oldest first."""
        with self._changed:
            return [item for item in self._items if keep(item)]

    def wait(self, keep: Callable[[T], bool], count: int, timeout: float, what: str) -> list[T]:
        """Block the calling thread until `count` kept items exist.

        Raises `TimeoutError` naming `what`, so a hung test says what never came.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [item for item in self._items if keep(item)]
                remaining = deadline - time.monotonic()
                if len(found) >= count:
                    return found
                if remaining <= 0:
                    raise TimeoutError(f"waited {timeout}s for {count} x {what}, saw {len(found)}")
                self._changed.wait(remaining)

    async def wait_async(
        self,
        keep: Callable[[T], bool],
        count: int,
        timeout: float,  # noqa: ASYNC109 - the journal names the timeout in its error
        what: str,
    ) -> list[T]:
        """Like `wait`, but yields to the event loop between looks."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.select(keep)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited {timeout}s for {count} x {what}, saw {len(found)}")
            await asyncio.sleep(_POLL_INTERVAL)
