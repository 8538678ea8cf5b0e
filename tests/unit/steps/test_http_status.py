"""Status → outcome mapping. ``httpx.MockTransport`` is used here only, for the pure table;
everything that touches the network is tested against real servers in integration."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from bot.steps.base import Failed, Outcome, Succeeded
from bot.steps.http import HttpExecutor
from tests.unit.steps.support import http_context, http_step

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://inventory.example/items/1"

Reply = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
async def send() -> AsyncIterator[Callable[..., Any]]:
    clients: list[httpx.AsyncClient] = []

    async def run(reply: Reply, **step: Any) -> Outcome:
        secrets = step.pop("secrets", {})
        defaults = step.pop("defaults", None)
        client = httpx.AsyncClient(transport=httpx.MockTransport(reply))
        clients.append(client)
        executor = HttpExecutor(client=client, clock=lambda: NOW)
        context = http_context(http_step(url=URL, **step), secrets=secrets, defaults=defaults)
        return await executor.execute(context)

    yield run
    for client in clients:
        await client.aclose()


def status(code: int, **kwargs: Any) -> Reply:
    return lambda request: httpx.Response(code, **kwargs)


@pytest.mark.parametrize("code", [200, 201, 204])
async def test_2xx_is_expected_by_default(send: Any, code: int) -> None:
    outcome = await send(status(code, json={"ok": True} if code != 204 else None))
    assert isinstance(outcome, Succeeded)
    assert outcome.status == code


async def test_success_output_shape(send: Any) -> None:
    outcome = await send(
        status(200, json={"sku": "SKU-1", "available": 4}, headers={"X-Request-Id": "r-1"})
    )
    assert isinstance(outcome, Succeeded)
    assert outcome.output["status"] == 200
    assert outcome.output["json"] == {"sku": "SKU-1", "available": 4}
    assert outcome.output["text"] == '{"sku":"SKU-1","available":4}'
    assert outcome.output["headers"]["x-request-id"] == "r-1"
    assert outcome.output["headers"]["content-type"] == "application/json"


async def test_non_json_content_type_gives_text_only(send: Any) -> None:
    outcome = await send(status(200, text='{"looks": "like json"}'))
    assert isinstance(outcome, Succeeded)
    assert outcome.output["json"] is None
    assert outcome.output["text"] == '{"looks": "like json"}'


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "text/plain; charset=ISO-8859-1",
        'text/plain; charset="windows-1252"',
        "text/plain; CHARSET=Latin-1",
        "text/plain; charset*=utf-8''latin-1",
        "text/plain; charset=no-such-codec",
        "text/plain; charset=",
        "text/plain; charset=ünïcode",
        "",
    ],
)
async def test_text_is_decoded_as_httpx_reads_the_charset(send: Any, content_type: str) -> None:
    body = "café déjà vu".encode("latin-1")
    headers = {"Content-Type": content_type.encode()} if content_type else {}
    outcome = await send(status(200, content=body, headers=headers))
    declared = httpx.Response(200, headers=headers).charset_encoding or "utf-8"
    try:
        expected = body.decode(declared, errors="replace")
    except LookupError:
        expected = body.decode("utf-8", errors="replace")
    assert isinstance(outcome, Succeeded)
    assert outcome.output["text"] == expected


def streamed(body: bytes, **headers: str) -> Reply:
    """A reply whose body arrives as a stream, as from a server, not already read."""
    return lambda request: httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


async def test_a_compressed_body_is_decoded(send: Any) -> None:
    body = gzip.compress(b'{"sku": "SKU-1"}')
    reply = streamed(body, **{"Content-Type": "application/json", "Content-Encoding": "gzip"})
    outcome = await send(reply)
    assert isinstance(outcome, Succeeded)
    assert outcome.output["json"] == {"sku": "SKU-1"}
    assert outcome.output["text"] == '{"sku": "SKU-1"}'


async def test_the_cap_counts_decoded_bytes(send: Any) -> None:
    body = gzip.compress(b"x" * 5000)
    outcome = await send(streamed(body, **{"Content-Encoding": "gzip"}), max_response_bytes=1000)
    assert isinstance(outcome, Failed)
    assert "larger than 1000 bytes" in outcome.message


@pytest.mark.parametrize(("size", "ok"), [(100, True), (101, False)])
async def test_a_streamed_body_without_length_is_capped(send: Any, size: int, ok: bool) -> None:
    outcome = await send(streamed(b"x" * size), max_response_bytes=100)
    assert isinstance(outcome, Succeeded) == ok
    if ok:
        assert outcome.output["text"] == "x" * size


async def test_broken_json_gives_none(send: Any) -> None:
    reply = status(200, content=b"{oops", headers={"Content-Type": "application/problem+json"})
    outcome = await send(reply)
    assert isinstance(outcome, Succeeded)
    assert outcome.output["json"] is None


async def test_404_is_not_retryable(send: Any) -> None:
    outcome = await send(status(404, json={"error": "unknown sku"}))
    assert isinstance(outcome, Failed)
    assert not outcome.retryable
    assert outcome.status == 404
    assert outcome.message == 'HTTP 404 from inventory.example: {"error":"unknown sku"}'


async def test_409_is_retryable_only_when_listed(send: Any) -> None:
    plain = await send(status(409))
    listed = await send(status(409), retry={"on": ["5xx", 409]})
    assert isinstance(plain, Failed) and not plain.retryable
    assert isinstance(listed, Failed) and listed.retryable


async def test_flow_default_retry_policy_applies(send: Any) -> None:
    outcome = await send(status(503), defaults={"retry": {"on": ["connection"]}})
    assert isinstance(outcome, Failed) and not outcome.retryable


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_5xx_is_retryable(send: Any, code: int) -> None:
    outcome = await send(status(code, text="<html>\n  <b>down</b>\n</html>"))
    assert isinstance(outcome, Failed)
    assert outcome.retryable
    assert outcome.excerpt == "<html> <b>down</b> </html>"
    assert outcome.message == f"HTTP {code} from inventory.example: <html> <b>down</b> </html>"


async def test_429_with_retry_after_seconds(send: Any) -> None:
    outcome = await send(status(429, headers={"Retry-After": "17"}))
    assert isinstance(outcome, Failed)
    assert outcome.retryable
    assert outcome.retry_after == 17.0


async def test_429_with_retry_after_http_date(send: Any) -> None:
    when = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    outcome = await send(status(429, headers={"Retry-After": when}))
    assert isinstance(outcome, Failed)
    assert outcome.retry_after == 90.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("86400", 3600.0),
        (format_datetime(NOW - timedelta(minutes=5), usegmt=True), 0.0),
        ("soon", None),
    ],
)
async def test_retry_after_is_capped_and_tolerant(
    send: Any, header: str, expected: float | None
) -> None:
    outcome = await send(status(503, headers={"Retry-After": header}))
    assert isinstance(outcome, Failed)
    assert outcome.retry_after == expected


async def test_429_is_not_retryable_when_not_listed(send: Any) -> None:
    outcome = await send(status(429), retry={"on": ["5xx"]})
    assert isinstance(outcome, Failed) and not outcome.retryable


@pytest.mark.parametrize(
    ("expect", "code", "ok"),
    [
        (["2xx"], 299, True),
        ([201], 200, False),
        ([201], 201, True),
        (["2xx", 404], 404, True),
        (["4xx"], 410, True),
        ([200, "3xx"], 304, True),
        (["2xx"], 302, False),
    ],
)
async def test_expect_lists(send: Any, expect: list[Any], code: int, ok: bool) -> None:
    outcome = await send(status(code), expect=expect)
    assert isinstance(outcome, Succeeded) is ok


async def test_long_error_bodies_are_cut_to_an_excerpt(send: Any) -> None:
    outcome = await send(status(500, text="word " * 1000))
    assert isinstance(outcome, Failed)
    assert outcome.excerpt is not None
    assert len(outcome.excerpt) <= 300
    assert outcome.excerpt.endswith("…")


async def test_secrets_are_masked_in_output_and_errors(send: Any) -> None:
    secret = "tok-9f8e7d6c"

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            int(request.url.params["code"]),
            json={"seen": request.headers["authorization"]},
            headers={"X-Echo": secret, "Set-Cookie": "session=abc"},
        )

    fields = {"headers": {"Authorization": "Bearer {{ secrets.T }}"}, "secrets": {"T": secret}}
    ok = await send(echo, query={"code": "200"}, **fields)
    bad = await send(echo, query={"code": "500"}, **fields)
    assert isinstance(ok, Succeeded) and isinstance(bad, Failed)
    assert secret not in repr(ok) and secret not in repr(bad)
    assert ok.output["json"] == {"seen": "Bearer ***"}
    assert ok.output["headers"]["x-echo"] == "***"
    assert ok.output["headers"]["set-cookie"] == "***"
    assert bad.excerpt == '{"seen":"Bearer ***"}'
