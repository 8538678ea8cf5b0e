"""The HTTP executor against the real demo services on loopback: real sockets, no patching."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.definitions.models import Service
from bot.definitions.templating import Scope
from bot.demo.services import DemoServices
from bot.steps.base import Failed, Outcome, Succeeded
from bot.steps.http import HttpExecutor, make_http_client
from tests.unit.steps.support import http_context, http_step

TOKEN = "billing-token-5a6b7c"


@pytest.fixture
async def demo() -> AsyncIterator[DemoServices]:
    async with DemoServices(billing_token=TOKEN) as services:
        yield services


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as shared:
        yield shared


def service_map(demo: DemoServices) -> dict[str, str]:
    return {name: demo.url(name) for name in ("inventory", "billing", "shipping")}


async def run(
    client: httpx.AsyncClient,
    *,
    allow_hosts: tuple[str, ...] = (),
    services: dict[str, str] | None = None,
    scope: Scope | None = None,
    secrets: dict[str, str] | None = None,
    seconds: float = 5.0,
    key: str = "run-1:call",
    **step: Any,
) -> Outcome:
    executor = HttpExecutor(client=client, allow_hosts=allow_hosts)
    context = http_context(
        http_step(**step),
        scope=scope,
        services=services,
        secrets=secrets,
        timeout=seconds,
        idempotency_key=key,
    )
    return await executor.execute(context)


# ---------------------------------------------------------------- success


async def test_success_output_shape(demo: DemoServices, client: httpx.AsyncClient) -> None:
    outcome = await run(
        client,
        services=service_map(demo),
        scope=Scope(inputs={"sku": "SKU-1"}),
        service="inventory",
        path="/items/{{ inputs.sku }}",
    )
    assert isinstance(outcome, Succeeded)
    assert outcome.status == 200
    assert outcome.output["json"] == {"sku": "SKU-1", "in_stock": True, "available": 10}
    assert outcome.output["headers"]["content-type"].startswith("application/json")
    assert all(name == name.lower() for name in outcome.output["headers"])
    assert '"available": 10' in outcome.output["text"]


@pytest.mark.parametrize(
    ("sku", "raw_path"),
    [
        ("..", "/inventory/items/%2E%2E"),
        ("a/../../billing", "/inventory/items/a%2F..%2F..%2Fbilling"),
        ("x?y#z", "/inventory/items/x%3Fy%23z"),
        ("evil.com@", "/inventory/items/evil.com%40"),
    ],
)
async def test_path_values_arrive_encoded(
    demo: DemoServices, client: httpx.AsyncClient, sku: str, raw_path: str
) -> None:
    outcome = await run(
        client,
        services=service_map(demo),
        scope=Scope(inputs={"sku": sku}),
        service="inventory",
        path="/items/{{ inputs.sku }}",
    )
    assert isinstance(outcome, Failed)
    assert outcome.status == 404
    assert f"unknown sku {sku}" in outcome.message
    assert [r.raw_path for r in demo.requests()] == [raw_path]


async def test_idempotency_key_reaches_the_server_and_dedupes_retries(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    step = {
        "services": service_map(demo),
        "method": "POST",
        "service": "inventory",
        "path": "/reservations",
        "json": {"sku": "SKU-2", "quantity": 2},
        "key": "run-9:reserve_stock",
    }
    first = await run(client, **step)
    again = await run(client, **step)  # the engine retrying after a lost reply
    assert isinstance(first, Succeeded) and isinstance(again, Succeeded)
    assert first.output["json"] == again.output["json"]
    assert demo.keys_seen("/inventory/reservations") == {"run-9:reserve_stock": 2}
    assert demo.duplicates == 1
    assert demo.stock["SKU-2"] == 1


async def test_bearer_secret_is_sent_and_masked(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    outcome = await run(
        client,
        services=service_map(demo),
        secrets={"BILLING_TOKEN": TOKEN},
        method="POST",
        service="billing",
        path="/invoices",
        headers={"Authorization": "Bearer {{ secrets.BILLING_TOKEN }}"},
        json={"amount": 120},
    )
    assert isinstance(outcome, Succeeded)
    assert outcome.output["json"]["amount"] == 120
    assert demo.requests("/billing")[0].headers["Authorization"] == f"Bearer {TOKEN}"


async def test_secrets_masked_in_output_text_and_error_excerpt(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    fields: dict[str, Any] = {
        "secrets": {"API_TOKEN": TOKEN},
        "headers": {"X-Forward": "{{ secrets.API_TOKEN }}"},
    }
    ok = await run(client, url=f"{demo.base_url}/echo?from={{{{ secrets.API_TOKEN }}}}", **fields)
    bad = await run(client, url=f"{demo.base_url}/echo?status=500", **fields)
    assert isinstance(ok, Succeeded) and isinstance(bad, Failed)
    assert TOKEN in demo.requests("/echo")[0].headers["X-Forward"]  # it was really sent
    for shown in (repr(ok), repr(bad)):
        assert TOKEN not in shown
    assert ok.output["json"]["headers"]["X-Forward"] == "***"
    assert ok.output["json"]["query"] == {"from": "***"}
    assert bad.retryable and bad.excerpt is not None and "***" in bad.excerpt


async def test_the_shared_client_keeps_no_cookies(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    await run(client, url=f"{demo.base_url}/echo?set_cookie=session=abc123")
    outcome = await run(client, url=f"{demo.base_url}/echo")
    assert isinstance(outcome, Succeeded)
    assert "Cookie" not in outcome.output["json"]["headers"]


# ---------------------------------------------------------------- failures


async def test_injected_503s_then_success(demo: DemoServices, client: httpx.AsyncClient) -> None:
    demo.fail("POST /shipping/shipments", status=503, times=2, retry_after=3)
    step = {"services": service_map(demo), "method": "POST", "service": "shipping"}
    outcomes = [await run(client, path="/shipments", **step) for _ in range(3)]
    first, second, third = outcomes
    assert isinstance(first, Failed) and first.retryable and first.retry_after == 3.0
    assert isinstance(second, Failed) and second.status == 503
    assert isinstance(third, Succeeded)
    assert third.output["json"]["tracking"].startswith("1Z")
    assert demo.keys_seen("/shipping") == {"run-1:call": 3}
    assert demo.duplicates == 0


async def test_timeout_on_a_slow_route_is_retryable_and_prompt(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    outcome = await run(client, url=f"{demo.base_url}/slow?seconds=5", seconds=0.5)
    elapsed = time.monotonic() - started
    assert isinstance(outcome, Failed)
    assert outcome.retryable
    assert (
        outcome.message == f"no response from {demo.base_url.removeprefix('http://')} within 0.5s"
    )
    assert elapsed < 1.5


async def test_a_slow_drip_body_cannot_outlast_the_timeout(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    # Each byte comes well within the read timeout; only the overall deadline stops it.
    started = time.monotonic()
    outcome = await run(client, url=f"{demo.base_url}/drip?chunks=40&interval=0.05", seconds=0.5)
    assert isinstance(outcome, Failed) and outcome.retryable
    assert "within 0.5s" in outcome.message
    assert time.monotonic() - started < 1.5


async def test_timeouts_do_not_retry_when_the_policy_says_so(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    outcome = await run(
        client, url=f"{demo.base_url}/slow?seconds=5", seconds=0.3, retry={"on": ["5xx"]}
    )
    assert isinstance(outcome, Failed) and not outcome.retryable


@pytest.mark.parametrize("path", ["/big?bytes=5000", "/drip?chunks=200&interval=0"])
async def test_response_size_is_capped(
    demo: DemoServices, client: httpx.AsyncClient, path: str
) -> None:
    outcome = await run(client, url=f"{demo.base_url}{path}", max_response_bytes=100)
    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert "larger than 100 bytes" in outcome.message


async def test_a_body_at_the_cap_is_fine(demo: DemoServices, client: httpx.AsyncClient) -> None:
    outcome = await run(client, url=f"{demo.base_url}/big?bytes=100", max_response_bytes=100)
    assert isinstance(outcome, Succeeded)
    assert outcome.output["text"] == "x" * 100


async def test_connection_refused_is_retryable(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await run(client, url=f"http://127.0.0.1:{port}/x")
    assert isinstance(outcome, Failed)
    assert outcome.retryable
    assert outcome.message == f"could not connect to 127.0.0.1:{port}: connection refused"
    strict = await run(client, url=f"http://127.0.0.1:{port}/x", retry={"on": ["5xx"]})
    assert isinstance(strict, Failed) and not strict.retryable


async def test_a_dropped_connection_is_retryable(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    demo.down("shipping")
    outcome = await run(
        client, services=service_map(demo), method="POST", service="shipping", path="/shipments"
    )
    assert isinstance(outcome, Failed)
    assert outcome.retryable
    assert "closed the connection without a complete response" in outcome.message
    assert len(demo.requests("/shipping")) == 1  # the transport did not retry on its own


async def test_a_service_without_a_url_names_its_variable(client: httpx.AsyncClient) -> None:
    context = http_context(http_step(service="inventory", path="/items/1"))
    services = {"inventory": Service(env="INVENTORY_URL")}
    flow = context.flow.model_copy(update={"services": services})
    outcome = await HttpExecutor(client=client).execute(dataclasses.replace(context, flow=flow))
    assert isinstance(outcome, Failed) and not outcome.retryable
    assert outcome.message == (
        "service `inventory` has no base URL: set the environment variable INVENTORY_URL"
    )


# ---------------------------------------------------------------- redirects and hosts


async def test_redirects_are_not_followed_by_default(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    outcome = await run(client, url=f"{demo.base_url}/redirect?to=/echo")
    assert isinstance(outcome, Failed)
    assert outcome.status == 302 and not outcome.retryable
    assert "redirect to /echo not followed" in outcome.message
    assert [r.path for r in demo.requests()] == ["/redirect"]


async def test_redirects_are_followed_when_allowed(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    outcome = await run(
        client, url=f"{demo.base_url}/redirect?to=/echo", follow_redirects=True, key="run-2:go"
    )
    assert isinstance(outcome, Succeeded)
    assert outcome.output["json"]["path"] == "/echo"
    assert demo.keys_seen() == {"run-2:go": 2}


async def test_allowlist_refuses_other_hosts_before_connecting(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    outcome = await run(client, allow_hosts=("inventory.example",), url=f"{demo.base_url}/echo")
    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert "127.0.0.1" in outcome.message and "RELAY_HTTP_ALLOW_HOSTS" in outcome.message
    assert demo.requests() == []


async def test_allowlist_applies_to_every_redirect_hop(
    demo: DemoServices, client: httpx.AsyncClient
) -> None:
    port = demo.base_url.rsplit(":", 1)[1]
    outcome = await run(
        client,
        allow_hosts=("127.0.0.1",),
        url=f"{demo.base_url}/redirect?to=http://localhost:{port}/echo",
        follow_redirects=True,
    )
    assert isinstance(outcome, Failed)
    assert "host localhost is not allowed" in outcome.message
    assert [r.path for r in demo.requests()] == ["/redirect"]


# ---------------------------------------------------------------- cancellation


async def test_cancellation_propagates(demo: DemoServices, client: httpx.AsyncClient) -> None:
    task = asyncio.create_task(run(client, url=f"{demo.base_url}/slow?seconds=10", seconds=30))
    async with asyncio.timeout(5):
        await demo.arrival("/slow")
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert time.monotonic() - started < 1.0
    # The shared client is still usable afterwards.
    after = await run(client, url=f"{demo.base_url}/echo")
    assert isinstance(after, Succeeded)
