"""Slack as the engine's chat: one live status message per run, live approval cards, alerts.

The outbox calls these methods at least once per state change, with the run
as it is now, so every method converges: it posts a message the first time
and edits it in place afterwards, keeping where it posted in ``runs.chat``.
Errors Slack will answer the same way forever (a deleted channel, a channel
the bot is not in) are logged and dropped; anything else is raised, so the
outbox retries with back-off and messages catch up when Slack answers again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.definitions.models import ApprovalStep
from bot.engine.ports import RunView
from bot.engine.runner import Clock
from bot.errors import OperationRefused
from bot.slack import blocks
from bot.slack.directory import SlackDirectory
from bot.store.runs import Store

log = logging.getLogger("relay.slack")

PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "invalid_blocks",
        "message_not_found",
        "cant_update_message",
        "user_not_found",
        "cannot_dm_bot",
    }
)
"""Slack errors that no retry will cure."""

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")

PeopleChanged = Callable[[set[str]], None]


def slack_users(ids: Iterable[str]) -> set[str]:
    """Only real Slack user ids: runs started by ``local`` or a schedule have no Home tab."""
    return {user for user in ids if _SLACK_USER.match(user)}


class SlackChat:
    """Implements ``bot.engine.ports.Chat`` over the Slack Web API."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        store: Store,
        alert_channel: str | None,
        clock: Clock | None = None,
        directory: SlackDirectory | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.alert_channel = alert_channel
        self.clock = clock or Clock()
        self.directory = directory
        self.people_changed: PeopleChanged | None = None
        """Called with the users whose Home tab shows something that just changed."""

    # ------------------------------------------------------------ the status message

    async def _refs(self, view: RunView) -> dict[str, Any]:
        """Where this run's messages are, read now: the view may predate the last post."""
        return (await self.store.get_run(view.snapshot.run.id)).chat

    async def run_changed(self, view: RunView) -> None:
        run = view.snapshot.run
        now = self.clock.now()
        refs = await self._refs(view)
        status = refs.get("status")
        message = blocks.run_status(view, now=now)
        if status is not None:
            await self._update(status, message)
        elif run.source.get("channel"):
            status = await self._post(run.source["channel"], message)
            if status is not None:
                await self.store.set_chat_ref(run.id, "status", status)
        if status is not None:
            await self._post_details(view, status, refs)
        await self._refresh_alerts(view, refs)
        if run.state.finished:
            self._people_changed({run.started_by})

    async def _post_details(
        self, view: RunView, status: dict[str, str], refs: dict[str, Any]
    ) -> None:
        """Retries and errors go to the status message's thread, once each."""
        run = view.snapshot.run
        posted = set(refs.get("details", []))
        fresh = [
            attempt
            for attempt in view.attempts
            if attempt.finished_at is not None
            and (attempt.outcome != "succeeded" or attempt.number > 1)
            and f"{attempt.step_key}#{attempt.number}" not in posted
        ]
        for attempt in fresh:
            await self._post(status["channel"], blocks.step_detail(view, attempt), thread=status)
            posted.add(f"{attempt.step_key}#{attempt.number}")
        if fresh:
            await self.store.set_chat_ref(run.id, "details", sorted(posted))

    # ------------------------------------------------------------ approvals

    async def approval_changed(self, view: RunView, step_key: str) -> None:
        run = view.snapshot.run
        approval = view.snapshot.approvals.get(step_key)
        if approval is None:
            return
        refs = await self._refs(view)
        cards: dict[str, list[dict[str, str]]] = dict(refs.get("approvals", {}))
        message = blocks.approval_card(view, step_key, now=self.clock.now())
        if step_key in cards:
            for card in cards[step_key]:
                await self._update(card, message)
            if approval.state == "pending" and run.state.active:
                await self._ask_escalated(view, step_key, refs, cards, message)
        elif approval.state == "pending" and run.state.active:
            posted = []
            dm = self._approval_step(view, step_key).dm
            for target in await self._approval_targets(view, step_key):
                landed = await self._post(target, message)
                if landed is not None:
                    posted.append({**landed, "user": target} if dm else landed)
            cards[step_key] = posted
            await self.store.set_chat_ref(run.id, "approvals", cards)
        self._people_changed({run.started_by, *await self._approvers(view, step_key)})

    async def _ask_escalated(
        self,
        view: RunView,
        step_key: str,
        refs: dict[str, Any],
        cards: dict[str, list[dict[str, str]]],
        message: blocks.Message,
    ) -> None:
        """Ask a new level's approvers once: editing a card notifies nobody.

        Direct cards go to each new approver; a channel card gets a thread reply
        that mentions them. ``runs.chat["asked"]`` keeps the (round, level) last
        asked, so a repeated delivery asks nobody twice and a retried approval
        that escalates again asks again.
        """
        run = view.snapshot.run
        approval = view.snapshot.approvals[step_key]
        mark = [approval.round, approval.level]
        asked: dict[str, list[int]] = dict(refs.get("asked", {}))
        if approval.level == 0 or mark <= asked.get(step_key, [0, 0]):
            return
        if self._approval_step(view, step_key).dm:
            have = {card.get("user") for card in cards[step_key]}
            for user in await self._approval_targets(view, step_key):
                landed = None if user in have else await self._post(user, message)
                if landed is not None:
                    cards[step_key] = [*cards[step_key], {**landed, "user": user}]
            await self.store.set_chat_ref(run.id, "approvals", cards)
        else:
            nudge = blocks.reminder(view, step_key, now=self.clock.now(), escalated=True)
            for card in cards[step_key]:
                await self._post(card["channel"], nudge, thread=card)
        asked[step_key] = mark
        await self.store.set_chat_ref(run.id, "asked", asked)

    async def _approval_targets(self, view: RunView, step_key: str) -> list[str]:
        step = self._approval_step(view, step_key)
        if step.dm:
            return sorted(await self._approvers(view, step_key))
        channel = step.channel or view.snapshot.run.source.get("channel") or self.alert_channel
        if channel is None:
            log.warning("approval %s of run %s has nowhere to go", step_key, view.snapshot.run.id)
            return []
        return [channel]

    async def _approvers(self, view: RunView, step_key: str) -> set[str]:
        """Every person who may decide the step at its current level."""
        step = self._approval_step(view, step_key)
        approval = view.snapshot.approvals[step_key]
        level = step.levels()[min(approval.level, len(step.levels()) - 1)]
        users: set[str] = set()
        groups: set[str] = set()
        if level.approvers is not None:
            users.update(level.approvers.users)
            groups.update(level.approvers.groups)
        for quorum in level.quorum:
            users.update(quorum.users)
            if quorum.group:
                groups.add(quorum.group)
        if self.directory is not None:
            for group in groups:
                users.update(await self.directory.members(group))
        return slack_users(users)

    @staticmethod
    def _approval_step(view: RunView, step_key: str) -> ApprovalStep:
        step = view.flow.step(view.snapshot.steps[step_key].step_id)
        assert isinstance(step, ApprovalStep)
        return step

    async def remind(self, view: RunView, step_key: str) -> None:
        message = blocks.reminder(view, step_key, now=self.clock.now())
        for card in (await self._refs(view)).get("approvals", {}).get(step_key, []):
            await self._post(card["channel"], message, thread=card)

    # ------------------------------------------------------------ alerts

    async def alert(self, view: RunView, step_key: str) -> None:
        run = view.snapshot.run
        refs = await self._refs(view)
        alerts: dict[str, dict[str, Any]] = dict(refs.get("alerts", {}))
        if step_key in alerts and alerts[step_key].get("state") == run.state.value:
            return
        configured = view.flow.alerts.channel if view.flow.alerts else None
        channel = configured or self.alert_channel or run.source.get("channel")
        if channel is None:
            log.warning("run %s failed at %s and no alert channel is set", run.id, step_key)
            return
        permalink = await self._permalink(refs.get("status"))
        message = blocks.alert(view, step_key, permalink=permalink, now=self.clock.now())
        posted = await self._post(channel, message)
        if posted is not None:
            alerts[step_key] = {**posted, "permalink": permalink, "state": run.state.value}
            await self.store.set_chat_ref(run.id, "alerts", alerts)

    async def _refresh_alerts(self, view: RunView, refs: dict[str, Any]) -> None:
        """An alert's buttons go once the run has moved on (retried, skipped, cancelled)."""
        run = view.snapshot.run
        alerts: dict[str, dict[str, Any]] = dict(refs.get("alerts", {}))
        stale = {key: ref for key, ref in alerts.items() if ref.get("state") != run.state.value}
        for key, ref in stale.items():
            message = blocks.alert(view, key, permalink=ref.get("permalink"), now=self.clock.now())
            await self._update(ref, message)
            alerts[key] = {**ref, "state": run.state.value}
        if stale:
            await self.store.set_chat_ref(run.id, "alerts", alerts)

    async def _permalink(self, ref: dict[str, str] | None) -> str | None:
        if ref is None:
            return None
        try:
            response = await self.client.chat_getPermalink(
                channel=ref["channel"], message_ts=ref["ts"]
            )
        except SlackApiError as exc:
            log.warning("no permalink for %s: %s", ref, exc.response.get("error"))
            return None
        link = response.get("permalink")
        return str(link) if link else None

    # ------------------------------------------------------------ notify steps

    def literal(self, text: str) -> str:
        return blocks.escape(text)

    async def notify(
        self, view: RunView, *, channel: str | None, user: str | None, text: str
    ) -> None:
        status = (await self._refs(view)).get("status")
        target = channel or user or (status or {}).get("channel") or self.alert_channel
        if target is None:
            log.info("run %s: notify has no channel; message was: %s", view.snapshot.run.id, text)
            return
        thread = status if not (channel or user) else None
        message = blocks.notification(text)
        try:
            await self.client.chat_postMessage(
                channel=target, thread_ts=(thread or {}).get("ts"), **message.as_kwargs()
            )
        except SlackApiError as exc:
            raise OperationRefused(
                f"Slack refused the message: {exc.response.get('error')}"
            ) from None

    # ------------------------------------------------------------ Slack calls

    async def _post(
        self, channel: str, message: blocks.Message, *, thread: dict[str, str] | None = None
    ) -> dict[str, str] | None:
        """Post; returns where it landed, or None when Slack will never take it."""
        try:
            response = await self.client.chat_postMessage(
                channel=channel, thread_ts=(thread or {}).get("ts"), **message.as_kwargs()
            )
        except SlackApiError as exc:
            return self._give_up_or_raise(exc, f"post to {channel}")
        return {"channel": str(response["channel"]), "ts": str(response["ts"])}

    async def _update(self, ref: dict[str, str], message: blocks.Message) -> None:
        try:
            await self.client.chat_update(
                channel=ref["channel"], ts=ref["ts"], **message.as_kwargs()
            )
        except SlackApiError as exc:
            self._give_up_or_raise(exc, f"update {ref}")

    @staticmethod
    def _give_up_or_raise(exc: SlackApiError, what: str) -> None:
        error = exc.response.get("error") if exc.response is not None else None
        if error in PERMANENT:
            log.error("Slack refused to %s (%s); not retrying", what, error)
            return None
        raise exc

    def _people_changed(self, users: Iterable[str]) -> None:
        people = slack_users(users)
        if people and self.people_changed is not None:
            self.people_changed(people)
