"""Every Slack message rendered from real run rows, checked against Slack's limits."""

from __future__ import annotations

import dataclasses
import html
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.definitions.models import FlowDef
from bot.engine.events import Cancel, Retry, Skip
from bot.engine.ports import RunView
from bot.engine.records import Attempt, Run, Snapshot, StepRun
from bot.engine.states import Decision, RunState, StepState
from bot.slack import blocks
from bot.slack.blocks import Message, Ref
from bot.slack.text import author_mrkdwn, duration, escape, pack, truncate
from tests.fakeslack.validation import block_problems, message_content
from tests.unit.engine.harness import T0, World, definition, world
from tests.unit.slack.samples import (
    APPROVAL,
    EVIL,
    SAFE_EVIL,
    no_raw_markup,
    started_approval,
    view_of,
)


def dumped(message: Message) -> str:
    return json.dumps(message.as_kwargs(), ensure_ascii=False)


def valid(message: Message) -> Message:
    """The message as Slack would take it: no block problem, text within limits."""
    kwargs = message.as_kwargs()
    assert block_problems(kwargs["blocks"], surface="message") == []
    content = message_content(kwargs)
    assert content.warnings == ()
    for block in kwargs["blocks"]:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
    return message


def buttons(message: Message) -> list[dict[str, Any]]:
    return [
        element
        for block in message.as_kwargs()["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


# ---------------------------------------------------------------- text helpers


@given(st.text())
def test_escape_leaves_no_markup(text: str) -> None:
    out = escape(text)
    assert "<" not in out and ">" not in out
    assert html.unescape(out) == text or "&" in text  # html.unescape knows more entities
    assert out.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").count("&") == 0


@given(st.text())
def test_notify_text_is_safe_and_quoting_twice_changes_nothing(text: str) -> None:
    once = author_mrkdwn(text)
    assert author_mrkdwn(once) == once
    assert author_mrkdwn(escape(text)) == escape(text)
    assert "<!" not in once and "<http" not in once


@given(st.text(), st.integers(min_value=0, max_value=500))
def test_truncate_never_exceeds_the_limit(text: str, limit: int) -> None:
    out = truncate(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text


@given(st.text(alphabet="a<>&b ", max_size=400), st.integers(min_value=40, max_value=300))
def test_truncate_keeps_escaped_text_whole(text: str, limit: int) -> None:
    out = truncate(escape(text), limit)
    assert len(out) <= limit
    assert "<" not in out
    body = out.split("… (", 1)[0]
    assert body.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").count("&") == 0


def test_truncate_says_how_much_was_cut() -> None:
    assert truncate("x" * 100, 50) == "x" * 27 + "… (73 more characters)"


@given(
    st.lists(st.text(max_size=200), max_size=60),
    st.integers(min_value=30, max_value=400),
    st.integers(min_value=1, max_value=5),
)
def test_pack_respects_size_and_count(lines: list[str], limit: int, most: int) -> None:
    chunks = pack(lines, limit=limit, max_chunks=most, more=lambda n: f"… {n} more")
    assert len(chunks) <= most
    assert all(len(chunk) <= limit for chunk in chunks)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.35, "350 ms"),
        (4.5, "4.5 s"),
        (42, "42 s"),
        (125, "2 min 5 s"),
        (3600, "1 h"),
        (3 * 3600 + 600, "3 h 10 min"),
        (-5, "0 ms"),
    ],
)
def test_durations_read_like_speech(seconds: float, words: str) -> None:
    assert duration(timedelta(seconds=seconds)) == words


@given(st.text(max_size=80))
def test_ref_decodes_only_what_it_encoded(value: str) -> None:
    try:
        ref = Ref.decode(value)
    except ValueError:
        return
    assert ref.encode() == value


def test_ref_round_trip_and_garbage() -> None:
    ref = Ref("abc123", "load[3]")
    assert Ref.decode(ref.encode()) == ref
    assert Ref.decode(Ref("abc123").encode()) == Ref("abc123")
    for garbage in ("", "no-separator", "|step", "run|Bad Step", "run|a|b", "r" * 65 + "|a"):
        with pytest.raises(ValueError):
            Ref.decode(garbage)


# ---------------------------------------------------------------- run status

INPUTS = """
name: shop
title: Ship an order
inputs:
  note: {type: string}
  token: {type: string, secret: true}
steps:
  - {id: fetch, title: Fetch it, kind: http, url: "http://x/a", retry: {attempts: 4}}
  - id: fan
    kind: http
    url: "http://x/{{ item }}"
    for_each: {items: [a, b, c, d, e, f], concurrency: 3}
  - id: both
    kind: parallel
    branches:
      left: [{id: l1, kind: http, url: "http://x/l"}]
      right: [{id: r1, kind: notify, text: hi}]
  - {id: tell, kind: notify, text: "done {{ inputs.note }}"}
"""


def test_status_escapes_inputs_and_masks_secrets() -> None:
    w = world(INPUTS)
    run = w.start("shop", {"note": EVIL, "token": "hunter2"})
    message = valid(blocks.run_status(view_of(w, run), now=w.now))
    text = dumped(message)
    no_raw_markup(text)
    no_raw_markup(message.text)
    assert SAFE_EVIL in text
    assert "hunter2" not in text and "***" in text
    assert "Ship an order" in text and "<@U0REQ>" in text
    assert "`fetch` Fetch it" in text and "not started" in text


def test_status_shows_items_branches_retries_and_the_end() -> None:
    w = world(INPUTS)
    run = w.start("shop", {"note": "n", "token": "t"})
    w.fail(run, "fetch", "HTTP 503 from x: <b>busy</b>", retryable=True, status=503)
    text = dumped(valid(blocks.run_status(view_of(w, run), now=w.now)))
    assert "retrying" in text and "next try in" in text and "&lt;b&gt;busy" in text
    w.advance(60)
    w.fire(run, "fetch", w.timers(run)[0].purpose)
    w.succeed(run, "fetch")
    w.succeed(run, "fan[0]")
    w.fail(run, "fan[1]", "boom <!here>")
    text = dumped(valid(blocks.run_status(view_of(w, run), now=w.now)))
    assert "6 items" in text and "attempt 2" in text
    assert "`fan[1]`" in text and "&lt;!here&gt;" in text
    assert w.run(run).state is RunState.FAILED
    assert "Failed" in text and "after" in text


def test_status_of_a_parallel_and_a_success() -> None:
    w = world(INPUTS)
    run = w.start("shop", {"note": "n", "token": "t"})
    w.succeed(run, "fetch")
    for index in range(6):
        w.succeed(run, f"fan[{index}]")
    text = dumped(valid(blocks.run_status(view_of(w, run), now=w.now)))
    assert "↳ left: … `l1`" in text and "↳ right:" in text
    w.succeed(run, "l1")
    w.succeed(run, "r1")
    w.advance(5)
    w.succeed(run, "tell")
    message = valid(blocks.run_status(view_of(w, run), now=w.now))
    assert "Succeeded* in 5 s" in dumped(message)
    assert message.text == "Ship an order: run run1 succeeded after 5 s"


def test_status_of_a_cancelled_run_says_who() -> None:
    w = world(INPUTS)
    run = w.start("shop", {"note": "n", "token": "t"})
    w.apply(run, Cancel(actor="U0OPS", reason=EVIL))
    text = dumped(valid(blocks.run_status(view_of(w, run), now=w.now)))
    assert "Cancelled* by <@U0OPS>" in text and SAFE_EVIL in text


def big_view(steps: int, *, title: str = "") -> RunView:
    flow = FlowDef.model_validate(
        {
            "name": "big",
            "steps": [
                {"id": f"s{i}", "kind": "http", "url": "http://x", "title": title or None}
                for i in range(steps)
            ],
        }
    )
    run = Run(
        id="bigrun",
        flow="big",
        definition={},
        definition_hash="",
        state=RunState.FAILED,
        inputs={},
        started_by="U0REQ",
        created_at=T0,
        updated_at=T0,
        error={"reason": "failed", "step": "s1", "message": "x" * 5000},
    )
    rows = {
        f"s{i}": StepRun(
            run_id="bigrun",
            key=f"s{i}",
            step_id=f"s{i}",
            kind="http",
            state=StepState.FAILED if i % 7 == 0 else StepState.SUCCEEDED,
            attempt=3,
            started_at=T0,
            finished_at=T0 + timedelta(milliseconds=350),
            error={"message": "<!channel> " + "e" * 900},
        )
        for i in range(steps)
    }
    return RunView(snapshot=Snapshot(run=run, steps=rows), flow=flow)


@pytest.mark.parametrize("steps", [200, 500])
def test_status_of_a_huge_run_fits_one_message(steps: int) -> None:
    message = valid(blocks.run_status(big_view(steps, title="T" * 120), now=T0))
    assert len(message.blocks) <= 50
    text = dumped(message)
    assert "more lines: `relay show bigrun`" in text
    no_raw_markup(text)


def test_status_of_200_short_steps_lists_them_all() -> None:
    message = valid(blocks.run_status(big_view(200), now=T0))
    assert len(message.blocks) <= 50
    assert "`s199`" in dumped(message)


# ---------------------------------------------------------------- approvals


def test_card_while_pending_has_buttons_and_progress() -> None:
    w, run = started_approval()
    w.advance(600)
    w.vote(run, "ok", "U0A", fields={"ticket": "7"})
    message = valid(blocks.approval_card(view_of(w, run), "ok", now=w.now))
    text = dumped(message)
    no_raw_markup(text)
    no_raw_markup(message.text)
    assert "Spend 12.5 on " + SAFE_EVIL in text
    assert "s3cret" not in text
    assert "*1 of 2 approvals*: <@U0A> approved, waiting on 1 more" in text
    assert "<!subteam^S0LEGAL>" in text and "<@U0B>" in text
    assert "50 min left" in text and "then it is rejected" in text
    assert "Ticket: 7" in text
    found = buttons(message)
    assert [(b["action_id"], b.get("style")) for b in found] == [
        (blocks.APPROVE, "primary"),
        (blocks.REJECT, "danger"),
    ]
    assert {b["value"] for b in found} == {Ref(run, "ok").encode()}


def test_card_after_a_rejection_has_reasons_and_no_buttons() -> None:
    w, run = started_approval()
    w.vote(run, "ok", "U0B", Decision.REJECTED, reason="no: " + EVIL)
    message = valid(blocks.approval_card(view_of(w, run), "ok", now=w.now))
    text = dumped(message)
    no_raw_markup(text)
    assert buttons(message) == []
    assert "Rejected* by <@U0B>" in text and "no: " + SAFE_EVIL in text
    assert message.text.startswith("Rejected:")


def test_card_after_a_timeout_says_so() -> None:
    w, run = started_approval()
    w.advance(3601)
    from bot.engine.states import TimerPurpose

    w.fire(run, "ok", TimerPurpose.APPROVAL_TIMEOUT)
    message = valid(blocks.approval_card(view_of(w, run), "ok", now=w.now))
    assert buttons(message) == []
    assert "Rejected automatically" in dumped(message)


def test_card_of_a_cancelled_run_has_no_buttons() -> None:
    w, run = started_approval()
    w.apply(run, Cancel(actor="U0OPS"))
    message = valid(blocks.approval_card(view_of(w, run), "ok", now=w.now))
    assert buttons(message) == []
    assert "Cancelled" in dumped(message)
    # Even if the approval row were still pending, a finished run shows no buttons.
    view = view_of(w, run)
    pending = dataclasses.replace(view.snapshot.approvals["ok"], state="pending", how=None)
    snapshot = dataclasses.replace(view.snapshot, approvals={"ok": pending})
    message = blocks.approval_card(dataclasses.replace(view, snapshot=snapshot), "ok", now=w.now)
    assert buttons(valid(message)) == []


def test_card_names_quorums_by_group() -> None:
    flow = """
name: q
steps:
  - id: ok
    kind: approval
    question: go?
    quorum: [{group: S0LEGAL, label: legal}, {group: S0OPS, required: 2}]
"""
    w = world(flow)
    run = w.start("q")
    w.vote(run, "ok", "U0X", groups=frozenset({"S0OPS"}))
    text = dumped(valid(blocks.approval_card(view_of(w, run), "ok", now=w.now)))
    assert "1 of 3 approvals" in text
    assert "waiting on 1 from legal (<!subteam^S0LEGAL>), 1 from <!subteam^S0OPS>" in text


def test_reminder_reaches_those_who_have_not_answered() -> None:
    w, run = started_approval()
    w.vote(run, "ok", "U0A", fields={"ticket": "1"})
    w.advance(1800)
    message = valid(blocks.reminder(view_of(w, run), "ok", now=w.now))
    text = dumped(message)
    assert "Waiting on <@U0B>, <!subteam^S0LEGAL>" in text and "<@U0A>," not in text
    assert "30 min left" in text
    no_raw_markup(text)


def test_approvals_message_stays_within_limits() -> None:
    w = world(APPROVAL)
    items = []
    for _ in range(60):
        run = w.start("spend", {"amount": 1, "memo": EVIL, "key": "k"})
        items.append((view_of(w, run), "ok"))
    message = valid(blocks.approvals_message(items, now=w.now))
    assert len(message.blocks) <= 50 and "more waiting" in dumped(message)
    assert len(buttons(message)) == 2 * blocks.LIST_ITEMS
    no_raw_markup(dumped(message))


# ---------------------------------------------------------------- failures

FAILING = """
name: ops
alerts: {mention: {users: [U0LEAD], groups: [S0ONCALL]}}
steps:
  - {id: a, kind: http, url: "http://x/a", compensate: [{id: undo_a, kind: http, url: "http://x/u"}]}
  - {id: b, kind: http, url: "http://x/b", retry: {attempts: 2}}
"""


def failed_run() -> tuple[World, str]:
    w = world(FAILING)
    run = w.start("ops")
    w.succeed(run, "a")
    w.fail(run, "b", "HTTP 500 from x", retryable=True, status=500)
    w.advance(10)
    from bot.engine.states import TimerPurpose

    w.fire(run, "b", TimerPurpose.RETRY)
    w.fail(run, "b", "HTTP 500 from x", retryable=True, status=500)
    return w, run


def with_excerpt(view: RunView, key: str, excerpt: str) -> RunView:
    row = view.snapshot.steps[key]
    row = dataclasses.replace(row, error={**(row.error or {}), "excerpt": excerpt})
    snapshot = dataclasses.replace(view.snapshot, steps={**view.snapshot.steps, key: row})
    return dataclasses.replace(view, snapshot=snapshot)


def test_alert_while_compensating_and_failed_offers_the_operator_buttons() -> None:
    w, run = failed_run()
    assert w.run(run).state is RunState.COMPENSATING
    message = valid(blocks.alert(view_of(w, run), "b", permalink=None, now=w.now))
    assert [b["action_id"] for b in buttons(message)] == [blocks.RETRY, blocks.SKIP, blocks.CANCEL]
    assert "Undo steps are running" in dumped(message)
    w.succeed(run, "undo_a")
    assert w.run(run).state is RunState.FAILED
    view = with_excerpt(view_of(w, run), "b", '{"error": "' + EVIL + '", "token": "***"}')
    link = "https://example.slack.com/archives/C1/p1"
    message = valid(blocks.alert(view, "b", permalink=link, now=w.now))
    text = dumped(message)
    found = buttons(message)
    assert [b["action_id"] for b in found] == [blocks.RETRY, blocks.SKIP, blocks.CANCEL]
    assert {b["value"] for b in found} == {Ref(run, "b").encode()}
    assert "confirm" in found[2]
    assert "HTTP 500" in text and "2 attempts" in text and SAFE_EVIL in text
    assert "cc <@U0LEAD>, <!subteam^S0ONCALL>" in text
    assert f"<{link}|" in text
    no_raw_markup(text)
    no_raw_markup(message.text)


def test_alert_after_a_retry_or_skip_has_no_buttons() -> None:
    w, run = failed_run()
    w.succeed(run, "undo_a")
    w.apply(run, Retry(actor="U0OPS"))
    message = valid(blocks.alert(view_of(w, run), "b", permalink="javascript:x", now=w.now))
    assert buttons(message) == []
    assert "reopened and is running" in dumped(message)
    assert "javascript" not in dumped(message)
    w2, run2 = failed_run()
    w2.succeed(run2, "undo_a")
    w2.apply(run2, Skip(actor="U0OPS"))
    message = valid(blocks.alert(view_of(w2, run2), "b", permalink=None, now=w2.now))
    assert buttons(message) == [] and "skipped by <@U0OPS>" in dumped(message)


def test_step_detail_says_it_will_retry() -> None:
    w = world(FAILING)
    run = w.start("ops")
    w.succeed(run, "a")
    w.fail(run, "b", "HTTP 503: " + EVIL, retryable=True, status=503)
    view = with_excerpt(view_of(w, run), "b", "<html>" + "y" * 5000)
    attempt = Attempt(
        run_id=run,
        step_key="b",
        number=1,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
        outcome="failed",
        status=503,
        error="HTTP 503: " + EVIL,
    )
    message = valid(blocks.step_detail(view, attempt))
    text = dumped(message)
    assert "`b` attempt 1 of 2 failed · 2 s · HTTP 503" in text
    assert "Will retry <!date^" in text and "&lt;html&gt;" in text
    no_raw_markup(text)


# ---------------------------------------------------------------- notify, replies, lists


def test_notification_keeps_formatting_but_no_pings() -> None:
    message = valid(blocks.notification(f"*Shipped* to <@U0ABC> in <#C0ORDERS>: {EVIL}"))
    text = dumped(message)
    assert "*Shipped* to <@U0ABC> in <#C0ORDERS>: " + SAFE_EVIL in text
    no_raw_markup(text)
    no_raw_markup(message.text)
    quoted = dumped(valid(blocks.notification(f"*Order* {escape(EVIL)} AT&T")))
    assert f"*Order* {SAFE_EVIL} AT&amp;T" in quoted and "&amp;lt;" not in quoted
    huge = valid(blocks.notification("line <!here>\n" * 20_000))
    assert len(huge.blocks) <= 50 and len(huge.text) <= 40_000
    assert "<!here>" not in dumped(huge)


def test_help_lists_every_subcommand() -> None:
    text = dumped(valid(blocks.help_message()))
    for usage in (
        "help",
        "list",
        "run FLOW key=value",
        "status [RUN]",
        "cancel RUN",
        "retry RUN",
        "approvals",
        "opens a form",
    ):
        assert usage in text
    assert dumped(valid(blocks.reply("done"))).count("done") == 2


def test_flows_and_runs_lists() -> None:
    assert "No flows" in dumped(valid(blocks.flows_message([])))
    flow = definition(APPROVAL).flow
    evil = flow.model_copy(update={"description": EVIL})
    message = valid(blocks.flows_message([evil] * 80))
    text = dumped(message)
    assert len(message.blocks) <= 50 and "`amount` (number)" in text and "secret" in text
    no_raw_markup(text)
    assert "no recent runs" in dumped(valid(blocks.runs_message([], now=T0)))
    w, run = failed_run()
    runs = [w.run(run)] * 300
    message = valid(blocks.runs_message(runs, now=w.now + timedelta(minutes=5)))
    assert "`run1` ops · compensating · started 5 min" in dumped(message)
