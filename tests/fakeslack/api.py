"""The HTTP face of the fake: `/api/<method>`, `/response/<id>`, `/socket/<ticket>`.

Order of checks per API request: outage (503), an injected fault (429 with
`Retry-After`, or 5xx), unknown method, token, then the method itself, so an
injected fault is served whatever the request holds. Every request is recorded
as a `Call` whatever its outcome, so a test can count retries as well as successes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .calls import Call, Journal
from .errors import SlackError
from .methods import APP_TOKEN_METHODS, METHODS, MethodContext
from .socket_mode import SocketHub
from .state import Workspace
from .validation import message_content
from .views import ViewStore

RESPONSE_URL_METHOD = "response_url"
"""The `Call.method` under which posts to a response_url are recorded."""

_FAULT_ERRORS = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}
_URL_ERRORS = frozenset({"invalid_url", "expired_url", "used_url"})
_JSON_FIELDS = ("blocks", "attachments", "view")


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after: int


class Faults:
    """Injected failures, consumed one per matching request."""

    def __init__(self) -> None:
        self._queued: dict[str, deque[_Fault]] = {}
        self._lock = threading.Lock()
        self.outage = False

    def add(self, method: str, *, status: int, retry_after: int, times: int) -> None:
        """Queue `times` failures for `method`, served before any real answer."""
        with self._lock:
            queue = self._queued.setdefault(method, deque())
            queue.extend(_Fault(status, retry_after) for _ in range(times))

    def take(self, method: str) -> _Fault | None:
        """The failure this request should get, if any."""
        if self.outage:
            return _Fault(503, 0)
        with self._lock:
            queue = self._queued.get(method)
            return queue.popleft() if queue else None


def _fault_response(fault: _Fault) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {"ok": False, "error": _FAULT_ERRORS.get(fault.status, "fatal_error")}
    headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
    return fault.status, body, headers


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Query, form and JSON arguments merged, as Slack accepts any of them."""
    args: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return args
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise SlackError("invalid_json") from None
        if not isinstance(body, dict):
            raise SlackError("json_not_object")
        args.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        args.update({key: value for key, value in form.items() if isinstance(value, str)})
    for name in _JSON_FIELDS:
        # Form bodies carry these as JSON strings; decode them so recorded calls read
        # the same however they were sent. A broken string stays for the method to reject.
        if isinstance(args.get(name), str):
            with contextlib.suppress(ValueError):
                args[name] = json.loads(args[name])
    return args


class Api:
    """aiohttp handlers over one `Workspace`; the server thread owns the loop."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        views: ViewStore,
        hub: SocketHub,
        bot_token: str,
        app_token: str,
        base_url: Callable[[], str],
    ) -> None:
        self.workspace = workspace
        self.hub = hub
        self.calls: Journal[Call] = Journal()
        self.faults = Faults()
        self._bot_token = bot_token
        self._app_token = app_token
        self._base_url = base_url
        self._context = MethodContext(workspace=workspace, views=views, socket_url=self._socket_url)

    def application(self) -> web.Application:
        """A fresh aiohttp app; one per listen, so `resume()` can start over."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self.api)
        app.router.add_post("/response/{url_id}", self.response_url)
        app.router.add_get("/socket/{ticket}", self.socket)
        return app

    def _socket_url(self) -> str:
        base = self._base_url().replace("http://", "ws://", 1)
        return f"{base}socket/{self.hub.issue_ticket()}"

    def _authorize(self, method: str, headers: Mapping[str, str], args: dict[str, Any]) -> None:
        authorization = headers.get("authorization", "")
        token = args.pop("token", None)
        if authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ").strip()
        if not token:
            raise SlackError("not_authed")
        wanted = self._app_token if method in APP_TOKEN_METHODS else self._bot_token
        if token == wanted:
            return
        if token in (self._app_token, self._bot_token):
            raise SlackError("not_allowed_token_type")
        raise SlackError("invalid_auth")

    def _answer(
        self, method: str, headers: Mapping[str, str], args: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        fault = self.faults.take(method)
        if fault is not None:
            return _fault_response(fault)
        handler = METHODS.get(method)
        try:
            if handler is None:
                raise SlackError("unknown_method")
            self._authorize(method, headers, args)
            return 200, handler(self._context, args), {}
        except SlackError as error:
            return 200, error.body(), {}

    async def api(self, request: web.Request) -> web.StreamResponse:
        """`/api/<method>`: answer like Slack and record the call."""
        method = request.match_info["method"]
        headers = {name.lower(): value for name, value in request.headers.items()}
        arrived = time.monotonic()
        try:
            args = await _read_args(request)
        except SlackError as error:
            args, answer = {}, (200, error.body(), {})
        else:
            answer = self._answer(method, headers, args)
        status, body, extra = answer
        self._record(method, args, headers, status, body, arrived, _peer(request))
        return web.json_response(body, status=status, headers=extra)

    def _record(
        self,
        method: str,
        args: dict[str, Any],
        headers: dict[str, str],
        status: int,
        body: dict[str, Any],
        arrived: float,
        peer: tuple[str, int] | None = None,
    ) -> None:
        warnings = tuple(body.get("response_metadata", {}).get("warnings", ()))
        self.calls.append(Call(method, args, headers, status, body, warnings, arrived, peer))

    async def response_url(self, request: web.Request) -> web.StreamResponse:
        """A response_url post: at most 5 within 30 minutes, as Slack allows."""
        headers = {name.lower(): value for name, value in request.headers.items()}
        arrived = time.monotonic()
        try:
            body = await _read_args(request)
        except SlackError as error:
            body, answer = {}, (400, error.body(), {})
        else:
            answer = self._respond(request.match_info["url_id"], body)
        status, reply, extra = answer
        self._record(RESPONSE_URL_METHOD, body, headers, status, reply, arrived, _peer(request))
        return web.json_response(reply, status=status, headers=extra)

    def _respond(
        self, url_id: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        fault = self.faults.take(RESPONSE_URL_METHOD)
        if fault is not None:
            return _fault_response(fault)
        try:
            self.workspace.check_response_url(url_id)
            deleting = bool(body.get("delete_original"))
            content = message_content(body, require=not deleting)
            self.workspace.respond(url_id, body, None if deleting else content)
        except SlackError as error:
            return (404 if error.error in _URL_ERRORS else 400), error.body(), {}
        return 200, {"ok": True}, {}

    async def socket(self, request: web.Request) -> web.StreamResponse:
        """`/socket/<ticket>`: the Socket Mode WebSocket, refused during an outage."""
        if self.faults.outage:
            raise web.HTTPServiceUnavailable()
        return await self.hub.handle(request)


def _peer(request: web.Request) -> tuple[str, int] | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return (str(peer[0]), int(peer[1])) if peer else None
