"""Relay's HTTP surface: Slack's requests at ``/slack/events`` and ``/healthz``.

Bolt has no server of its own that we want to run: aiohttp serves the routes
and hands each Slack request to the app through Bolt's aiohttp adapter, so the
same process also serves the health check a load balancer or Heroku-style
router asks for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp

SLACK_PATH = "/slack/events"


def web_application(app: AsyncApp, *, healthy: Callable[[], Awaitable[bool]]) -> web.Application:
    """An aiohttp application routing Slack's deliveries to ``app``."""

    async def slack_events(request: web.Request) -> web.Response:
        response = await app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def health(_: web.Request) -> web.Response:
        if await healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="database unavailable\n")

    application = web.Application(client_max_size=1024 * 1024)
    application.router.add_post(SLACK_PATH, slack_events)
    application.router.add_get("/healthz", health)
    return application
