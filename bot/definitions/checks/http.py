"""Checks on where HTTP steps send requests and what they put in headers.

The host a step calls must come from the flow file, never from a run input or
a step output, or anyone who may start a run could point the bot's requests
(and its secrets) at a host of their choosing. Secrets travel in headers, never
in URLs, which are shown in run status messages and logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from bot.definitions.checks.context import CheckContext, is_template
from bot.definitions.models import HttpStep, Path
from bot.definitions.problems import Problem, quoted_list, suggestion
from bot.definitions.templating import references
from bot.errors import TemplateError

_ORIGIN = re.compile(r"(?P<scheme>[^:/?#]*)://(?P<authority>[^/?#]*)")
_CREDENTIAL_HEADER = re.compile(r"authorization|proxy-authorization|.*-token|.*-key", re.I)


def http_targets(ctx: CheckContext) -> Iterator[Problem]:
    """Literal http(s) origins, declared services, and no secrets in URLs."""
    for name, service in ctx.flow.services.items():
        if service.url is not None:
            yield from _origin_problems(ctx, ("services", name, "url"), service.url)
    for path, step in ctx.flow.walk():
        if not isinstance(step, HttpStep):
            continue
        if step.url is not None:
            yield from _origin_problems(ctx, (*path, "url"), step.url)
        if step.service is not None and step.service not in ctx.flow.services:
            declared = quoted_list(ctx.flow.services) or "none"
            yield ctx.problem(
                (*path, "service"),
                "unknown-service",
                f"step `{step.id}` calls the service `{step.service}`, which is not declared"
                f"{suggestion(step.service, ctx.flow.services)}",
                f"declare it under `services:` (declared: {declared})",
                value=True,
            )
        yield from _secrets_in_url(ctx, path, step)


def _origin_problems(ctx: CheckContext, path: Path, url: str) -> Iterator[Problem]:
    match = _ORIGIN.match(url)
    head = match.group(0) if match else url.split("/", 1)[0]
    if is_template(head):
        yield ctx.problem(
            path,
            "templated-url-origin",
            f"the scheme and host of `{url[:60]}` come from a template",
            "write the scheme and host literally, or declare a `service` and use `path`",
            value=True,
        )
        return
    if match is None or match.group("scheme").lower() not in ("http", "https"):
        yield ctx.problem(
            path,
            "bad-url",
            f"`{url[:60]}` is not an http or https URL",
            "start the URL with https:// (or http://) and a host",
            value=True,
        )
        return
    authority = match.group("authority")
    host = authority.rpartition("@")[2]
    if not host or host.startswith(":"):
        yield ctx.problem(
            path,
            "bad-url",
            f"`{url[:60]}` has no host",
            "write the host after `://`, e.g. https://api.example.com/path",
            value=True,
        )
    if ":" in authority.rpartition("@")[0]:
        yield ctx.problem(
            path,
            "literal-credential",
            "the URL carries a password",
            "put the token in `secrets:` and send it in an `Authorization` header",
            value=True,
        )


def _secrets_in_url(ctx: CheckContext, path: Path, step: HttpStep) -> Iterator[Problem]:
    parts: list[tuple[Path, str]] = []
    if step.url is not None:
        parts.append((("url",), step.url))
    if step.path:
        parts.append((("path",), step.path))
    parts.extend((("query", name), value) for name, value in step.query.items())
    for sub, text in parts:
        try:
            reads_secret = any(ref.root == "secrets" for ref in references(text))
        except TemplateError:
            continue
        if reads_secret:
            yield ctx.problem(
                (*path, *sub),
                "secret-in-url",
                f"step `{step.id}` puts a secret in its URL, which is shown in status and logs",
                "send the secret in a header instead, e.g. `Authorization: Bearer {{ secrets.X }}`",
                value=True,
            )


def http_headers(ctx: CheckContext) -> Iterator[Problem]:
    """No header smuggling through line breaks, and no credentials written in the file."""
    for path, step in ctx.flow.walk():
        if not isinstance(step, HttpStep):
            continue
        for name, value in step.headers.items():
            where = (*path, "headers", name)
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                yield ctx.problem(
                    where,
                    "header-newline",
                    f"the header `{name.strip()}` contains a line break",
                    "write the header name and value on one line",
                )
            elif _CREDENTIAL_HEADER.fullmatch(name) and not is_template(value):
                yield ctx.problem(
                    where,
                    "literal-credential",
                    f"the header `{name}` holds a credential written into the file",
                    "put the token in `secrets:` and write `{{ secrets.NAME }}` in the header",
                )
