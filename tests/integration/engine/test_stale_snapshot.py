"""A snapshot remembered by one process, after another process moved the run on (SQLite).

On SQLite a transaction takes the run's remembered snapshot without checking
its version first: holding the write lock, only another process can have
moved the run. A decision that writes meets the version guard and is made
again on the rows; one that writes nothing is checked before it is answered.
"""

from __future__ import annotations

from bot.engine.events import Cancel, CastVote, Retry
from bot.engine.operations import Actor
from bot.engine.states import Decision, RunState, StepState
from tests.integration.engine.support import flow, replica
from tests.integration.engine.test_vote_rounds import AGAIN

PAUSE = flow(
    """
name: pause
steps:
  - {id: nap, kind: wait, duration: 1h}
"""
)


async def test_a_write_decided_on_an_old_snapshot_is_decided_again(sqlite_url: str) -> None:
    async with replica(sqlite_url, [PAUSE]) as one, replica(sqlite_url, [PAUSE]) as other:
        run = await one.operations.start("pause", {}, Actor(user="U0REQ"))
        assert (await other.engine.apply(run.id, Cancel(actor="U0OPS"))).changed

        # ``one`` still remembers the run waiting: cancelling it would write.
        again = await one.engine.apply(run.id, Cancel(actor="U0OTHER"))
        assert not again.changed
        after = await one.store.snapshot(run.id)
        assert after.run.state is RunState.CANCELLED
        trail = [entry.action for entry in await one.store.audit(run.id)]
        assert trail.count("run.cancelled") == 1


async def test_a_refusal_decided_on_an_old_snapshot_is_decided_again(sqlite_url: str) -> None:
    async with replica(sqlite_url, [AGAIN]) as one, replica(sqlite_url, [AGAIN]) as other:
        run = await one.operations.start("again", {}, Actor(user="U0REQ", via="cli"))
        await one.settle()
        await one.operations.decide(run.id, "ok", Actor(user="U0A"), Decision.APPROVED)
        await one.settle()
        assert (await one.store.get_run(run.id)).state is RunState.FAILED

        assert (await other.engine.apply(run.id, Retry(actor="U0OPS"))).changed
        # ``one`` remembers the run failed, where a vote is refused; it is asked again.
        vote = CastVote(
            key="ok",
            voter="U0A",
            voter_groups=frozenset(),
            decision=Decision.REJECTED,
            reason="not now",
        )
        counted = await one.engine.apply(run.id, vote)
        assert counted.changed, counted.reply
        after = await one.store.snapshot(run.id)
        assert after.steps["ok"].state is StepState.REJECTED
        assert sorted(v.round for v in after.votes) == [0, 1]
