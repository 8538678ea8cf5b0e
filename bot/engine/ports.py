"""What the engine needs from the outside world, as Protocols.

The engine reaches people only through ``Chat``; Slack and the terminal each
implement it. ``Directory`` answers group membership for approvals and
permissions. Neither is imported by the machine, only by the runner.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from bot.definitions.models import FlowDef
from bot.engine.records import Attempt, Snapshot


@dataclass(frozen=True, kw_only=True)
class RunView:
    """A run as chat renders it: its state, its definition, and its attempts so far."""

    snapshot: Snapshot
    flow: FlowDef
    attempts: tuple[Attempt, ...] = ()


class Chat(Protocol):
    """How runs reach people.

    Every method may be called again for the same state (the outbox delivers at
    least once), so implementations update in place.
    """

    async def run_changed(self, view: RunView) -> None:
        """Show the run's current state (post its status message, or update it)."""

    async def approval_changed(self, view: RunView, step_key: str) -> None:
        """Show an approval's current state: ask, record progress, or close it."""

    async def alert(self, view: RunView, step_key: str) -> None:
        """Tell the operators a step failed for good.

        ``step_key`` is empty when the run failed outside any step (its ``outputs``).
        """

    async def remind(self, view: RunView, step_key: str) -> None:
        """Nudge the approvers of a step still waiting."""

    async def notify(
        self, view: RunView, *, channel: str | None, user: str | None, text: str
    ) -> None:
        """Send a flow's ``notify`` message; raise to fail the step.

        ``text`` is in the chat's markup, its template values already quoted
        with ``literal``.
        """

    def literal(self, text: str) -> str:
        """``text`` quoted so the chat shows it as typed, never as markup or a mention."""


class Directory(Protocol):
    """Who belongs to which user group."""

    async def groups_of(self, user: str, among: Collection[str]) -> frozenset[str]:
        """The groups in ``among`` that ``user`` is a member of."""
