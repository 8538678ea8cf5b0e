"""`relay serve --socket`: the same app over a Socket Mode connection, no public URL."""

from __future__ import annotations

from bot.engine.states import RunState
from tests.fakeslack import event_callback, slash_command

from .conftest import FINANCE, OPS, Relay


async def test_a_command_over_socket_mode_is_acknowledged_and_starts_the_run(
    relay_socket: Relay,
) -> None:
    relay = relay_socket
    assert relay.fake.calls_to("apps.connections.open")
    fields = slash_command(text="run ping note=socket", user_id=OPS, fake=relay.fake).form()
    envelope = relay.fake.send_slash_command_envelope(fields)
    ack = await relay.fake.await_ack(envelope)
    assert ack.envelope_id == envelope
    run = await relay.run_in(RunState.WAITING)
    assert run.inputs["note"] == "socket" and run.source["via"] == "slack"
    (answer,) = await relay.until(lambda: relay.ephemeral_texts(OPS))
    assert run.id in answer


async def test_a_redelivered_event_changes_nothing_without_retry_headers(
    relay_socket: Relay,
) -> None:
    relay = relay_socket
    body = event_callback(
        {"type": "app_home_opened", "user": FINANCE[0], "tab": "home"}, event_id="Ev0SOCKET"
    ).json()
    first = relay.fake.send_events_api_envelope(body)
    await relay.fake.await_ack(first)
    await relay.until(lambda: relay.fake.home_view(FINANCE[0]))
    again = relay.fake.send_events_api_envelope(body, retry_attempt=1, retry_reason="timeout")
    await relay.fake.await_ack(again)
    await relay.fake.await_ack(
        relay.fake.send_slash_command_envelope(
            slash_command(text="help", user_id=FINANCE[0], fake=relay.fake).form()
        )
    )
    await relay.until(lambda: relay.ephemeral_texts(FINANCE[0]))
    assert len(relay.fake.calls_to("views.publish")) == 1
