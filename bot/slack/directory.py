"""User-group membership from Slack, cached for a short while.

Approvals and permissions ask "is this person in @oncall?" on every click; the
answer comes from ``usergroups.users.list`` and is kept for ``ttl`` so a burst
of clicks costs one call per group, while a change of membership in Slack is
seen within a minute. Concurrent askers of the same group share one call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection

from slack_sdk.web.async_client import AsyncWebClient


class SlackDirectory:
    """Answers ``Directory.groups_of`` from Slack user groups."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._loading: dict[str, asyncio.Task[frozenset[str]]] = {}

    async def groups_of(self, user: str, among: Collection[str]) -> frozenset[str]:
        found = set()
        for group in among:
            if user in await self.members(group):
                found.add(group)
        return frozenset(found)

    async def members(self, group: str) -> frozenset[str]:
        """The group's members; raises SlackApiError if Slack cannot say (nobody is let in)."""
        cached = self._cache.get(group)
        if cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        task = self._loading.get(group)
        if task is None:
            task = asyncio.ensure_future(self._load(group))
            self._loading[group] = task
            task.add_done_callback(lambda _: self._loading.pop(group, None))
        return await asyncio.shield(task)

    async def _load(self, group: str) -> frozenset[str]:
        response = await self._client.usergroups_users_list(usergroup=group)
        members = frozenset(str(user) for user in response.get("users") or [])
        self._cache[group] = (self._clock(), members)
        return members
