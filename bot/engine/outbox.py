"""Deliver the chat effects that transitions left in the outbox table.

At least once: an item is finished only after the chat call returned. While
the chat is down, items are deferred with growing back-off and delivered when
it answers again. Status and approval effects render the run as it is when
their batch is claimed, so a burst of them for one run collapses into one update.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from bot.engine.events import COLLAPSIBLE
from bot.engine.move import flow_of
from bot.engine.ports import Chat, RunView
from bot.engine.runner import Clock
from bot.errors import RunNotFound

log = logging.getLogger("relay.outbox")

MAX_BACKOFF = timedelta(minutes=5)


class Outbox:
    """Claims due outbox items and hands them to the chat."""

    def __init__(
        self,
        *,
        store: Any,
        chat: Chat,
        clock: Clock,
        worker_id: str,
        family: str | None = None,
    ) -> None:
        self.store = store
        self.chat = chat
        self.clock = clock
        self.worker_id = worker_id
        self.family = family
        """Deliver only this run's and its sub-runs' messages (``relay run``)."""

    def for_run(self, run_id: str) -> Outbox:
        """An outbox that leaves other runs' messages to the chat that serves them."""
        return Outbox(
            store=self.store,
            chat=self.chat,
            clock=self.clock,
            worker_id=self.worker_id,
            family=run_id,
        )

    async def deliver(self, *, limit: int = 100) -> int:
        """Deliver what is due; returns how many items were settled (sent or deferred)."""
        items = await self.store.claim_outbox(
            self.worker_id,
            self.clock.now(),
            limit=limit,
            lease=timedelta(seconds=60),
            family=self.family,
        )
        if not items:
            return 0
        groups: OrderedDict[tuple[str, str, str], list[Any]] = OrderedDict()
        for item in items:
            tag = "" if item.kind in COLLAPSIBLE else str(item.id)
            groups.setdefault((item.run_id, item.kind, item.step_key + tag), []).append(item)
        found = await self.store.snapshots_with_attempts([run_id for run_id, _, _ in groups])
        views = {
            run_id: RunView(snapshot=snapshot, flow=flow_of(snapshot.run), attempts=tuple(tried))
            for run_id, (snapshot, tried) in found.items()
        }
        # Delivered items are deleted together at the end: one write for the batch
        # instead of one per run. Dying before that only repeats deliveries, which
        # the chat must already bear (at least once).
        sent: list[int] = []
        for (run_id, kind, _), group in groups.items():
            ids = [item.id for item in group]
            try:
                view = views.get(run_id)
                if view is None:
                    raise RunNotFound(f"no run {run_id}", run_id=run_id)
                await self._send(kind, group[-1].step_key, view)
            except Exception as exc:
                tries = max(item.tries for item in group) + 1
                delay = min(timedelta(seconds=2**tries), MAX_BACKOFF)
                log.warning("chat delivery failed for run %s (%s): %s", run_id, kind, exc)
                for item_id in ids:
                    await self.store.defer_outbox(
                        item_id, until=self.clock.now() + delay, error=str(exc)[:500]
                    )
                continue
            sent.extend(ids)
        if sent:
            await self.store.finish_outbox(sent)
        return len(items)

    async def _send(self, kind: str, step_key: str, view: RunView) -> None:
        if kind == "run":
            await self.chat.run_changed(view)
        elif kind == "approval":
            await self.chat.approval_changed(view, step_key)
        elif kind == "alert":
            await self.chat.alert(view, step_key)
        elif kind == "reminder":
            await self.chat.remind(view, step_key)
        else:
            log.error("unknown outbox item kind %r dropped", kind)
