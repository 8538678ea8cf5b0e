"""Flows, runs and checks shared by the message and view rendering tests."""

from __future__ import annotations

from bot.engine.ports import RunView
from tests.unit.engine.harness import World, world

EVIL = "<!channel> <http://evil.example|click> & co"
SAFE_EVIL = "&lt;!channel&gt; &lt;http://evil.example|click&gt; &amp; co"


def view_of(w: World, run_id: str) -> RunView:
    run = w.run(run_id)
    return RunView(snapshot=w.snapshots[run_id], flow=w.flows[run.flow].flow)


def no_raw_markup(text: str) -> None:
    assert "<!channel>" not in text
    assert "<http://evil" not in text


APPROVAL = """
name: spend
inputs:
  amount: {type: number}
  memo: {type: string}
  key: {type: string, secret: true}
steps:
  - id: ok
    kind: approval
    question: "Spend {{ inputs.amount }} on {{ inputs.memo }}?"
    details: "Asked by {{ run.started_by }}"
    approvers: {users: [U0A, U0B], groups: [S0LEGAL]}
    required: 2
    timeout: 1h
    fields:
      - {id: ticket, label: Ticket, type: integer}
      - {id: notes, label: Notes, type: text, required: false}
  - {id: after, kind: http, url: "http://x/after"}
"""


def started_approval() -> tuple[World, str]:
    w = world(APPROVAL)
    run = w.start("spend", {"amount": 12.5, "memo": EVIL, "key": "s3cret"})
    return w, run
