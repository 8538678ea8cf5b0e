"""A retried approval is asked again, and both requests' answers stay in the votes table.

Before votes were keyed by round, the second answer of the same voter at the
same level overwrote the first; only the audit trail still showed it.
"""

from __future__ import annotations

from bot.engine.events import Retry
from bot.engine.operations import Actor
from bot.engine.states import Decision, RunState, StepState
from tests.integration.engine.support import flow, replica

AGAIN = flow(
    """
name: again
steps:
  - id: ok
    kind: approval
    question: "ship it?"
    approvers: {users: [U0A]}
    compensate: [{id: undo, kind: notify, text: "undone"}]
  - id: fail
    kind: http
    url: "http://127.0.0.1:9/never"
    retry: {attempts: 1}
"""
)


async def test_both_requests_keep_their_votes(db_url: str) -> None:
    async with replica(db_url, [AGAIN]) as relay:
        run = await relay.operations.start("again", {}, Actor(user="U0REQ", via="cli"))
        await relay.settle()
        voter = Actor(user="U0A", via="cli")
        await relay.operations.decide(run.id, "ok", voter, Decision.APPROVED)
        await relay.settle()
        assert (await relay.store.get_run(run.id)).state is RunState.FAILED

        await relay.engine.apply(run.id, Retry(actor="U0OPS"))
        await relay.settle()
        asked = await relay.store.snapshot(run.id)
        assert asked.steps["ok"].state is StepState.WAITING
        assert asked.approvals["ok"].round == 1

        await relay.operations.decide(run.id, "ok", voter, Decision.REJECTED, reason="not now")
        await relay.settle()
        after = await relay.store.snapshot(run.id)
        kept = sorted((vote.round, vote.decision) for vote in after.votes)
        assert kept == [(0, Decision.APPROVED), (1, Decision.REJECTED)]
        assert after.approvals["ok"].state == "rejected"
