"""`/relay` over loopback: answers, refusals, forms, signatures and replays."""

from __future__ import annotations

import pytest

from bot.engine.records import Run
from bot.engine.states import RunState
from tests.fakeslack import event_callback, slash_command, url_verification, view_submission

from .conftest import FINANCE, OPS, OUTSIDER, Relay

ORDER = "order_id=42 customer=ana@example.com sku=SKU-1 quantity=2 amount=99"


async def answered(relay: Relay, user: str, count: int = 1) -> list[str]:
    """Wait for ``count`` ephemeral answers to ``user``; returns all of them."""
    return await relay.until(lambda: (t := relay.ephemeral_texts(user)) and len(t) >= count and t)


async def test_help_lists_every_subcommand(relay: Relay) -> None:
    response = await relay.send(slash_command(text="help", user_id=OPS, fake=relay.fake))
    assert response.status == 200
    (text,) = await answered(relay, OPS)
    for word in ("list", "run", "status", "cancel", "retry", "approvals"):
        assert word in text


async def test_list_shows_only_the_flows_the_user_may_run(relay: Relay) -> None:
    await relay.send(
        slash_command(text="list", user_id=OPS, channel_id="C0ORDERS", fake=relay.fake)
    )
    await relay.send(slash_command(text="list", user_id=OUTSIDER, fake=relay.fake))
    (mine,) = await answered(relay, OPS)
    (theirs,) = await answered(relay, OUTSIDER)
    assert "order-processing" in mine and "ping" in mine
    assert "order-processing" not in theirs and "ping" not in theirs


async def run_order(relay: Relay) -> Run:
    """``/relay run order-processing`` with every input, from C0ORDERS; the finished run."""
    await relay.send(
        slash_command(
            text=f"run order-processing {ORDER}",
            user_id=OPS,
            channel_id="C0ORDERS",
            fake=relay.fake,
        )
    )
    return await relay.run_in(RunState.SUCCEEDED)


async def test_run_with_every_input_starts_the_run_and_posts_its_status(relay: Relay) -> None:
    run = await run_order(relay)
    (text,) = await answered(relay, OPS)
    assert run.id in text
    assert run.inputs["order_id"] == 42 and run.started_by == OPS
    status = await relay.until(lambda: relay.fake.messages("C0ORDERS"))
    assert run.id in str(status[0])


@pytest.mark.parametrize(
    ("user", "text", "expected"),
    [
        (OPS, "run no-such-flow", "no flow named `no-such-flow`"),
        (OPS, "run order-procesing order_id=1", "did you mean `order-processing`"),
        (OUTSIDER, f"run order-processing {ORDER}", "you may not run `order-processing`"),
        (OPS, f"run order-processing {ORDER} colour=red", "colour"),
        (OPS, "run order-processing order_id=abc amount=1", "order_id"),
        (OPS, 'run ping note="unclosed', "a quote is not closed"),
        (OPS, "frobnicate", "`frobnicate` is not a Relay command"),
        (OPS, "cancel", "give exactly one run id"),
        (OPS, "status nosuchrun", "nosuchrun"),
        (OUTSIDER, "approvals extra", "takes no arguments"),
    ],
)
async def test_bad_commands_are_explained_and_start_nothing(
    relay: Relay, user: str, text: str, expected: str
) -> None:
    response = await relay.send(
        slash_command(text=text, user_id=user, channel_id="C0GENERAL", fake=relay.fake)
    )
    assert response.status == 200
    (answer,) = await answered(relay, user)
    assert expected in answer
    assert answer.startswith(":warning:")
    assert await relay.store.count_runs() == 0


async def test_curly_quotes_from_slack_are_understood(relay: Relay) -> None:
    await relay.send(
        slash_command(text="run ping note=\u201cbig box\u201d", user_id=OPS, fake=relay.fake)
    )
    run = await relay.run_in(RunState.RUNNING, RunState.WAITING)
    assert run.inputs["note"] == "big box"


async def test_missing_inputs_open_a_form_whose_errors_land_on_the_fields(relay: Relay) -> None:
    await relay.send(slash_command(text="run ping", user_id=OPS, fake=relay.fake))
    (_opened,) = await relay.until(lambda: relay.fake.calls_to("views.open"))
    view = relay.fake.views()[-1]
    assert view["callback_id"] == "relay_run"
    assert {block["block_id"] for block in view["blocks"] if block["type"] == "input"} == {
        "note",
        "count",
    }
    bad = await relay.send(
        view_submission(
            callback_id="relay_run",
            view_id=view["id"],
            values={"note": {"value": {"value": "x"}}, "count": {"value": {"value": "0"}}},
            user_id=OPS,
            fake=relay.fake,
        )
    )
    assert bad.json()["response_action"] == "errors"
    assert "count" in bad.json()["errors"]
    assert await relay.store.count_runs() == 0
    good = await relay.send(
        view_submission(
            callback_id="relay_run",
            view_id=view["id"],
            values={"note": {"value": {"value": "box"}}, "count": {"value": {"value": "3"}}},
            user_id=OPS,
            fake=relay.fake,
        )
    )
    assert good.status == 200
    run = await relay.run_in(RunState.RUNNING, RunState.WAITING)
    assert run.inputs == {"note": "box", "count": 3}


async def test_a_replayed_command_starts_one_run(relay: Relay) -> None:
    request = slash_command(text="run ping note=once", user_id=OPS, fake=relay.fake)
    first = await relay.send(request)
    second = await relay.send(request)
    assert first.status == second.status == 200
    await relay.run_in(RunState.RUNNING, RunState.WAITING)
    await answered(relay, OPS)
    assert await relay.store.count_runs() == 1


@pytest.mark.parametrize("signature", ["missing", "bad", "stale"])
async def test_unsigned_badly_signed_and_stale_requests_are_refused(
    relay: Relay, signature: str
) -> None:
    command = slash_command(text="run ping note=x", user_id=OPS, fake=relay.fake)
    response = await relay.send(command, signature=signature)  # type: ignore[arg-type]
    assert response.status == 401
    event = event_callback({"type": "app_home_opened", "user": OPS, "tab": "home"})
    assert (await relay.send(event, signature=signature)).status == 401  # type: ignore[arg-type]
    assert await relay.store.count_runs() == 0
    assert relay.fake.calls_to("views.publish") == []


async def test_url_verification_is_answered(relay: Relay) -> None:
    request = url_verification("the-challenge")
    response = await relay.send(request)
    assert response.json() == {"challenge": "the-challenge"}


async def test_status_and_approvals_answer_from_the_database(relay: Relay) -> None:
    await relay.send(slash_command(text="run ping note=box", user_id=OPS, fake=relay.fake))
    run = await relay.run_in(RunState.WAITING)
    await relay.send(slash_command(text=f"status {run.id}", user_id=OPS, fake=relay.fake))
    await relay.send(slash_command(text="status", user_id=OPS, fake=relay.fake))
    texts = await answered(relay, OPS, 3)
    assert all(run.id in text for text in texts[1:]), texts
    await relay.send(slash_command(text="approvals", user_id=FINANCE[0], fake=relay.fake))
    (waiting,) = await answered(relay, FINANCE[0])
    assert "Ship box?" in waiting or run.id in waiting


async def test_the_bot_keeps_its_connections_to_slack_open(relay: Relay) -> None:
    # Without a shared session slack_sdk opens a connection (in production a TLS
    # handshake with slack.com) for every call.
    await run_order(relay)
    await answered(relay, OPS)
    calls = [call for call in relay.fake.calls if call.peer is not None]
    assert len(calls) >= 4
    assert len({call.peer for call in calls}) < len(calls) / 2, "a new connection per call"
