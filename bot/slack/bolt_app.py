"""The Bolt app and its Web API client, built from the settings.

Every Web API call goes through one ``AsyncWebClient`` pointed at
``SLACK_API_URL``, so a proxy or a test server can stand in for slack.com, and
it retries what Slack asks to be retried: 429 (after ``Retry-After``), 5xx and
dropped connections. Bolt's request verification stays on.

The client and the ``response_url`` answers share one ``aiohttp`` session
(``slack_session``), which keeps its connections open. Without one, slack_sdk
opens a session for every call, and so a new connection and, with slack.com,
a TLS handshake.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError
from bot.settings import Settings

log = logging.getLogger("relay.slack")


class _TokenGivenTwice(logging.Filter):
    """Drops Bolt's warning that the token is unused because a client was given.

    Bolt reads ``SLACK_BOT_TOKEN`` from the environment on its own and warns
    when a client comes with it, though the client carries that same token: a
    warning at every start that asks nothing of anyone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


_TOKEN_GIVEN_TWICE = _TokenGivenTwice()

MAX_RETRIES = 3
TIMEOUT_SECONDS = 30
"""A whole Web API call, as slack_sdk's own default."""


@contextlib.asynccontextmanager
async def slack_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP session every call to Slack shares, keeping its connections open."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    ) as session:
        yield session


def web_client(
    settings: Settings, *, session: aiohttp.ClientSession | None = None
) -> AsyncWebClient:
    """The bot's Web API client; raises ConfigError when SLACK_BOT_TOKEN is missing."""
    if settings.slack_bot_token is None:
        raise ConfigError("SLACK_BOT_TOKEN is not set: copy the Bot User OAuth Token (xoxb-…)")
    base_url = settings.slack_api_url.rstrip("/") + "/"
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=base_url,
        session=session,
        timeout=TIMEOUT_SECONDS,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=MAX_RETRIES),
            AsyncRateLimitErrorRetryHandler(max_retry_count=MAX_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=MAX_RETRIES),
        ],
    )


def bolt_app(settings: Settings, client: AsyncWebClient, *, socket: bool = False) -> AsyncApp:
    """An AsyncApp whose listeners acknowledge, hand their work to a task, and return.

    ``process_before_response`` makes Bolt answer Slack the moment a listener
    returns; without it, Bolt polls for the acknowledgement every 10 ms while the
    listener runs on (see ``bot.slack.handlers``).

    Over HTTP it verifies Slack's signature on every request; in Socket Mode
    requests arrive on a connection the app token opened, which has no
    signature to check, and the app token is required instead.
    """
    secret = settings.slack_signing_secret
    if socket and settings.slack_app_token is None:
        raise ConfigError(
            "SLACK_APP_TOKEN is not set: Socket Mode needs an app-level token (xapp-…)"
        )
    if not socket and secret is None:
        raise ConfigError(
            "SLACK_SIGNING_SECRET is not set: copy it from the app's Basic Information"
        )
    log.addFilter(_TOKEN_GIVEN_TWICE)
    return AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret is not None else None,
        request_verification_enabled=not socket,
        process_before_response=True,
        logger=log,
    )
