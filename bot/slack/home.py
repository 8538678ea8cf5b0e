"""The App Home tab: what waits for me, what I ran, what failed today.

Published on ``app_home_opened`` and whenever a run or approval that concerns
someone changes. It is a convenience view over the rows, so a failure to
publish is logged and never holds up the engine's messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.move import flow_of
from bot.engine.operations import Actor, Operations
from bot.engine.ports import RunView
from bot.engine.runner import Clock
from bot.engine.states import RunState
from bot.slack import views

log = logging.getLogger("relay.slack")

SETTLE_SECONDS = 0.5
"""How long changes gather before the Homes they touch are published."""


class HomeTab:
    """Builds and publishes one user's Home tab."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        operations: Operations,
        clock: Clock,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self.client = client
        self.operations = operations
        self.store = operations.store
        self.clock = clock
        self.settle = settle
        self._due: set[str] = set()
        self._publisher: asyncio.Task[None] | None = None

    def soon(self, users: Iterable[str]) -> None:
        """Republish these users' Homes shortly, in the background.

        A burst of changes (fifty cards, each concerning the same approvers)
        becomes one publish per person, and the messages that caused them never
        wait for it.
        """
        self._due.update(users)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_due(), name="home-tabs")

    async def _publish_due(self) -> None:
        while self._due:
            await asyncio.sleep(self.settle)
            users, self._due = self._due, set()
            await self.refresh(users)

    async def close(self) -> None:
        """Publish what is due, then stop."""
        if self._publisher is not None:
            await self._publisher

    async def publish(self, user: str) -> None:
        """Render the user's Home from the database and send it (raises on Slack errors)."""
        now = self.clock.now()
        waiting = []
        for run, key in await self.operations.waiting_for(Actor(user=user, via="slack")):
            snapshot = await self.store.snapshot(run.id)
            waiting.append((RunView(snapshot=snapshot, flow=flow_of(snapshot.run)), key))
        recent = await self.store.list_runs(started_by=user, limit=10)
        failed = await self.store.list_runs(
            states=[RunState.FAILED], since=now - timedelta(days=1), limit=10
        )
        view = views.home_view(user=user, approvals=waiting, recent=recent, failed=failed, now=now)
        await self.client.views_publish(user_id=user, view=view)

    async def refresh(self, users: Iterable[str]) -> None:
        """Republish for each user; an error (Slack down, say) is logged, never raised."""
        for user in sorted(set(users)):
            try:
                await self.publish(user)
            except SlackApiError as exc:
                log.warning("could not publish the Home of %s: %s", user, exc.response.get("error"))
            except Exception:
                log.warning("could not publish the Home of %s", user, exc_info=True)
