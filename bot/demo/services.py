"""DEMO CODE: stand-in inventory, billing, shipping and accounting APIs on loopback.

Not part of Relay proper and never used in production. ``relay demo`` runs the
example flows against these services, and the tests use them as the real HTTP
server that HTTP steps talk to (a real socket, real aiohttp, no patching).

They behave like the APIs a chat-ops flow would call: receivers dedupe by
``Idempotency-Key`` (a repeated key on a write returns the first response and is
counted in ``duplicates``), every request is recorded, and faults can be
injected per route so that retries, timeouts and outages can be shown::

    async with DemoServices() as services:
        services.fail("POST /billing/invoices", status=503, times=2, retry_after=1)
        services.down("/shipping")                 # drop connections, no response
        services.delay("/accounting", 2.0)
        services.stock["SKU-1"] = 0
        ...
        services.keys_seen("/billing")             # Counter of Idempotency-Keys

A route is a path prefix, optionally preceded by a method: ``"shipping"``,
``"/inventory/items"`` or ``"DELETE /inventory/reservations"``.

Generic routes for tests: ``/echo`` (the request as JSON; ``?status=`` picks the
status, ``?set_cookie=`` sets a cookie), ``/slow?seconds=``,
``/drip?chunks=&interval=`` (a body sent slowly), ``/big?bytes=`` and
``/redirect?to=``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

SERVICES = ("inventory", "billing", "shipping", "accounting")
DEFAULT_BILLING_TOKEN = "demo-billing-token"
DEFAULT_STOCK = {"SKU-1": 10, "SKU-2": 3, "SKU-3": 0}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class RecordedRequest:
    """One request as the service received it, faults and replays included."""

    method: str
    path: str
    """Decoded path, as routes see it."""
    raw_path: str
    """Path and query exactly as sent, percent-encoding intact."""
    idempotency_key: str | None
    headers: Mapping[str, str]
    body: bytes
    at: float
    """``time.monotonic()`` on arrival, for measuring gaps between retries."""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(kw_only=True)
class _Fault:
    method: str | None
    prefix: str
    remaining: int | None
    """None: for ever."""
    status: int | None = None
    """None: drop the connection instead of answering."""
    retry_after: str | None = None
    delay: float = 0.0

    def matches(self, request: web.Request) -> bool:
        method_ok = self.method is None or self.method == request.method
        return method_ok and request.path.startswith(self.prefix)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    type: str


@dataclass(kw_only=True)
class _Reservation:
    sku: str
    quantity: int


class DemoServices:
    """The demo APIs, served on 127.0.0.1 (a free port) in the running event loop."""

    def __init__(
        self,
        *,
        billing_token: str = DEFAULT_BILLING_TOKEN,
        stock: Mapping[str, int] = DEFAULT_STOCK,
    ) -> None:
        self.billing_token = billing_token
        self.stock: dict[str, int] = dict(stock)
        self.duplicates = 0
        self._reservations: dict[str, _Reservation] = {}
        self._invoices: set[str] = set()
        self._recorded: list[RecordedRequest] = []
        self._arrived = asyncio.Condition()
        self._faults: list[_Fault] = []
        self._replies: dict[tuple[str, str, str], _Reply] = {}
        self._numbers = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._middleware])
        self._routes(app.router)
        # Handlers are cancelled when the client goes away, and shutdown does not
        # wait long for them: a test that times out must not stall the teardown.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, for the generic test routes."""
        return f"http://127.0.0.1:{self._port}"

    def url(self, service: str) -> str:
        """The base URL of one service, as a flow's ``services`` entry would give it."""
        if service not in SERVICES:
            raise KeyError(f"no demo service {service!r}; there are {', '.join(SERVICES)}")
        return f"{self.base_url}/{service}"

    # ------------------------------------------------------------ what happened

    def requests(self, path_prefix: str = "/") -> list[RecordedRequest]:
        """Every request whose path starts with ``path_prefix``, oldest first."""
        return [r for r in self._recorded if r.path.startswith(path_prefix)]

    def keys_seen(self, path_prefix: str = "/") -> Counter[str]:
        """How many requests carried each Idempotency-Key (a key seen twice was retried)."""
        return Counter(
            r.idempotency_key for r in self.requests(path_prefix) if r.idempotency_key is not None
        )

    async def arrival(self, path_prefix: str = "/") -> RecordedRequest:
        """Wait for the first request to ``path_prefix`` (returns at once if it came)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.requests(path_prefix))
            return self.requests(path_prefix)[0]

    # ------------------------------------------------------------ faults

    def fail(
        self,
        route: str,
        *,
        status: int = 503,
        times: int | None = 1,
        retry_after: float | str | None = None,
    ) -> None:
        """Answer ``status`` the next ``times`` requests (None: always), then behave."""
        method, prefix = _route(route)
        after = None if retry_after is None else str(retry_after)
        self._faults.append(
            _Fault(method=method, prefix=prefix, remaining=times, status=status, retry_after=after)
        )

    def down(self, route: str, *, times: int | None = None) -> None:
        """Close the connection without any response, like a crashed upstream."""
        method, prefix = _route(route)
        self._faults.append(_Fault(method=method, prefix=prefix, remaining=times))

    def delay(self, route: str, seconds: float) -> None:
        """Wait ``seconds`` before handling each request to the route."""
        method, prefix = _route(route)
        self._faults.append(_Fault(method=method, prefix=prefix, remaining=None, delay=seconds))

    def heal(self) -> None:
        """Remove every injected fault and delay."""
        self._faults.clear()

    # ------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        key = request.headers.get("Idempotency-Key")
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            raw_path=request.raw_path,
            idempotency_key=key,
            headers=dict(request.headers),
            body=body,
            at=time.monotonic(),
        )
        async with self._arrived:
            self._recorded.append(recorded)
            self._arrived.notify_all()
        for fault in [f for f in self._faults if f.matches(request) and f.delay]:
            await asyncio.sleep(fault.delay)
        injected = next((f for f in self._faults if f.matches(request) and not f.delay), None)
        if injected is not None:
            if injected.remaining is not None:
                injected.remaining -= 1
                if injected.remaining <= 0:
                    self._faults.remove(injected)
            return _injected(request, injected)
        if key is None or request.method in ("GET", "HEAD"):
            return await handler(request)
        # Like a real API: the first response to a key is the response to that key.
        # Injected faults above never reach here, so a failed attempt stores nothing.
        slot = (request.method, request.path, key)
        if slot in self._replies:
            self.duplicates += 1
            first = self._replies[slot]
            return web.Response(status=first.status, body=first.body, content_type=first.type)
        response = await handler(request)
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            self._remember(slot, response.status, response.body, response.content_type)
        return response

    def _remember(self, slot: tuple[str, str, str], status: int, body: bytes, kind: str) -> None:
        if status < 500:  # a server error is not an answer: the client may try again
            self._replies[slot] = _Reply(status, body, kind)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._numbers):04d}"

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/inventory/items/{sku}", self._item)
        router.add_post("/inventory/reservations", self._reserve)
        router.add_delete("/inventory/reservations/{reservation_id}", self._release)
        router.add_post("/billing/invoices", self._invoice)
        router.add_post("/billing/invoices/{invoice_id}/void", self._void)
        router.add_post("/shipping/shipments", self._ship)
        router.add_post("/accounting/entries", self._book)
        router.add_route("*", "/echo", self._echo)
        router.add_get("/slow", self._slow)
        router.add_get("/drip", self._drip)
        router.add_get("/big", self._big)
        router.add_get("/redirect", self._redirect)

    # ------------------------------------------------------------ the services

    async def _item(self, request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        if sku not in self.stock:
            return web.json_response({"error": f"unknown sku {sku}"}, status=404)
        available = self.stock[sku]
        return web.json_response({"sku": sku, "in_stock": available > 0, "available": available})

    async def _reserve(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        sku, quantity = data.get("sku"), data.get("quantity", 1)
        if not isinstance(sku, str) or not isinstance(quantity, int) or quantity < 1:
            return _error(422, "send {'sku': str, 'quantity': positive int}")
        if sku not in self.stock:
            return _error(404, f"unknown sku {sku}")
        if self.stock[sku] < quantity:
            return web.json_response(
                {"error": "not enough stock", "available": self.stock[sku]}, status=409
            )
        self.stock[sku] -= quantity
        reservation_id = self._next_id("res")
        self._reservations[reservation_id] = _Reservation(sku=sku, quantity=quantity)
        return web.json_response(
            {"reservation_id": reservation_id, "sku": sku, "quantity": quantity}, status=201
        )

    async def _release(self, request: web.Request) -> web.Response:
        reservation_id = request.match_info["reservation_id"]
        reservation = self._reservations.pop(reservation_id, None)
        if reservation is None:
            return _error(404, f"no reservation {reservation_id}")
        self.stock[reservation.sku] += reservation.quantity
        return web.json_response({"released": reservation_id})

    async def _invoice(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.billing_token}":
            return _error(401, "missing or wrong bearer token")
        data = await _json_body(request)
        amount = data.get("amount")
        if not isinstance(amount, int | float) or isinstance(amount, bool) or amount <= 0:
            return _error(422, "send a positive `amount`")
        invoice_id = self._next_id("inv")
        self._invoices.add(invoice_id)
        return web.json_response({"invoice_id": invoice_id, "amount": amount}, status=201)

    async def _void(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.billing_token}":
            return _error(401, "missing or wrong bearer token")
        invoice_id = request.match_info["invoice_id"]
        if invoice_id not in self._invoices:
            return _error(404, f"no invoice {invoice_id}")
        self._invoices.discard(invoice_id)
        return web.json_response({"invoice_id": invoice_id, "voided": True})

    async def _ship(self, request: web.Request) -> web.Response:
        number = self._next_id("shp")
        tracking = "1Z999AA1" + number.removeprefix("shp_").rjust(10, "0")
        # Both spellings: ``tracking``, and ``tracking_number`` as flows/order-processing reads it.
        return web.json_response(
            {"shipment_id": number, "tracking": tracking, "tracking_number": tracking}, status=201
        )

    async def _book(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        return web.json_response({"entry_id": self._next_id("ent"), "entry": data}, status=201)

    # ------------------------------------------------------------ generic test routes

    async def _echo(self, request: web.Request) -> web.Response:
        text = (await request.read()).decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        response = web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": text,
                "json": parsed,
            },
            status=int(request.query.get("status", "200")),
        )
        if "set_cookie" in request.query:
            name, _, value = request.query["set_cookie"].partition("=")
            response.set_cookie(name, value)
        return response

    async def _slow(self, request: web.Request) -> web.Response:
        seconds = float(request.query.get("seconds", "1"))
        await asyncio.sleep(seconds)
        return web.json_response({"slept": seconds})

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        chunks = int(request.query.get("chunks", "10"))
        interval = float(request.query.get("interval", "0.1"))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(b"x")
            await asyncio.sleep(interval)
        await response.write_eof()
        return response

    async def _big(self, request: web.Request) -> web.Response:
        size = int(request.query.get("bytes", "1024"))
        return web.Response(body=b"x" * size, content_type="text/plain")

    async def _redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": request.query.get("to", "/echo")})


def _route(route: str) -> tuple[str | None, str]:
    method, _, path = route.strip().rpartition(" ")
    return (method.upper() or None), "/" + path.lstrip("/")


def _injected(request: web.Request, fault: _Fault) -> web.Response:
    if fault.status is None:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client: the socket is gone
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    return web.json_response(
        {"error": f"injected failure {fault.status}"}, status=fault.status, headers=headers
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
