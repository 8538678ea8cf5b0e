"""Failure alerts with operator buttons, the App Home tab, and a Slack outage mid-run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot.engine.states import RunState
from tests.fakeslack import block_actions, event_callback, slash_command

from .conftest import FINANCE, OPS, Relay
from .test_approvals import buttons, card_in, click


async def failed_ping(relay: Relay) -> tuple[str, dict[str, Any]]:
    """Start `ping` with its echo route failing; returns the run id and its alert."""
    relay.services.fail("POST /echo", status=500, times=None)
    await relay.send(slash_command(text="run ping note=box", user_id=OPS, fake=relay.fake))
    run = await relay.run_in(RunState.FAILED)

    def alert() -> dict[str, Any] | None:
        found = [m for m in relay.fake.messages("C0ALERTS") if "relay_retry" in buttons(m)]
        return found[0] if found else None

    return run.id, await relay.until(alert)


async def test_a_failure_alerts_the_operators_with_the_error_and_a_link(relay: Relay) -> None:
    run_id, alert = await failed_ping(relay)
    text = json.dumps(alert)
    assert run_id in text and "call" in text and "500" in text
    assert buttons(alert) == {"relay_retry", "relay_skip", "relay_cancel"}
    assert relay.fake.calls_to("chat.getPermalink")
    assert ("http" in text and "archives" in text) or "permalink" in text.lower() or "p1" in text


async def test_cancel_from_the_alert_ends_the_run_and_removes_the_buttons(relay: Relay) -> None:
    _run_id, alert = await failed_ping(relay)
    await click(relay, "relay_cancel", alert, OPS, "C0ALERTS")
    await relay.run_in(RunState.CANCELLED)

    def updated() -> dict[str, Any] | None:
        message = relay.fake.message("C0ALERTS", alert["ts"])
        return message if message and not buttons(message) else None

    assert "the run was closed" in json.dumps(await relay.until(updated))


async def test_retry_from_the_alert_runs_the_step_again(relay: Relay) -> None:
    _run_id, alert = await failed_ping(relay)
    relay.services.heal()
    await click(relay, "relay_retry", alert, OPS, "C0ALERTS")
    await relay.run_in(RunState.WAITING)
    assert len(relay.services.requests("/echo")) == 2


async def test_only_operators_may_press_the_alert_buttons(relay: Relay) -> None:
    _, alert = await failed_ping(relay)
    await click(relay, "relay_skip", alert, FINANCE[0], "C0ALERTS")
    (told,) = await relay.until(lambda: relay.ephemeral_texts(FINANCE[0]))
    assert "you may not skip steps of runs of `ping`" in told
    assert (await relay.store.list_runs())[0].state is RunState.FAILED


async def test_app_home_shows_what_waits_for_me_and_ignores_event_retries(relay: Relay) -> None:
    await relay.send(slash_command(text="run ping note=parcel", user_id=OPS, fake=relay.fake))
    await card_in(relay, "C0GENERAL")
    event = {"type": "app_home_opened", "user": FINANCE[0], "tab": "home"}
    first = event_callback(event, event_id="Ev0HOME1")
    assert (await relay.send(first)).status == 200

    def publishes() -> int:
        return sum(c.args["user_id"] == FINANCE[0] for c in relay.fake.calls_to("views.publish"))

    # One publish because the approval concerns Bob, one because he opened the tab.
    await relay.until(lambda: publishes() >= 2)
    home = relay.fake.home_view(FINANCE[0])
    assert home is not None and "Ship parcel?" in json.dumps(home)
    assert "relay_approve" in json.dumps(home)
    settled = publishes()
    retry = event_callback(event, event_id="Ev0HOME1", retry_num=1)
    assert (await relay.send(retry)).status == 200
    await asyncio.sleep(0.5)
    assert publishes() == settled


async def test_approving_from_app_home_decides_and_refreshes_it(relay: Relay) -> None:
    await relay.send(slash_command(text="run ping note=parcel", user_id=OPS, fake=relay.fake))
    card = await card_in(relay, "C0GENERAL")
    await relay.until(lambda: relay.fake.home_view(FINANCE[0]))
    home = relay.fake.home_view(FINANCE[0])
    assert home is not None
    value = next(
        element["value"]
        for block in home["blocks"]
        for element in block.get("elements", [])
        if isinstance(element, dict) and element.get("action_id") == "relay_approve"
    )
    click_home = block_actions(
        action_id="relay_approve",
        value=value,
        message={"type": "message", "ts": "0", "blocks": []},
        user_id=FINANCE[0],
        fake=relay.fake,
    )
    assert (await relay.send(click_home)).status == 200
    await relay.run_in(RunState.SUCCEEDED)
    message = await relay.until(
        lambda: (m := relay.fake.message("C0GENERAL", card["ts"])) and not buttons(m) and m
    )
    assert "<@U0BOB>" in json.dumps(message)


async def test_a_slack_outage_mid_run_loses_nothing(relay: Relay) -> None:
    relay.services.delay("POST /echo", 0.3)
    await relay.send(slash_command(text="run ping note=storm", user_id=OPS, fake=relay.fake))
    await relay.until(lambda: relay.fake.messages("C0GENERAL"))
    relay.fake.outage = True
    run = await relay.run_in(RunState.WAITING)
    assert run.state is RunState.WAITING
    relay.fake.outage = False
    card = await card_in(relay, "C0GENERAL")
    await click(relay, "relay_approve", card, FINANCE[1], "C0GENERAL")
    await relay.run_in(RunState.SUCCEEDED)
    status = relay.fake.messages("C0GENERAL")[0]
    final = await relay.until(
        lambda: "succeeded" in json.dumps(relay.fake.message("C0GENERAL", status["ts"])).lower()
    )
    assert final
    assert len(relay.services.requests("/echo")) == 1
