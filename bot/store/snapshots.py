"""Snapshots this process committed or read, so the next event of a run need not read them.

A run's rows change only by transitions, and each transition raises the run's
version; so a snapshot is still the truth while the run row's version equals
its own, and checking that is one small query instead of five. Writes that
leave the version alone touch only leases (renewals, recovery), timers about
to fire, and chat references, which the machine never writes back: events
that judge leases or timers load afresh (see ``Tx.load``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from bot.engine.records import Snapshot

CAPACITY = 512
"""Runs remembered: the busiest ones; a run parked for days falls out and is read again."""


class SnapshotCache:
    """Snapshots of committed rows by run id, least recently used first out. Thread-safe."""

    def __init__(self, *, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()
        self._floors: OrderedDict[str, int] = OrderedDict()
        """For runs whose snapshot was found stale: the version a snapshot must reach."""
        self._lock = threading.Lock()

    def get(self, run_id: str) -> Snapshot | None:
        """The last snapshot remembered for the run; check its version before trusting it."""
        with self._lock:
            found = self._snapshots.get(run_id)
            if found is not None:
                self._snapshots.move_to_end(run_id)
            return found

    def forget(self, run_id: str, *, stale: int) -> None:
        """Drop the run's snapshot: a transaction found the rows past version ``stale``.

        A snapshot up to that version handed in later is refused too: a read that
        began before the other process committed may report after this.
        """
        with self._lock:
            self._snapshots.pop(run_id, None)
            self._floors[run_id] = max(stale + 1, self._floors.get(run_id, 0))
            self._floors.move_to_end(run_id)
            while len(self._floors) > self._capacity:
                self._floors.popitem(last=False)

    def remember(self, snapshot: Snapshot) -> None:
        """Keep a snapshot of committed rows, unless a newer one of the run is kept already.

        Transactions and reads of one run can report back out of order;
        versions only grow, so the newer snapshot wins whichever arrives last.
        """
        run_id = snapshot.run.id
        with self._lock:
            floor = self._floors.get(run_id)
            if floor is not None:
                if snapshot.run.version < floor:
                    return
                del self._floors[run_id]
            kept = self._snapshots.get(run_id)
            if kept is not None and kept.run.version > snapshot.run.version:
                return
            self._snapshots[run_id] = snapshot
            self._snapshots.move_to_end(run_id)
            while len(self._snapshots) > self._capacity:
                self._snapshots.popitem(last=False)
