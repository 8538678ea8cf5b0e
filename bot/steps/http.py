"""HTTP steps: build the request from the flow (pure), send it once, judge the response.

``prepare`` turns an ``HttpStep`` and a scope into a ``PreparedRequest`` without
I/O, so ``relay run --dry-run`` shows exactly what would be sent and the tests
cover request building in microseconds. ``HttpExecutor`` sends it through the one
shared ``httpx.AsyncClient`` and maps the result to an ``Outcome``: the engine
decides about retries from ``retryable`` and ``retry_after``, never from
exceptions.

Where a request may go is fixed by the flow file alone. Template values are
percent-encoded where they land in the URL, and the rendered URL's origin must
equal the literal one, so a run input such as ``evil.com@`` or ``//evil.com``
cannot redirect a call; ``RELAY_HTTP_ALLOW_HOSTS`` then limits which hosts any
flow may reach, redirects included.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from http.client import HTTPResponse
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urlencode

import httpx

from bot import __version__
from bot.definitions.models import HttpStep
from bot.definitions.templating import Scope, render, render_data
from bot.errors import ConfigError, RelayError, TemplateError
from bot.redact import MASK, Redactor, is_sensitive_name
from bot.steps.base import Failed, Outcome, StepContext
from bot.steps.http_outcome import Attempt, host_label

USER_AGENT = f"relay/{__version__}"
MAX_REDIRECTS = 10
ALLOW_HOSTS_SETTING = "RELAY_HTTP_ALLOW_HOSTS"

_ORIGIN = re.compile(r"(?P<origin>[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)(?P<end>[/?#]|$)")
_TEMPLATE_START = re.compile(r"\{[{%#]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_UNSAFE_HEADER_CHARS = re.compile(r"[\r\n\x00]")


# ---------------------------------------------------------------- building


@dataclass(frozen=True, kw_only=True)
class PreparedRequest:
    """A fully rendered request: exactly what will be sent, body included."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    content: bytes | None = None

    def header(self, name: str) -> str | None:
        """The value of a header, matched case-insensitively."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def display(self, redactor: Redactor) -> str:
        """The request as text for people (``--dry-run``), secrets and credentials masked."""
        lines = [f"{self.method} {redactor.mask(self.url)}"]
        for name, value in self.headers:
            lines.append(f"{name}: {MASK if is_sensitive_name(name) else redactor.mask(value)}")
        if self.content:
            lines += ["", redactor.mask(self.content.decode("utf-8", errors="replace"))]
        return "\n".join(lines)


def prepare(
    step: HttpStep, *, scope: Scope, services: Mapping[str, str], idempotency_key: str
) -> PreparedRequest:
    """Render an HTTP step into a request, refusing anything that would leave its origin.

    Raises ``TemplateError`` when a template fails or a rendered value would make
    an unsafe request, and ``ConfigError`` when the step's service has no URL.
    """
    return _prepare(step, scope=scope, services=services, idempotency_key=idempotency_key)[0]


def _prepare(
    step: HttpStep, *, scope: Scope, services: Mapping[str, str], idempotency_key: str
) -> tuple[PreparedRequest, httpx.URL]:
    """``prepare``, plus its URL as parsed and checked.

    The executor sends that very object: ``build_request`` would otherwise parse
    ``url`` a second time, and what is sent can never differ from what was checked.
    """
    if step.url is not None:
        origin = _literal_origin(step.url)
        rendered = render(step.url, scope, url=True)
        if not rendered.startswith(origin):
            raise TemplateError("the rendered url does not start with the literal host")
        url, text = _checked_url(origin, rendered[len(origin) :], origin)
    else:
        assert step.service is not None  # the model requires url or service
        if step.service not in services:
            raise ConfigError(f"service `{step.service}` has no base URL configured for this run")
        base = services[step.service]
        origin = _service_origin(step.service, base)
        path = render(step.path, scope, url=True)
        joint = "" if not path or path.startswith(("/", "?")) else "/"
        url, text = _checked_url(base.rstrip("/"), joint + path, origin)
    if step.query:
        try:
            url = url.copy_merge_params({k: render(v, scope) for k, v in step.query.items()})
        except httpx.InvalidURL as exc:
            raise TemplateError(f"the rendered url is not valid: {exc}") from None
        text = str(url)
    headers, content = _headers_and_body(step, scope, idempotency_key)
    prepared = PreparedRequest(method=step.method, url=text, headers=headers, content=content)
    return prepared, url


@lru_cache(maxsize=256)
def _literal_origin(source: str) -> str:
    """``scheme://authority`` of a url template, which must hold no template itself."""
    start = _TEMPLATE_START.search(source)
    literal = source[: start.start()] if start else source
    match = _ORIGIN.match(literal)
    if match is None or (start is not None and not match.group("end")):
        raise TemplateError(
            "`url` must start with a literal scheme and host such as https://api.example.com/; "
            "templates may only come after the host"
        )
    return _checked_origin(match.group("origin"), "`url`", TemplateError)


@lru_cache(maxsize=256)
def _service_origin(name: str, base: str) -> str:
    match = _ORIGIN.match(base)
    if match is None or "?" in base or "#" in base or _TEMPLATE_START.search(base):
        raise ConfigError(
            f"service `{name}` base URL must be a plain http(s) URL without query or fragment"
        )
    return _checked_origin(match.group("origin"), f"service `{name}`", ConfigError)


def _checked_origin(origin: str, what: str, error: type[RelayError]) -> str:
    try:
        url = _origin_url(origin)
    except httpx.InvalidURL as exc:
        raise error(f"{what} has an invalid host: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise error(f"{what} must be an http or https URL with a host")
    return origin


@lru_cache(maxsize=256)
def _origin_url(origin: str) -> httpx.URL:
    """``origin`` parsed once per distinct value, not on every request.

    Origins come from flow files and services' base URLs, never from run input, so a
    few of them are checked again on every request of every run.
    """
    return httpx.URL(origin)


def _origin_of(url: httpx.URL) -> tuple[str, str, int | None, str]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default, url.userinfo.decode("ascii")


@lru_cache(maxsize=1024)
def _checked_url(prefix: str, rest: str, origin: str) -> tuple[httpx.URL, str]:
    """``prefix + rest`` parsed, with dot segments of ``rest`` encoded; refused off ``origin``.

    Cached on the rendered text (an ``httpx.URL`` is immutable): parsing it was
    the largest part of building a request, and most steps send the same URL
    on every run, or one of a few.
    """
    try:
        url = httpx.URL(prefix + _encode_dot_segments(rest))
    except httpx.InvalidURL as exc:
        raise TemplateError(f"the rendered url is not valid: {exc}") from None
    expected = _origin_url(origin)  # parsed without error by _checked_origin
    if _origin_of(url) != _origin_of(expected):
        raise TemplateError(
            f"the rendered url points at {url.host!r}, not at {expected.host!r}; "
            "values may not change the host"
        )
    return url, str(url)


def _encode_dot_segments(rest: str) -> str:
    """Percent-encode path segments that are only dots, so a value of ``..`` stays a name.

    URL parsers resolve ``.`` and ``..`` segments; ``render(url=True)`` leaves dots
    alone because they are unreserved, so a value ``..`` would otherwise walk up.
    """
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    segments = [
        segment.replace(".", "%2E") if segment in (".", "..") else segment
        for segment in rest[:cut].split("/")
    ]
    return "/".join(segments) + rest[cut:]


def _headers_and_body(
    step: HttpStep, scope: Scope, idempotency_key: str
) -> tuple[tuple[tuple[str, str], ...], bytes | None]:
    headers: dict[str, tuple[str, str]] = {"user-agent": ("User-Agent", USER_AGENT)}
    for name, template in step.headers.items():
        headers[name.lower()] = (name, _header_value(name, render(template, scope)))
    content: bytes | None = None
    if step.body_json is not None:
        try:
            content = json.dumps(
                render_data(step.body_json, scope),
                ensure_ascii=False,
                separators=(",", ":"),
                allow_nan=False,
            ).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TemplateError(f"the `json` body cannot be sent as JSON: {exc}") from None
        headers.setdefault("content-type", ("Content-Type", "application/json"))
    elif step.form is not None:
        form = [(name, render(template, scope)) for name, template in step.form.items()]
        content = urlencode(form).encode("ascii")
        headers.setdefault("content-type", ("Content-Type", "application/x-www-form-urlencoded"))
    # Always ours: the key is what makes a retried or recovered call safe to repeat.
    headers["idempotency-key"] = ("Idempotency-Key", idempotency_key)
    return tuple(headers.values()), content


def _header_value(name: str, value: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise TemplateError(f"header name `{name}` is not a valid HTTP header name")
    if _UNSAFE_HEADER_CHARS.search(value):
        raise TemplateError(
            f"header `{name}` would contain a line break or NUL after rendering; refusing to send"
        )
    if not value.isascii():
        raise TemplateError(f"header `{name}` may only contain ASCII characters")
    return value


# ---------------------------------------------------------------- the client


class _NoCookies(CookieJar):
    """A jar that keeps no cookies, without parsing the ones it would refuse.

    httpx hands the jar every response, and the policy alone would refuse each cookie
    only after reading all the headers into an ``email`` message. The policy stays,
    so that a cookie set on the client by hand is never sent either.
    """

    def extract_cookies(self, response: HTTPResponse, request: urllib.request.Request) -> None:
        """Refuse every cookie of ``response`` without reading its headers."""


def make_http_client() -> httpx.AsyncClient:
    """The one HTTP client of the process, shared by every HTTP step.

    httpx's own transport (httpcore), not ``httpx_aiohttp``: that one was several
    times faster on bursts (``bench/http_transport.py``), but it hands URLs to
    yarl, which decodes ``%2E%2E`` and resolves it, so a run input ``..`` would
    walk up the API's path; and aiohttp silently sends an idempotent request a
    second time when the connection drops. This transport never retries (the
    engine does, with the same Idempotency-Key), ignores proxy variables from the
    environment, and keeps no cookies, so one flow's session never leaks into
    another's calls.
    """
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5)
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(limits=limits, retries=0, trust_env=False),
        trust_env=False,
        follow_redirects=False,
        cookies=_NoCookies(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


# ---------------------------------------------------------------- sending


def host_allowed(host: str, allow_hosts: Collection[str]) -> bool:
    """Whether ``RELAY_HTTP_ALLOW_HOSTS`` lets flows call ``host``; empty allows all.

    Entries are exact names (case-insensitive) or ``*.suffix``, which matches any
    name below the suffix but not the suffix itself.
    """
    if not allow_hosts:
        return True
    host = host.lower().rstrip(".")
    for entry in (entry.lower().rstrip(".") for entry in allow_hosts):
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def _utc_now() -> datetime:
    return datetime.now(UTC)


class HttpExecutor:
    """Sends one attempt of an HTTP step and reports it as ``Succeeded`` or ``Failed``.

    ``allow_hosts`` is ``RELAY_HTTP_ALLOW_HOSTS``: exact host names or ``*.suffix``
    entries, checked on every hop; empty allows any host. ``clock`` reads "now" for
    ``Retry-After`` dates.
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        allow_hosts: Collection[str] = (),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._client = client
        self._allow_hosts = tuple(allow_hosts)
        self._clock = clock

    async def execute(self, context: StepContext) -> Outcome:
        step = context.step
        if not isinstance(step, HttpStep):
            raise TypeError(f"HttpExecutor cannot run a {step.kind} step")
        redactor = Redactor(context.secrets.values())
        if step.service is not None and step.service not in context.services:
            service = context.flow.services.get(step.service)
            hint = (
                f": set the environment variable {service.env}" if service and service.env else ""
            )
            return Failed(
                message=f"service `{step.service}` has no base URL{hint}", retryable=False
            )
        try:
            prepared, url = _prepare(
                step,
                scope=context.scope,
                services=context.services,
                idempotency_key=context.idempotency_key,
            )
        except RelayError as exc:
            return Failed(message=redactor.mask(exc.message), retryable=False)
        attempt = Attempt(
            step=step,
            # The same policy the engine applies, so "retryable" and the retry agree.
            policy=step.retry or context.flow.defaults.retry,
            redactor=redactor,
            seconds=context.timeout.total_seconds(),
            now=self._clock,
        )
        request = self._client.build_request(
            prepared.method,
            url,
            headers=list(prepared.headers),
            content=prepared.content,
            timeout=httpx.Timeout(attempt.seconds),
        )
        try:
            # httpx's timeouts bound each phase; this bounds the whole attempt, so a
            # server dripping one byte per second cannot hold a worker for ever.
            async with asyncio.timeout(attempt.seconds):
                return await self._exchange(request, attempt)
        except TimeoutError:
            return attempt.timed_out(request.url)

    async def _exchange(self, request: httpx.Request, attempt: Attempt) -> Outcome:
        for _ in range(MAX_REDIRECTS + 1):
            if not host_allowed(request.url.host, self._allow_hosts):
                return Failed(
                    message=f"host {request.url.host} is not allowed: add it to "
                    f"{ALLOW_HOSTS_SETTING} to let flows call it",
                    retryable=False,
                )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                return attempt.transport_failure(exc, request.url)
            try:
                if attempt.step.follow_redirects and response.next_request is not None:
                    request = response.next_request
                    continue
                return await attempt.judge(response)
            except httpx.HTTPError as exc:
                return attempt.transport_failure(exc, request.url)
            finally:
                await response.aclose()
        return Failed(
            message=f"{host_label(request.url)} redirected more than {MAX_REDIRECTS} times",
            retryable=False,
        )
