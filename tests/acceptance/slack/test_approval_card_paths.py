"""The approval card follows every path that touches its approval, not only a click.

A vote from `relay approve` in another process, a timeout, an escalation and a
cancel each edit the card (chat.update on the ts it was posted at) and, once the
approval is decided, take its buttons away. Reminders go into the card's thread;
an approval with form `fields` asks for them in a modal. Time moves with a clock
the test holds, which `relay serve` uses for its engine, outbox and chat: the
worker's next tick (0.25 s) fires whatever became due, so nothing sleeps an hour.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.engine.runner import Clock
from bot.engine.states import RunState
from tests.fakeslack import Call, block_actions, slash_command, view_submission

from .conftest import FINANCE, OPS, Relay, running_relay
from .test_approvals import buttons, card_in, click

FLOWS = sorted((Path(__file__).parent / "flows").glob("*.yaml"))
BOB, CAROL = FINANCE
"""The approvers of the flows in ``flows/`` (and members of S0FINANCE)."""
LEAD = "U0OPSLEAD1"
"""With Carol, who an escalated approval goes to."""
CLI_SECONDS = 30.0
"""A generous bound for one `relay` subprocess (it takes about 1.5 s)."""


class MovableClock(Clock):
    """Wall-clock time plus however far the test has moved it.

    Not a stopped clock: `relay approve` in another process stamps its outbox
    items with the wall clock, and `relay serve` must find them due.
    """

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: MovableClock
) -> AsyncIterator[Relay]:
    """`relay serve` over HTTP with the flows of ``flows/`` and the test's clock."""
    async with running_relay(
        tmp_path, monkeypatch, socket=False, clock=clock, flows=FLOWS
    ) as running:
        yield running


# ---------------------------------------------------------------- helpers


async def start(relay: Relay, flow: str, assignments: str) -> str:
    """Start ``flow`` as Alice from C0GENERAL; returns the run id once it waits."""
    command = slash_command(
        text=f"run {flow} {assignments}", user_id=OPS, channel_id="C0GENERAL", fake=relay.fake
    )
    assert (await relay.send(command)).status == 200
    run = await relay.run_in(RunState.WAITING)
    return str(run.id)


def updates_of(relay: Relay, card: dict[str, Any], channel: str) -> list[Call]:
    """Every chat.update Relay made to the card, oldest first."""
    return [
        call
        for call in relay.fake.calls_to("chat.update")
        if call.args.get("channel") == channel and call.args.get("ts") == card["ts"]
    ]


def rendered(call: Call) -> str:
    """A message call's fallback text and blocks as one searchable string."""
    return f"{call.args.get('text', '')} {json.dumps(call.args.get('blocks', []))}"


async def card_update(
    relay: Relay, card: dict[str, Any], channel: str, shows: Callable[[Call], bool]
) -> Call:
    """Wait for a successful chat.update of the card that ``shows`` accepts."""

    def find() -> Call | None:
        return next(
            (call for call in updates_of(relay, card, channel) if call.ok and shows(call)), None
        )

    found: Call = await relay.until(find, within=5.0)
    return found


def closed(call: Call) -> bool:
    """The update has no buttons left (Slack would show none)."""
    return not buttons({"blocks": call.args.get("blocks", [])})


async def relay_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """Run `relay ARGS` in its own process on the served SQLite file, as an operator would."""
    environ = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
        "RELAY_FLOWS_DIR": str(tmp_path / "flows"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=environ,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), CLI_SECONDS)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# ---------------------------------------------------------------- 1. every path edits the card


async def test_a_vote_from_the_cli_edits_the_card_and_takes_its_buttons(
    relay: Relay, tmp_path: Path
) -> None:
    """`relay approve` runs in another process: only the shared database links it to Slack."""
    run_id = await start(relay, "gate", "note=v7")
    card = await card_in(relay, "C0GENERAL")
    assert "relay_approve" in buttons(card) and "Ship v7?" in str(card)

    code, out, err = await relay_cli(
        tmp_path, "approve", run_id, "go", "--as", BOB, "--reason", "checked the build"
    )
    assert code == 0, err
    assert out.strip()

    update = await card_update(relay, card, "C0GENERAL", closed)
    shown = rendered(update)
    assert "Approved" in shown and f"<@{BOB}>" in shown
    assert "Approval needed" not in shown
    assert update.args["channel"] == "C0GENERAL" and update.args["ts"] == card["ts"]
    message = relay.fake.message("C0GENERAL", card["ts"])
    assert message is not None and not buttons(message) and f"<@{BOB}>" in str(message)

    run = await relay.run_in(RunState.SUCCEEDED)
    snapshot = await relay.store.snapshot(run.id)
    assert snapshot.approvals["go"].decided_by == (BOB,)
    assert [(vote.voter, vote.via) for vote in snapshot.votes_for("go")] == [(BOB, "cli")]
    # The card was posted once and edited, never posted again.
    cards = [m for m in relay.fake.messages("C0GENERAL") if "Ship v7?" in str(m)]
    assert [m["ts"] for m in cards] == [card["ts"]]


async def test_a_timeout_edits_the_card_to_say_so_without_buttons(
    relay: Relay, clock: MovableClock
) -> None:
    run_id = await start(relay, "gate", "note=v8")
    card = await card_in(relay, "C0GENERAL")
    assert "then it is rejected" in str(card)

    clock.advance(timedelta(hours=2, seconds=1))

    update = await card_update(relay, card, "C0GENERAL", closed)
    shown = rendered(update)
    assert "Rejected automatically" in shown
    assert "nobody decided before the deadline" in shown
    run = await relay.run_in(RunState.FAILED)
    assert run.id == run_id
    approval = (await relay.store.snapshot(run_id)).approvals["go"]
    assert (approval.state, approval.how, approval.decided_by) == ("rejected", "timeout", ())
    message = relay.fake.message("C0GENERAL", card["ts"])
    assert message is not None and not buttons(message)


async def test_an_escalation_shows_the_new_approvers_on_the_card_and_asks_them(
    relay: Relay, clock: MovableClock
) -> None:
    run_id = await start(relay, "escalating", "note=billing")
    card = await card_in(relay, "C0GENERAL")
    assert f"<@{BOB}>" in str(card) and f"<@{CAROL}>" not in str(card)

    clock.advance(timedelta(hours=1, seconds=1))

    def escalated(call: Call) -> bool:
        return "Escalated to level 2" in rendered(call)

    update = await card_update(relay, card, "C0GENERAL", escalated)
    shown = rendered(update)
    assert f"<@{CAROL}>" in shown and f"<@{LEAD}>" in shown
    assert buttons({"blocks": update.args["blocks"]}) == {"relay_approve", "relay_reject"}
    assert (await relay.store.snapshot(run_id)).approvals["go"].level == 1

    # Editing a message notifies nobody: the new approvers are asked in a new
    # message, in the card's thread, that mentions them.
    def asked() -> list[Call]:
        return [
            call
            for call in relay.fake.calls_to("chat.postMessage")
            if call.ok
            and call.args.get("channel") == "C0GENERAL"
            and call.args.get("thread_ts") == card["ts"]
            and f"<@{CAROL}>" in rendered(call)
            and f"<@{LEAD}>" in rendered(call)
        ]

    (ask,) = await relay.until(asked, within=5.0)
    assert "Escalated" in rendered(ask) and "Restart billing?" in rendered(ask)
    assert f"<@{BOB}>" not in rendered(ask)

    # The card's buttons now answer to the new approvers only.
    await click(relay, "relay_approve", card, BOB, "C0GENERAL")
    (refused,) = await relay.until(lambda: relay.ephemeral_texts(BOB))
    assert "not one of the approvers" in refused
    await click(relay, "relay_approve", card, CAROL, "C0GENERAL")
    await relay.run_in(RunState.SUCCEEDED)
    done = await card_update(relay, card, "C0GENERAL", closed)
    assert "Approved" in rendered(done) and f"<@{CAROL}>" in rendered(done)


async def test_an_escalation_of_direct_cards_sends_the_new_approvers_theirs(
    relay: Relay, clock: MovableClock
) -> None:
    """With `dm: true` each approver has a card of their own, so the new ones need one too."""
    await start(relay, "escalating-dm", "note=search")
    first = await relay.until(
        lambda: [c for c in relay.fake.calls_to("chat.postMessage") if c.args.get("channel") == BOB]
    )
    (bob_card,) = first
    dm = str(bob_card.response["channel"])
    card = {"ts": bob_card.response["ts"]}

    clock.advance(timedelta(hours=1, seconds=1))

    update = await card_update(relay, card, dm, lambda call: "Escalated" in rendered(call))
    assert f"<@{CAROL}>" in rendered(update) and f"<@{LEAD}>" in rendered(update)

    def cards_for(user: str) -> list[Call]:
        return [
            call
            for call in relay.fake.calls_to("chat.postMessage")
            if call.ok
            and call.args.get("channel") == user
            and "relay_approve" in buttons({"blocks": call.args.get("blocks", [])})
        ]

    for user in (CAROL, LEAD):
        (posted,) = await relay.until(lambda user=user: cards_for(user), within=5.0)
        assert "Restart search?" in rendered(posted) and "Escalated" in rendered(posted)


async def test_cancelling_the_run_edits_the_card_and_takes_its_buttons(relay: Relay) -> None:
    run_id = await start(relay, "gate", "note=v9")
    card = await card_in(relay, "C0GENERAL")

    cancel = slash_command(
        text=f"cancel {run_id}", user_id=OPS, channel_id="C0GENERAL", fake=relay.fake
    )
    assert (await relay.send(cancel)).status == 200

    update = await card_update(relay, card, "C0GENERAL", closed)
    shown = rendered(update)
    assert "Cancelled" in shown and "the run was stopped before a decision" in shown
    await relay.run_in(RunState.CANCELLED)
    assert (await relay.store.snapshot(run_id)).approvals["go"].state == "cancelled"
    # A click on the card as Bob's Slack still showed it changes nothing and says why.
    stale = block_actions(
        action_id="relay_approve",
        message=card,
        channel_id="C0GENERAL",
        user_id=BOB,
        fake=relay.fake,
    )
    assert (await relay.send(stale)).status == 200
    (told,) = await relay.until(lambda: relay.ephemeral_texts(BOB))
    assert "cancelled" in told
    assert (await relay.store.snapshot(run_id)).votes_for("go") == []


# ---------------------------------------------------------------- 2. reminders


async def test_reminders_go_into_the_cards_thread(relay: Relay, clock: MovableClock) -> None:
    await start(relay, "gate", "note=v10")
    card = await card_in(relay, "C0GENERAL")

    def reminders() -> list[Call]:
        return [
            call
            for call in relay.fake.calls_to("chat.postMessage")
            if "Still waiting for a decision" in rendered(call)
        ]

    clock.advance(timedelta(minutes=30, seconds=1))
    (first,) = await relay.until(reminders, within=5.0)
    assert first.ok
    assert first.args["channel"] == "C0GENERAL"
    assert first.args["thread_ts"] == card["ts"]
    assert first.response["channel"] == "C0GENERAL"
    shown = rendered(first)
    assert "Ship v10?" in shown and f"<@{BOB}>" in shown and f"<@{CAROL}>" in shown

    clock.advance(timedelta(minutes=30))
    await relay.until(lambda: len(reminders()) == 2, within=5.0)
    for call in reminders():
        assert (call.args["channel"], call.args["thread_ts"]) == ("C0GENERAL", card["ts"])
    replies = relay.fake.thread("C0GENERAL", card["ts"])
    assert [reply["ts"] for reply in replies] == [str(c.response["ts"]) for c in reminders()]
    # Reminders are replies, never new top-level messages, and the card still waits.
    assert [m["ts"] for m in relay.fake.messages("C0GENERAL") if "Ship v10?" in str(m)] == [
        card["ts"]
    ]
    still = relay.fake.message("C0GENERAL", card["ts"])
    assert still is not None and "relay_approve" in buttons(still)


# ---------------------------------------------------------------- 3. form fields


def field_values(
    *, ticket: str | None, window: str | None, notes: str | None
) -> dict[str, dict[str, Any]]:
    """`state.values` as Slack sends them: one entry per input block, null when left empty."""
    return {
        "reason": {"value": {"type": "plain_text_input", "value": None}},
        "field:ticket": {"value": {"type": "plain_text_input", "value": ticket}},
        "field:window": {"value": {"type": "number_input", "value": window}},
        "field:notes": {"value": {"type": "plain_text_input", "value": notes}},
    }


async def test_approving_with_fields_asks_for_them_in_a_form(relay: Relay) -> None:
    run_id = await start(relay, "change", "system=billing")
    card = await card_in(relay, "C0GENERAL")

    await click(relay, "relay_approve", card, BOB, "C0GENERAL")
    (opened,) = await relay.until(lambda: relay.fake.calls_to("views.open"), within=5.0)
    assert opened.ok
    view = opened.args["view"]
    assert view["callback_id"] == "relay_decision"
    inputs = {block["block_id"]: block for block in view["blocks"] if block["type"] == "input"}
    assert set(inputs) == {"reason", "field:ticket", "field:window", "field:notes"}
    assert inputs["field:ticket"]["label"]["text"] == "Change ticket"
    assert inputs["field:ticket"]["element"]["type"] == "plain_text_input"
    assert inputs["field:window"]["element"]["type"] == "number_input"
    assert inputs["field:notes"]["element"].get("multiline") is True
    optional = {block_id: bool(block.get("optional")) for block_id, block in inputs.items()}
    assert optional == {
        "reason": True,
        "field:ticket": False,
        "field:window": False,
        "field:notes": True,
    }
    form = relay.fake.views()[-1]
    updates_before = len(updates_of(relay, card, "C0GENERAL"))

    missing = await relay.send(
        view_submission(
            callback_id="relay_decision",
            view_id=form["id"],
            values=field_values(ticket=None, window="30", notes=None),
            user_id=BOB,
            fake=relay.fake,
        )
    )
    assert missing.status == 200
    assert missing.json() == {
        "response_action": "errors",
        "errors": {"field:ticket": "`Change ticket` is required"},
    }
    snapshot = await relay.store.snapshot(run_id)
    assert snapshot.approvals["go"].state == "pending" and snapshot.votes_for("go") == []
    assert len(updates_of(relay, card, "C0GENERAL")) == updates_before

    done = await relay.send(
        view_submission(
            callback_id="relay_decision",
            view_id=form["id"],
            values=field_values(ticket="CHG-1042", window="30", notes="after the backup"),
            user_id=BOB,
            fake=relay.fake,
        )
    )
    assert done.status == 200 and not done.body.strip()

    run = await relay.run_in(RunState.SUCCEEDED)
    snapshot = await relay.store.snapshot(run.id)
    (vote,) = snapshot.votes_for("go")
    assert (vote.voter, vote.via) == (BOB, "slack")
    assert vote.fields == {"ticket": "CHG-1042", "window": "30", "notes": "after the backup"}
    output = snapshot.steps["go"].output
    assert output["decision"] == "approved" and output["decided_by"] == [BOB]
    assert output["fields"] == {"ticket": "CHG-1042", "window": 30, "notes": "after the backup"}

    update = await card_update(relay, card, "C0GENERAL", closed)
    shown = rendered(update)
    assert "Approved" in shown and f"<@{BOB}>" in shown
    assert "Change ticket: CHG-1042" in shown and "Window in minutes: 30" in shown
    assert len(updates_of(relay, card, "C0GENERAL")) > updates_before
