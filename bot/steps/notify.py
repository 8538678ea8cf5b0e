"""``notify`` steps: render the text and hand it to the chat (Slack, or the terminal)."""

from __future__ import annotations

from typing import Any

from bot.definitions.models import NotifyStep
from bot.definitions.templating import render
from bot.engine.move import flow_of
from bot.engine.ports import Chat, RunView
from bot.errors import RelayError
from bot.redact import Redactor
from bot.steps.base import Failed, Outcome, StepContext, Succeeded


class NotifyExecutor:
    """Sends one message per attempt; a chat error is retryable like a 503."""

    def __init__(self, *, chat: Chat, store: Any) -> None:
        self.chat = chat
        self.store = store

    async def execute(self, context: StepContext) -> Outcome:
        step = context.step
        assert isinstance(step, NotifyStep)
        redactor = Redactor(context.secrets.values())
        try:
            text = redactor.mask(render(step.text, context.scope, literal=self.chat.literal))
            user = render(step.user, context.scope).strip() if step.user else None
        except RelayError as exc:
            return Failed(message=f"message of {step.id}: {exc.user_message}", retryable=False)
        snapshot = await self.store.snapshot(context.run_id)
        view = RunView(snapshot=snapshot, flow=flow_of(snapshot.run))
        try:
            await self.chat.notify(view, channel=step.channel, user=user, text=text)
        except Exception as exc:
            return Failed(message=f"could not send the message: {exc}", retryable=True)
        return Succeeded(output={"text": text, "channel": step.channel, "user": user})
