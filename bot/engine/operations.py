"""What people ask of Relay (start, decide, cancel, retry, skip), with the checks first.

The CLI and the Slack adapter both call these; neither holds a rule of its own.
Every refusal raises a ``RelayError`` whose message tells the person what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.definitions.inputs import coerce_inputs
from bot.definitions.models import ApprovalStep
from bot.engine.approvals import relevant_groups
from bot.engine.events import Cancel, CastVote, Retry, Skip
from bot.engine.move import flow_of
from bot.engine.permissions import audience_groups, may_operate, may_run
from bot.engine.ports import Directory
from bot.engine.records import Run
from bot.engine.runner import Engine
from bot.engine.states import Decision
from bot.errors import OperationRefused, PermissionDenied, StepNotFound, VoteRefused


@dataclass(frozen=True, kw_only=True)
class Actor:
    """Who is asking, and from where."""

    user: str
    channel: str | None = None
    via: str = "cli"


class Operations:
    """The checked front door to the engine."""

    def __init__(self, *, engine: Engine, directory: Directory) -> None:
        self.engine = engine
        self.store = engine.store
        self.directory = directory

    async def start(
        self,
        flow_name: str,
        raw_inputs: Mapping[str, Any],
        actor: Actor,
        *,
        source: dict[str, Any] | None = None,
    ) -> Run:
        """Start a run if the actor may, with inputs checked; nothing is written otherwise."""
        flow = self.engine.definition(flow_name).flow
        groups = await self.directory.groups_of(actor.user, audience_groups(flow))
        if not may_run(flow, actor.user, groups, actor.channel):
            raise PermissionDenied(
                f"you may not run `{flow_name}`; ask someone listed in its `permissions.run`"
            )
        inputs = coerce_inputs(flow, raw_inputs)
        where = {"via": actor.via, **({"channel": actor.channel} if actor.channel else {})}
        return await self.engine.create(
            flow_name, inputs, started_by=actor.user, source={**where, **(source or {})}
        )

    async def decide(
        self,
        run_ref: str,
        step_key: str,
        actor: Actor,
        decision: Decision,
        *,
        reason: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> str:
        """Cast a vote; returns what to tell the voter. Raises VoteRefused with the reason."""
        run = await self.store.find_run(run_ref)
        snapshot = await self.store.snapshot(run.id)
        flow = flow_of(run)
        approval = snapshot.approvals.get(step_key)
        if step_key not in snapshot.steps or approval is None:
            raise StepNotFound(f"run {run.id} has no approval `{step_key}` waiting")
        step = flow.step(snapshot.steps[step_key].step_id)
        assert isinstance(step, ApprovalStep)
        level = step.levels()[min(approval.level, len(step.levels()) - 1)]
        groups = await self.directory.groups_of(actor.user, relevant_groups(level))
        transition = await self.engine.apply(
            run.id,
            CastVote(
                key=step_key,
                voter=actor.user,
                voter_groups=groups,
                decision=decision,
                reason=reason,
                fields=fields or {},
                via=actor.via,
            ),
        )
        if not transition.changed:
            raise VoteRefused(transition.reply or "your vote was not counted")
        return transition.reply or "counted"

    async def _operable(self, run_ref: str, actor: Actor, what: str) -> Run:
        run = await self.store.find_run(run_ref)
        flow = flow_of(run)
        groups = await self.directory.groups_of(actor.user, audience_groups(flow))
        if not may_operate(flow, run, actor.user, groups, actor.channel):
            raise PermissionDenied(
                f"you may not {what} runs of `{run.flow}`; "
                "ask someone listed in its `permissions.operate`"
            )
        return run

    async def cancel(self, run_ref: str, actor: Actor, *, reason: str | None = None) -> str:
        """Cancel a run (or close a failed one)."""
        run = await self._operable(run_ref, actor, "cancel")
        transition = await self.engine.apply(run.id, Cancel(actor=actor.user, reason=reason))
        if not transition.changed:
            raise OperationRefused(transition.reply or "nothing to cancel")
        return transition.reply or "cancelled"

    async def retry(self, run_ref: str, actor: Actor, *, step: str | None = None) -> str:
        """Reopen a failed run from its failed step."""
        run = await self._operable(run_ref, actor, "retry")
        transition = await self.engine.apply(run.id, Retry(actor=actor.user, key=step))
        if not transition.changed:
            raise OperationRefused(transition.reply or "nothing to retry")
        return transition.reply or "retrying"

    async def skip(self, run_ref: str, actor: Actor, *, step: str | None = None) -> str:
        """Skip a failed step and carry on."""
        run = await self._operable(run_ref, actor, "skip steps of")
        transition = await self.engine.apply(run.id, Skip(actor=actor.user, key=step))
        if not transition.changed:
            raise OperationRefused(transition.reply or "nothing to skip")
        return transition.reply or "skipped"
