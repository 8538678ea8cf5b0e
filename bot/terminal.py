"""The terminal as a chat: progress lines for ``relay run``, approval prompts, alerts.

It implements the same ``Chat`` port as Slack, so the engine cannot tell them
apart; what it prints is derived from the run's rows, like a Slack message.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot.engine.approvals import counted, progress
from bot.engine.ports import RunView
from bot.engine.records import StepRun
from bot.engine.states import RunState, StepState

Answer = Callable[[str, str, bool, str | None], Awaitable[str]]
"""(run id, step key, approve?, reason) -> what to print."""

_MARKS = {
    StepState.RUNNING: "…",
    StepState.RETRYING: "↻",
    StepState.WAITING: "⏸",
    StepState.SUCCEEDED: "✓",
    StepState.FAILED: "✗",
    StepState.REJECTED: "✗",
    StepState.SKIPPED: "-",
    StepState.CANCELLED: "⊘",
    StepState.COMPENSATED: "↺",
    StepState.PENDING: " ",
}


def describe(row: StepRun) -> str:
    """One line for a step: mark, key, state and the detail that matters."""
    mark = _MARKS.get(row.state, "?")
    text = f"  {mark} {row.key:<28} {row.state.value}"
    if row.state is StepState.RUNNING and row.attempt > 1:
        text += f" (attempt {row.attempt})"
    if row.started_at and row.finished_at:
        ms = (row.finished_at - row.started_at).total_seconds() * 1000
        text += f"  {ms:,.0f} ms"
    error = (row.error or {}).get("message")
    if error and row.state in (StepState.RETRYING, StepState.FAILED, StepState.REJECTED):
        text += f"  — {error}"
    if row.state is StepState.SKIPPED and row.detail.get("why") == "when":
        text += "  (condition false)"
    return text


class TerminalChat:
    """Prints to a stream; answers approvals by prompt, by policy, or not at all."""

    def __init__(
        self,
        *,
        out: TextIO | None = None,
        interactive: bool = False,
        approve_all: bool = False,
        answer_as: str | None = None,
        only_run: Callable[[], str | None] | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.interactive = interactive
        self.approve_all = approve_all
        self.answer_as = answer_as
        self.answer: Answer | None = None
        self._only_run = only_run
        self._seen: dict[str, dict[str, tuple[StepState, int]]] = {}
        self._asked: set[tuple[str, str]] = set()

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _mine(self, view: RunView) -> bool:
        wanted = self._only_run() if self._only_run else None
        run = view.snapshot.run
        return wanted is None or run.id == wanted or run.parent_run_id == wanted

    async def run_changed(self, view: RunView) -> None:
        if not self._mine(view):
            return
        run = view.snapshot.run
        seen = self._seen.setdefault(run.id, {})
        rows = sorted(view.snapshot.steps.values(), key=lambda r: r.started_at or run.created_at)
        for row in rows:
            marker = (row.state, row.attempt)
            if seen.get(row.key) != marker:
                seen[row.key] = marker
                self._print(describe(row))
        if run.state.finished and seen.get("") != (StepState.SUCCEEDED, 0):
            seen[""] = (StepState.SUCCEEDED, 0)
            took = ((run.finished_at or run.updated_at) - run.created_at).total_seconds()
            line = f"Run {run.id} {run.state.value} in {took:.1f} s"
            if run.state is not RunState.SUCCEEDED and run.error:
                line += f": {run.error.get('message', '')}"
            self._print(line)

    async def approval_changed(self, view: RunView, step_key: str) -> None:
        if not self._mine(view):
            return
        snapshot = view.snapshot
        approval = snapshot.approvals.get(step_key)
        if approval is None or approval.state != "pending":
            return
        tag = (snapshot.run.id, f"{step_key}#{approval.level}")
        if tag in self._asked:
            return
        self._asked.add(tag)
        row = snapshot.steps[step_key]
        from bot.definitions.models import ApprovalStep

        step = view.flow.step(row.step_id)
        assert isinstance(step, ApprovalStep)
        level = step.levels()[approval.level]
        who = [*(level.approvers.users if level.approvers else ())]
        who += [f"@{g}" for g in (level.approvers.groups if level.approvers else ())]
        who += [q.label or q.group or ",".join(q.users) for q in level.quorum]
        done = progress(level, counted(approval, snapshot.votes_for(step_key)))
        self._print(f"  ? {row.detail.get('question', step_key)}")
        self._print(f"    who may decide: {', '.join(who)} ({done.required} needed)")
        await self._answer(snapshot.run.id, step_key)

    async def _answer(self, run_id: str, step_key: str) -> None:
        if self.answer is None:
            return
        if self.approve_all:
            self._print(f"    {await self.answer(run_id, step_key, True, None)}")
            return
        if not self.interactive:
            who = self.answer_as or "USER"
            self._print(f"    waiting: relay approve {run_id} {step_key} --as {who}")
            return
        reply = await asyncio.to_thread(input, "    approve? [y/n/Enter to leave it waiting] ")
        choice = reply.strip().lower()
        if choice not in ("y", "yes", "n", "no"):
            self._print(f"    left waiting: relay approve {run_id} {step_key} --as USER")
            return
        reason = await asyncio.to_thread(input, "    reason (optional): ")
        result = await self.answer(run_id, step_key, choice.startswith("y"), reason or None)
        self._print(f"    {result}")

    async def alert(self, view: RunView, step_key: str) -> None:
        if not self._mine(view):
            return
        run = view.snapshot.run
        row = view.snapshot.steps.get(step_key)
        if row is None:
            # No step failed (the run's ``outputs`` did): there is nothing to retry or skip.
            message = (run.error or {}).get("message", "failed")
            self._print(f"  ! ALERT {run.flow} run {run.id} failed for good: {message}")
            return
        message = (row.error or {}).get("message", "failed")
        self._print(
            f"  ! ALERT {run.flow} run {run.id}: step {step_key} failed for good: {message}"
        )
        self._print(
            f"    operators: relay retry {run.id} | relay skip {run.id} | relay cancel {run.id}"
        )

    async def remind(self, view: RunView, step_key: str) -> None:
        if self._mine(view):
            self._print(f"  ⏰ still waiting for a decision on {step_key}")

    def literal(self, text: str) -> str:
        return text

    async def notify(
        self, view: RunView, *, channel: str | None, user: str | None, text: str
    ) -> None:
        if self._mine(view):
            target = f"#{channel}" if channel else f"@{user}" if user else "thread"
            self._print(f"  → {target}: {text}")
