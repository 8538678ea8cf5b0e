"""Approvals in Slack: the live card, clicks, forms, races and escaping."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.engine.states import RunState
from tests.fakeslack import block_actions, slash_command, view_submission

from .conftest import FINANCE, OPS, OUTSIDER, Relay

BIG_ORDER = "order_id=42 customer=ana@example.com sku=SKU-1 quantity=2 amount=1500"


def buttons(message: dict[str, Any]) -> set[str]:
    """The action ids of every button on a message."""
    found = set()
    for block in message.get("blocks", []):
        for element in [*block.get("elements", []), block.get("accessory") or {}]:
            if isinstance(element, dict) and element.get("type") == "button":
                found.add(element["action_id"])
    return found


async def start_big_order(relay: Relay) -> None:
    """An order over 1000 EUR, started by an order operator: finance must approve it."""
    command = slash_command(
        text=f"run order-processing {BIG_ORDER}",
        user_id=OPS,
        channel_id="C0ORDERS",
        fake=relay.fake,
    )
    assert (await relay.send(command)).status == 200


async def card_in(relay: Relay, channel: str) -> dict[str, Any]:
    """The approval card once it is posted (the message with an Approve button)."""

    def find() -> dict[str, Any] | None:
        for message in relay.fake.messages(channel):
            if "relay_approve" in buttons(message):
                return message
        return None

    found: dict[str, Any] = await relay.until(find)
    return found


async def click(relay: Relay, action: str, card: dict[str, Any], user: str, channel: str) -> None:
    response = await relay.send(
        block_actions(
            action_id=action,
            message_ts=card["ts"],
            channel_id=channel,
            user_id=user,
            fake=relay.fake,
        )
    )
    assert response.status == 200


async def test_a_full_order_run_from_the_command_to_the_final_status(relay: Relay) -> None:
    await start_big_order(relay)
    card = await card_in(relay, "C0FINANCE")
    text = str(card)
    assert "Approve order 42 for ana@example.com: 1500" in text
    assert "<@U0ALICE>" in text
    await relay.run_in(RunState.WAITING)

    await click(relay, "relay_approve", card, FINANCE[0], "C0FINANCE")

    run = await relay.run_in(RunState.SUCCEEDED)

    def closed() -> dict[str, Any] | None:
        message = relay.fake.message("C0FINANCE", card["ts"])
        return message if message and not buttons(message) else None

    decided = await relay.until(closed)
    assert "<@U0BOB>" in str(decided) and "approved" in str(decided).lower()
    status = relay.fake.messages("C0ORDERS")[0]
    assert run.id in str(status)
    final = await relay.until(
        lambda: "succeeded" in str(relay.fake.message("C0ORDERS", status["ts"])).lower()
    )
    assert final
    for path in ("/inventory/reservations", "/billing/invoices", "/shipping/shipments"):
        assert len(relay.services.requests(path)) == 1, path
    notices = [str(m) for m in relay.fake.messages("C0ORDERS") + relay.fake.messages("C0FINANCE")]
    assert notices


async def test_people_who_may_not_decide_are_told_and_nothing_changes(relay: Relay) -> None:
    await start_big_order(relay)
    card = await card_in(relay, "C0FINANCE")
    await click(relay, "relay_approve", card, OUTSIDER, "C0FINANCE")
    await click(relay, "relay_reject", card, OPS, "C0FINANCE")
    (outsider,) = await relay.until(lambda: relay.ephemeral_texts(OUTSIDER))
    (requester,) = await relay.until(lambda: relay.ephemeral_texts(OPS)[1:])
    assert "not one of the approvers" in outsider
    assert "not one of the approvers" in requester or "started this run" in requester
    assert relay.fake.calls_to("views.open") == []
    still = relay.fake.message("C0FINANCE", card["ts"])
    assert still is not None and "relay_approve" in buttons(still)
    assert (await relay.store.list_runs())[0].state is RunState.WAITING


async def test_a_double_click_and_two_approvers_at_once_decide_once(relay: Relay) -> None:
    await start_big_order(relay)
    card = await card_in(relay, "C0FINANCE")
    same = block_actions(
        action_id="relay_approve",
        message_ts=card["ts"],
        channel_id="C0FINANCE",
        user_id=FINANCE[0],
        fake=relay.fake,
    )
    await asyncio.gather(
        relay.send(same),
        relay.send(same),
        click(relay, "relay_approve", card, FINANCE[0], "C0FINANCE"),
        click(relay, "relay_approve", card, FINANCE[1], "C0FINANCE"),
    )
    run = await relay.run_in(RunState.SUCCEEDED)
    snapshot = await relay.store.snapshot(run.id)
    assert snapshot.approvals["finance_approval"].state == "approved"
    assert len(snapshot.approvals["finance_approval"].decided_by) == 1
    votes = [entry for entry in await relay.store.audit(run.id) if entry.action.startswith("vote.")]
    assert len(votes) == 1
    told = relay.ephemeral_texts(FINANCE[0]) + relay.ephemeral_texts(FINANCE[1])
    assert any("already" in text for text in told)
    assert len(relay.services.requests("/accounting/entries")) == 1


async def test_reject_asks_for_a_reason_and_shows_it_escaped(relay: Relay) -> None:
    await start_big_order(relay)
    card = await card_in(relay, "C0FINANCE")
    await click(relay, "relay_reject", card, FINANCE[1], "C0FINANCE")
    (_call,) = await relay.until(lambda: relay.fake.calls_to("views.open"))
    form = relay.fake.views()[-1]
    assert form["callback_id"] == "relay_decision"
    empty = await relay.send(
        view_submission(
            callback_id="relay_decision",
            view_id=form["id"],
            values={"reason": {"value": {"value": ""}}},
            user_id=FINANCE[1],
            fake=relay.fake,
        )
    )
    assert empty.json()["response_action"] == "errors" and "reason" in empty.json()["errors"]
    reason = "too big <!channel> see <http://evil.example|the policy>"
    done = await relay.send(
        view_submission(
            callback_id="relay_decision",
            view_id=form["id"],
            values={"reason": {"value": {"value": reason}}},
            user_id=FINANCE[1],
            fake=relay.fake,
        )
    )
    assert done.status == 200
    run = await relay.run_in(RunState.FAILED)
    snapshot = await relay.store.snapshot(run.id)
    assert snapshot.approvals["finance_approval"].reason == reason

    def closed() -> str | None:
        message = relay.fake.message("C0FINANCE", card["ts"])
        return str(message) if message and not buttons(message) else None

    shown = await relay.until(closed)
    assert "&lt;!channel&gt;" in shown and "<!channel>" not in shown
    assert "<http://evil.example|" not in shown


async def test_user_text_in_inputs_never_pings_a_channel(relay: Relay) -> None:
    await relay.send(
        slash_command(
            text='run ping note="<!channel> <http://evil.example|hi>"', user_id=OPS, fake=relay.fake
        )
    )
    card = await card_in(relay, "C0GENERAL")
    everything = str(relay.fake.messages("C0GENERAL")) + str(card)
    assert "<!channel>" not in everything
    assert "&lt;!channel&gt;" in everything
