"""A loopback HTTP service that records every request, for crash tests and benchmarks.

It runs in threads of the test process (one per request), so it keeps answering
while the test blocks on subprocesses, and a worker killed mid-call leaves its
record behind. Each request is stamped on arrival with the same clock the engine
writes into the database (``datetime.now(UTC)``), so arrivals compare directly
with a step's ``finished_at``. Answers come after a random delay, or after
``hold`` seconds, so that a kill can land while the call is in flight.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


@dataclass(frozen=True, kw_only=True)
class Arrival:
    """One request as it arrived, before any answer was sent."""

    at: datetime
    path: str
    idempotency_key: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    """A worker opens a hundred connections at once; the default backlog of 5 drops SYNs."""

    def handle_error(self, request: object, client_address: object) -> None:
        """A caller killed mid-call resets its connection: expected here, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class CountingService:
    """Serves ``POST`` on 127.0.0.1 (a free port) and lists every arrival.

    ``delay`` is the range of the random wait before answering; ``hold``, when
    set, replaces it with a fixed wait (a slow upstream).
    """

    def __init__(
        self,
        *,
        delay: tuple[float, float] = (0.0, 0.08),
        hold: float | None = None,
        seed: int = 0,
    ) -> None:
        self.delay = delay
        self.hold = hold
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, for a flow's ``services`` entry."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def arrivals(self) -> list[Arrival]:
        """Every request so far, in order of arrival."""
        with self._lock:
            return list(self._arrivals)

    def count(self) -> int:
        with self._lock:
            return len(self._arrivals)

    def _record(self, path: str, key: str | None) -> float:
        """Store the arrival and pick how long to wait before answering it."""
        with self._lock:
            self._arrivals.append(Arrival(at=datetime.now(UTC), path=path, idempotency_key=key))
            if self.hold is not None:
                return self.hold
            return self._random.uniform(*self.delay)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                wait = service._record(self.path, self.headers.get("Idempotency-Key"))
                time.sleep(wait)
                body = json.dumps({"path": self.path}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    # The caller was killed while we waited: nobody is left to answer.
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the arrivals list is the log."""

        return Handler
