"""Slack's Socket Mode side: WebSocket URLs, `hello`, envelopes and acks.

slack_sdk's aiohttp `SocketModeClient` (which Bolt's `AsyncSocketModeHandler`
drives) calls `apps.connections.open`, connects with `autoping=False` and pings
`sdk-ping-pong:<time>` itself, expecting the pong to echo it; aiohttp's server
`autoping=True` does exactly that. It then waits for Slack's `hello` and answers
each envelope with `{"envelope_id": ..., "payload"?: ...}`.

Connections and the pending queue live on the server's event loop only; tests
reach them through `FakeSlack`, which hops onto that loop. Envelopes sent while no
client is connected wait and go out right after the next `hello`, as Slack holds
events for a reconnecting app.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from .calls import Journal

Json = dict[str, Any]


@dataclass(frozen=True)
class Ack:
    """One acknowledgement a Socket Mode client sent back."""

    envelope_id: str
    payload: Mapping[str, Any] | None
    """The response payload (e.g. a slash command's reply), if the ack carried one."""
    at: float


def slash_command_envelope(fields: Mapping[str, str]) -> Json:
    """Socket Mode's wrapper around the fields an HTTP slash command would carry."""
    return _envelope("slash_commands", dict(fields), accepts_response_payload=True)


def interactive_envelope(payload: Mapping[str, Any]) -> Json:
    """Socket Mode's wrapper around a block_actions / view_submission payload."""
    accepts = payload.get("type") in ("view_submission", "block_suggestion")
    return _envelope("interactive", dict(payload), accepts_response_payload=accepts)


def events_api_envelope(
    body: Mapping[str, Any], *, retry_attempt: int = 0, retry_reason: str = ""
) -> Json:
    """Socket Mode's wrapper around an Events API `event_callback` body."""
    envelope = _envelope("events_api", dict(body), accepts_response_payload=False)
    envelope.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
    return envelope


def _envelope(kind: str, payload: Json, *, accepts_response_payload: bool) -> Json:
    return {
        "envelope_id": str(uuid.uuid4()),
        "type": kind,
        "accepts_response_payload": accepts_response_payload,
        "payload": payload,
    }


class SocketHub:
    """Serves `/socket/<ticket>` and moves envelopes out and acks in."""

    def __init__(self, *, app_id: str) -> None:
        self.app_id = app_id
        self.acks: Journal[Ack] = Journal()
        self.received: Journal[Json] = Journal()
        """Every JSON message a client sent, acks included, for debugging tests."""
        self._tickets: set[str] = set()
        self._tickets_lock = threading.Lock()
        self._connections: list[web.WebSocketResponse] = []
        self._pending: list[Json] = []

    @property
    def connection_count(self) -> int:
        """Open client connections that have been greeted."""
        return len(self._connections)

    def issue_ticket(self) -> str:
        """A new URL path element, as `apps.connections.open` hands out per call."""
        ticket = secrets.token_hex(8)
        with self._tickets_lock:
            self._tickets.add(ticket)
        return ticket

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One client connection: greet, flush held envelopes, then record acks."""
        with self._tickets_lock:
            known = request.match_info["ticket"] in self._tickets
        if not known:
            raise web.HTTPNotFound(text="invalid_socket_url")
        ws = web.WebSocketResponse(autoping=True, timeout=1.0)
        await ws.prepare(request)
        await ws.send_json(self._hello(len(self._connections) + 1))
        self._connections.append(ws)
        await self._flush()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._receive(message.data)
        finally:
            if ws in self._connections:
                self._connections.remove(ws)
        return ws

    def _hello(self, num_connections: int) -> Json:
        return {
            "type": "hello",
            "num_connections": num_connections,
            "debug_info": {
                "host": "applink-fake-1",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }

    def _receive(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        self.received.append(message)
        envelope_id = message.get("envelope_id")
        if isinstance(envelope_id, str):
            payload = message.get("payload")
            self.acks.append(Ack(envelope_id, payload, time.monotonic()))

    async def deliver(self, envelope: Json) -> None:
        """Send to the newest connection, or hold until one says hello."""
        self._pending.append(envelope)
        await self._flush()

    async def _flush(self) -> None:
        while self._pending and self._connections:
            envelope = self._pending.pop(0)
            await self._connections[-1].send_json(envelope)

    async def close_all(self) -> None:
        """Drop every client, as a Slack outage or restart does."""
        for ws in list(self._connections):
            await ws.close(code=1001, message=b"fake slack going away")
        self._connections.clear()
