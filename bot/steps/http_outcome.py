"""Turn what happened to one HTTP request into an ``Outcome`` the engine can act on.

The rules live apart from the sending so that they read as a table: an expected
status succeeds with the response as output; any other status fails, retryable
when the step's retry policy lists it, with the server's ``Retry-After`` honoured
(capped); connection errors and timeouts fail retryable when the policy says
``connection`` or ``timeout``. Every message is plain words for a Slack channel,
with secrets masked, never a traceback.
"""

from __future__ import annotations

import codecs
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from bot.definitions.models import HttpStep, RetryPolicy
from bot.redact import Redactor
from bot.steps.base import Failed, Outcome, Succeeded

MAX_RETRY_AFTER = 3600.0
"""A server asking for more than an hour is capped: the run should not vanish for a day."""
EXCERPT_CHARS = 300
ERROR_BODY_BYTES = 64 * 1024
"""How much of a failed response is read: enough for the excerpt, never the cap."""


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One attempt's settings, and the rules that turn what happened into an Outcome."""

    step: HttpStep
    policy: RetryPolicy
    redactor: Redactor
    seconds: float
    now: Callable[[], datetime]

    async def judge(self, response: httpx.Response) -> Outcome:
        """Read the response (within the step's size cap) and decide success or failure."""
        if self.step.expects(response.status_code):
            return await self._accepted(response)
        return await self._rejected(response)

    async def _accepted(self, response: httpx.Response) -> Outcome:
        cap = self.step.max_response_bytes
        # Each lookup on ``response.headers`` scans them all; ``items()`` takes one pass
        # and joins repeated headers with ", " just as those lookups do.
        headers = dict(response.headers.items())
        content_type = headers.get("content-type", "")
        declared = headers.get("content-length", "")
        too_long = (
            declared.isdigit()
            and int(declared) > cap
            and response.request.method != "HEAD"
            and "content-encoding" not in headers
        )
        body, complete = (b"", False) if too_long else await _read(response, cap)
        if not complete:
            return Failed(
                message=f"the response from {host_label(response.url)} is larger than {cap} "
                "bytes (raise `max_response_bytes` on the step if that is expected)",
                retryable=False,
                status=response.status_code,
            )
        return Succeeded(
            output={
                "status": response.status_code,
                "headers": self.redactor.mask_data(headers),
                "json": self.redactor.mask_data(_json(content_type, body), by_name=False),
                "text": self.redactor.mask(_decode(response, body, content_type)),
            },
            status=response.status_code,
        )

    async def _rejected(self, response: httpx.Response) -> Failed:
        status = response.status_code
        # Only the excerpt is shown, so a huge error page is not worth the cap.
        body, _ = await _read(response, min(self.step.max_response_bytes, ERROR_BODY_BYTES))
        content_type = response.headers.get("content-type", "")
        excerpt = _excerpt(self.redactor.mask(_decode(response, body, content_type)))
        detail = excerpt
        location = response.headers.get("location")
        if response.is_redirect and location:
            detail = (
                f"redirect to {self.redactor.mask(location)} not followed "
                "(set `follow_redirects: true` on the step to follow it)"
            )
        return Failed(
            message=f"HTTP {status} from {host_label(response.url)}"
            + (f": {detail}" if detail else ""),
            retryable=self.policy.retries_status(status),
            retry_after=retry_after_seconds(response.headers.get("retry-after"), self.now()),
            status=status,
            excerpt=excerpt or None,
        )

    def timed_out(self, url: httpx.URL) -> Failed:
        return Failed(
            message=f"no response from {host_label(url)} within {self.seconds:g}s",
            retryable="timeout" in self.policy.on,
        )

    def transport_failure(self, exc: httpx.HTTPError, url: httpx.URL) -> Failed:
        where = host_label(url)
        connection = "connection" in self.policy.on
        if isinstance(exc, httpx.ConnectTimeout):
            message = f"could not connect to {where} within {self.seconds:g}s"
            return Failed(message=message, retryable="timeout" in self.policy.on)
        if isinstance(exc, httpx.TimeoutException):
            return self.timed_out(url)
        if isinstance(exc, httpx.ConnectError):
            if any(isinstance(c, ssl.SSLCertVerificationError) for c in _chain(exc)):
                return Failed(
                    message=f"the TLS certificate of {where} is not trusted", retryable=False
                )
            return Failed(
                message=f"could not connect to {where}: {self.redactor.mask(_reason(exc))}",
                retryable=connection,
            )
        if isinstance(exc, httpx.RemoteProtocolError):
            message = f"{where} closed the connection without a complete response"
            return Failed(message=message, retryable=connection)
        if isinstance(exc, httpx.NetworkError):
            return Failed(
                message=f"the connection to {where} broke: {self.redactor.mask(_reason(exc))}",
                retryable=connection,
            )
        if isinstance(exc, httpx.DecodingError):
            return Failed(
                message=f"the response from {where} could not be decoded", retryable=False
            )
        message = f"the request to {where} could not be sent: {self.redactor.mask(str(exc))}"
        return Failed(message=message, retryable=False)


def host_label(url: httpx.URL) -> str:
    """How a host is named in messages: with its port only when the URL spells one."""
    return url.host if url.port is None else f"{url.host}:{url.port}"


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (socket.gaierror, "host name not found"),
    (ssl.SSLError, "TLS handshake failed"),
)


def _reason(exc: BaseException) -> str:
    """The cause in a few plain words; httpx wraps the OS error, so look down the chain."""
    for cause in _chain(exc):
        for kind, reason in _REASONS:
            if isinstance(cause, kind):
                return reason
    return str(exc) or type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


async def _read(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` decoded bytes of the body, and whether that was all of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in _decoded(response):
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[: len(chunk) - (size - limit)])
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def _decoded(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's chunks with any Content-Encoding undone.

    Without one, httpx's decoding changes nothing but still costs a decoder and a
    chunker per response, so a fresh stream is read raw. A body httpx already holds
    (a response built with its content) can only be read through ``aiter_bytes``.
    """
    if response.is_stream_consumed or "content-encoding" in response.headers:
        return response.aiter_bytes()
    return response.aiter_raw()


def _decode(response: httpx.Response, body: bytes, content_type: str) -> str:
    # httpx finds the charset by parsing Content-Type as an email header, which
    # cost more than the rest of judging a response; most name none.
    declared = "charset" in content_type.lower()
    encoding = (response.charset_encoding if declared else None) or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "utf-8"
    return body.decode(encoding, errors="replace")


def _json(content_type: str, body: bytes) -> object:
    media_type = content_type.split(";")[0].strip().lower()
    if not (media_type == "application/json" or media_type.endswith("+json")):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _excerpt(text: str) -> str:
    collapsed = " ".join(text.split())
    if len(collapsed) <= EXCERPT_CHARS:
        return collapsed
    return collapsed[: EXCERPT_CHARS - 1].rstrip() + "…"


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), capped."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER)
