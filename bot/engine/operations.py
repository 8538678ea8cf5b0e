"""What people ask of Relay (start, decide, cancel, retry, skip), with the checks first.

The CLI and the Slack adapter both call these; neither holds a rule of its own.
Every refusal raises a ``RelayError`` whose message tells the person what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.definitions.inputs import coerce_inputs
from bot.definitions.models import ApprovalStep, FlowDef
from bot.engine.approvals import counted, field_problem, may_decide, relevant_groups
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
        flow = await self.check_may_run(flow_name, actor)
        inputs = coerce_inputs(flow, raw_inputs)
        where = {"via": actor.via, **({"channel": actor.channel} if actor.channel else {})}
        return await self.engine.create(
            flow_name, inputs, started_by=actor.user, source={**where, **(source or {})}
        )

    async def check_may_run(self, flow_name: str, actor: Actor) -> FlowDef:
        """The flow, if the actor may run it; raises FlowNotFound or PermissionDenied.

        Chat asks before it opens a form for the inputs, so nobody fills one in vain.
        """
        flow = self.engine.definition(flow_name).flow
        groups = await self.directory.groups_of(actor.user, audience_groups(flow))
        if not may_run(flow, actor.user, groups, actor.channel):
            raise PermissionDenied(
                f"you may not run `{flow_name}`; ask someone listed in its `permissions.run`"
            )
        return flow

    async def runnable(self, actor: Actor) -> list[FlowDef]:
        """The flows the actor may start, by name."""
        found = []
        for _, flow in sorted(self.engine.flows.items()):
            groups = await self.directory.groups_of(actor.user, audience_groups(flow))
            if may_run(flow, actor.user, groups, actor.channel):
                found.append(flow)
        return found

    async def waiting_for(self, actor: Actor, *, scan: int = 500) -> list[tuple[Run, str]]:
        """Pending approvals the actor could decide now (run, step key), oldest first."""
        found = []
        for run, row, approval in await self.store.pending_approvals(limit=scan):
            step = flow_of(run).step(row.step_id)
            if not isinstance(step, ApprovalStep) or not run.state.active:
                continue
            level = step.levels()[min(approval.level, len(step.levels()) - 1)]
            groups = await self.directory.groups_of(actor.user, relevant_groups(level))
            if may_decide(level, actor.user, groups) and (
                step.allow_requester or run.started_by != actor.user
            ):
                found.append((run, row.key))
        return found

    async def check_may_vote(self, run_ref: str, step_key: str, actor: Actor) -> ApprovalStep:
        """Raise VoteRefused now if this person's vote could not count whatever they answer.

        Chat asks before opening a form for a reason; the vote itself is checked
        again, fully and atomically, when it is cast.
        """
        run = await self.store.find_run(run_ref)
        snapshot = await self.store.snapshot(run.id)
        approval = snapshot.approvals.get(step_key)
        if step_key not in snapshot.steps or approval is None:
            raise StepNotFound(f"run {run.id} has no approval `{step_key}` waiting")
        if approval.state != "pending":
            who = ", ".join(approval.decided_by) or approval.how or "the system"
            raise VoteRefused(f"this approval was already {approval.state} ({who})")
        if not run.state.active:
            raise VoteRefused(f"the run is {run.state.value}")
        step = flow_of(run).step(snapshot.steps[step_key].step_id)
        assert isinstance(step, ApprovalStep)
        level = step.levels()[min(approval.level, len(step.levels()) - 1)]
        groups = await self.directory.groups_of(actor.user, relevant_groups(level))
        if not may_decide(level, actor.user, groups):
            raise VoteRefused("you are not one of the approvers of this step")
        if actor.user == run.started_by and not step.allow_requester:
            raise VoteRefused("you started this run, so someone else has to decide")
        votes = counted(approval, snapshot.votes_for(step_key))
        if any(vote.voter == actor.user for vote in votes):
            raise VoteRefused("you have already answered this approval")
        return step

    @staticmethod
    def form_problems(
        step: ApprovalStep, decision: Decision, reason: str | None, fields: dict[str, Any]
    ) -> dict[str, str]:
        """What is wrong with a filled-in decision form, per field (``reason`` or a field id).

        Chat shows these next to the fields before the vote is cast.
        """
        problems: dict[str, str] = {}
        needs_reason = step.require_reason == "always" or (
            step.require_reason == "reject" and decision is Decision.REJECTED
        )
        if needs_reason and not (reason and reason.strip()):
            problems["reason"] = "a reason is required"
        if decision is Decision.APPROVED:
            for spec in step.fields:
                alone = step.model_copy(update={"fields": [spec]})
                problem = field_problem(alone, {spec.id: fields.get(spec.id)})
                if problem is not None:
                    problems[spec.id] = problem
        return problems

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
        snapshot = await self.store.find_snapshot(run_ref)
        run = snapshot.run
        row, approval = snapshot.steps.get(step_key), snapshot.approvals.get(step_key)
        if row is None or approval is None:
            raise StepNotFound(f"run {run.id} has no approval `{step_key}` waiting")
        step = flow_of(run).step(row.step_id)
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
