"""Bolt listeners: acknowledge, parse, call ``Operations``, answer. No rules live here.

Every listener acknowledges and returns (Slack gives up after 3 s), leaving
its work to the ``Backlog``: the app runs listeners before it responds
(``process_before_response``), so an acknowledgement goes out as soon as the
listener returns instead of at Bolt's next 10 ms poll, and a burst of requests
is acknowledged before the work they start competes for the event loop. Only
modal submissions validate before acknowledging, because Slack shows field
errors only in the acknowledgement. Each delivery is claimed by Slack's own id
before it acts, so a retried event, a replayed command or a double click
changes state at most once, over HTTP and Socket Mode alike.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.definitions.inputs import coerce_inputs, parse_assignments
from bot.definitions.models import ApprovalStep
from bot.engine.move import flow_of
from bot.engine.operations import Actor
from bot.engine.ports import RunView
from bot.engine.states import Decision
from bot.errors import CommandInvalid, InputInvalid, RelayError
from bot.slack import blocks, commands, payloads, views
from bot.slack.backlog import Backlog
from bot.slack.home import HomeTab
from bot.wiring import Services

log = logging.getLogger("relay.slack")

OOPS = "Relay hit an internal error; it is logged. Try again, or ask whoever runs Relay."


class Handlers:
    """The listeners of the Bolt app, sharing the engine's services."""

    def __init__(self, *, services: Services, client: AsyncWebClient, home: HomeTab) -> None:
        self.services = services
        self.operations = services.operations
        self.store = services.store
        self.client = client
        self.home = home
        self._backlog = Backlog()

    def register(self, app: AsyncApp) -> None:
        """Attach every listener to ``app``."""
        app.command("/relay")(self.command)
        app.action(blocks.APPROVE)(self.approve)
        app.action(blocks.REJECT)(self.reject)
        app.action(blocks.RETRY)(self.operate)
        app.action(blocks.SKIP)(self.operate)
        app.action(blocks.CANCEL)(self.operate)
        app.view(views.RUN_MODAL)(self.run_submitted)
        app.view(views.DECISION_MODAL)(self.decision_submitted)
        app.event("app_home_opened")(self.home_opened)

    # ------------------------------------------------------------ /relay

    async def command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """``/relay …``: acknowledged at once; the answer follows as an ephemeral reply."""
        await ack()
        self._backlog.add(self._command(body))

    async def _command(self, body: dict[str, Any]) -> None:
        request = payloads.slash_command(body)
        actor = Actor(user=request.user, channel=request.channel, via="slack")

        async def answer(message: blocks.Message) -> None:
            await AsyncWebhookClient(request.response_url, session=self.client.session).send(
                response_type="ephemeral", **message.as_kwargs()
            )

        await self._once(request.delivery, answer, lambda: self._dispatch(request, actor, answer))

    async def _dispatch(
        self,
        request: payloads.SlashCommand,
        actor: Actor,
        answer: Callable[[blocks.Message], Awaitable[None]],
    ) -> None:
        command = commands.parse(request.text)
        now = self.services.engine.clock.now()
        if isinstance(command, commands.Help):
            await answer(blocks.help_message())
        elif isinstance(command, commands.ListFlows):
            await answer(blocks.flows_message(await self.operations.runnable(actor)))
        elif isinstance(command, commands.RunFlow):
            await self._run(command, request, actor, answer)
        elif isinstance(command, commands.Status) and command.run is None:
            runs = await self.store.list_runs(started_by=actor.user, limit=10)
            await answer(blocks.runs_message(runs, now=now))
        elif isinstance(command, commands.Status):
            await answer(blocks.run_status(await self._view(command.run or ""), now=now))
        elif isinstance(command, commands.CancelRun):
            await answer(_done(await self.operations.cancel(command.run, actor)))
        elif isinstance(command, commands.RetryRun):
            await answer(_done(await self.operations.retry(command.run, actor)))
        else:
            waiting = await self.operations.waiting_for(actor)
            items = [(await self._view(run.id), key) for run, key in waiting]
            await answer(blocks.approvals_message(items, now=now))

    async def _run(
        self,
        command: commands.RunFlow,
        request: payloads.SlashCommand,
        actor: Actor,
        answer: Callable[[blocks.Message], Awaitable[None]],
    ) -> None:
        flow = await self.operations.check_may_run(command.flow, actor)
        given = parse_assignments(command.args)
        if not given and flow.inputs:
            await self._open_run_form(request, flow.name, given)
            return
        try:
            run = await self.operations.start(flow.name, given, actor)
        except InputInvalid as exc:
            missing = {name for name, spec in flow.inputs.items() if name not in given}
            if set(exc.problems) <= missing:
                await self._open_run_form(request, flow.name, given)
                return
            usage = " ".join(f"{name}=…" for name in flow.inputs)
            raise CommandInvalid(
                exc.user_message, usage=f"/relay run {flow.name} {usage}"
            ) from None
        await answer(blocks.reply(f"Started `{flow.name}` as run `{run.id}`."))

    async def _open_run_form(
        self, request: payloads.SlashCommand, flow_name: str, given: dict[str, str]
    ) -> None:
        flow = self.services.engine.definition(flow_name).flow
        view = views.run_modal(flow, given=given, channel=request.channel)
        await self.client.views_open(trigger_id=request.trigger_id, view=view)

    # ------------------------------------------------------------ buttons

    async def approve(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Approve at once, or open the form when the step wants a reason or fields."""
        await self._on_click(ack, body, self._approve)

    async def reject(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Rejecting always asks why, in a form."""
        await self._on_click(ack, body, self._reject)

    async def operate(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Retry, Skip or Cancel from a failure alert."""
        await self._on_click(ack, body, self._operate)

    async def _on_click(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        act: Callable[[payloads.Click, blocks.Ref, Actor], Awaitable[None]],
    ) -> None:
        """Ack, claim the click once, act on the run its button names; tell the clicker."""
        await ack()
        self._backlog.add(self._clicked(body, act))

    async def _clicked(
        self,
        body: dict[str, Any],
        act: Callable[[payloads.Click, blocks.Ref, Actor], Awaitable[None]],
    ) -> None:
        click = payloads.click(body)

        async def work() -> None:
            ref, actor = _target(click)
            await act(click, ref, actor)

        await self._once(click.delivery, lambda message: self._tell(click, message), work)

    async def _approve(self, click: payloads.Click, ref: blocks.Ref, actor: Actor) -> None:
        step = await self.operations.check_may_vote(ref.run_id, ref.step_key, actor)
        if step.require_reason == "always" or step.fields:
            await self._open_decision_form(click, ref, approve=True)
            return
        text = await self.operations.decide(ref.run_id, ref.step_key, actor, Decision.APPROVED)
        await self._tell(click, _done(text))

    async def _reject(self, click: payloads.Click, ref: blocks.Ref, actor: Actor) -> None:
        await self.operations.check_may_vote(ref.run_id, ref.step_key, actor)
        await self._open_decision_form(click, ref, approve=False)

    async def _operate(self, click: payloads.Click, ref: blocks.Ref, actor: Actor) -> None:
        step = ref.step_key or None
        if click.action_id == blocks.RETRY:
            text = await self.operations.retry(ref.run_id, actor, step=step)
        elif click.action_id == blocks.SKIP:
            text = await self.operations.skip(ref.run_id, actor, step=step)
        else:
            text = await self.operations.cancel(ref.run_id, actor)
        await self._tell(click, _done(text))

    async def _open_decision_form(
        self, click: payloads.Click, ref: blocks.Ref, *, approve: bool
    ) -> None:
        view = views.decision_modal(await self._view(ref.run_id), ref.step_key, approve=approve)
        await self.client.views_open(trigger_id=click.trigger_id, view=view)

    # ------------------------------------------------------------ modals

    async def run_submitted(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The inputs form: errors go back onto its fields; otherwise the run starts."""
        form = payloads.submission(body)
        flow_name = str(form.metadata.get("flow", ""))
        channel = form.metadata.get("channel")
        raw = {name: value for name, value in form.values.items() if value not in (None, "")}
        try:
            coerce_inputs(self.services.engine.definition(flow_name).flow, raw)
        except InputInvalid as exc:
            await ack(response_action="errors", errors=_on_fields(exc.problems, form.values))
            return
        except RelayError as exc:
            await ack(
                response_action="errors", errors=_on_fields({"": exc.user_message}, form.values)
            )
            return
        await ack()
        actor = Actor(user=form.user, channel=channel, via="slack")

        async def tell(message: blocks.Message) -> None:
            await self._tell_user(form.user, channel, message)

        async def work() -> None:
            run = await self.operations.start(flow_name, raw, actor)
            await tell(blocks.reply(f"Started `{flow_name}` as run `{run.id}`."))

        self._backlog.add(self._once(form.delivery, tell, work))

    async def decision_submitted(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The reason (and fields) form of an approval."""
        form = payloads.submission(body)
        run_id = str(form.metadata.get("run", ""))
        step_key = str(form.metadata.get("step", ""))
        decision = Decision.APPROVED if form.metadata.get("approve") else Decision.REJECTED
        reason = form.values.get("reason") or None
        fields = {
            name.removeprefix("field:"): value
            for name, value in form.values.items()
            if name.startswith("field:") and value not in (None, "")
        }
        try:
            view = await self._view(run_id)
            step = view.flow.step(view.snapshot.steps[step_key].step_id)
        except (RelayError, KeyError):
            await ack()
            return
        assert isinstance(step, ApprovalStep)
        problems = self.operations.form_problems(step, decision, reason, fields)
        if problems:
            errors = {
                key if key == "reason" else f"field:{key}": why for key, why in problems.items()
            }
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        actor = Actor(user=form.user, via="slack")

        async def tell(message: blocks.Message) -> None:
            await self._tell_user(form.user, None, message)

        async def work() -> None:
            await self.operations.decide(
                run_id, step_key, actor, decision, reason=reason, fields=fields
            )

        self._backlog.add(self._once(form.delivery, tell, work))

    # ------------------------------------------------------------ events

    async def home_opened(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Publish the Home tab of whoever opened it."""
        await ack()
        self._backlog.add(self._home_opened(body))

    async def _home_opened(self, body: dict[str, Any]) -> None:
        opened = payloads.home_opened(body)
        if opened.tab == "home" and await self._first(opened.delivery):
            await self.home.refresh([opened.user])

    # ------------------------------------------------------------ plumbing

    async def close(self) -> None:
        """Let the work of requests already acknowledged finish: Slack will not resend them."""
        await self._backlog.close()

    async def _once(
        self,
        delivery: tuple[str, str],
        answer: Callable[[blocks.Message], Awaitable[None]],
        work: Callable[[], Awaitable[None]],
    ) -> None:
        if await self._first(delivery):
            await self._guard(answer, work())

    async def _first(self, delivery: tuple[str, str]) -> bool:
        """Claim Slack's id for this delivery; False means it was seen before."""
        source, key = delivery
        now = self.services.engine.clock.now()
        return await self.store.transaction(lambda tx: tx.claim_delivery(source, key, now))

    async def _view(self, run_ref: str) -> RunView:
        run = await self.store.find_run(run_ref)
        snapshot = await self.store.snapshot(run.id)
        attempts = tuple(await self.store.attempts(run.id))
        return RunView(snapshot=snapshot, flow=flow_of(run), attempts=attempts)

    async def _tell(self, click: payloads.Click, message: blocks.Message) -> None:
        """Answer the clicker alone: in place of the click when Slack allows, else by DM."""
        if click.response_url:
            await AsyncWebhookClient(click.response_url, session=self.client.session).send(
                response_type="ephemeral", replace_original=False, **message.as_kwargs()
            )
        else:
            await self._tell_user(click.user, None, message)
            await self.home.refresh([click.user])

    async def _tell_user(self, user: str, channel: str | None, message: blocks.Message) -> None:
        if channel:
            await self.client.chat_postEphemeral(channel=channel, user=user, **message.as_kwargs())
        else:
            await self.client.chat_postMessage(channel=user, **message.as_kwargs())

    async def _guard(
        self, answer: Callable[[blocks.Message], Awaitable[None]], work: Awaitable[None]
    ) -> None:
        """Run the work; a refusal becomes a plain answer, a crash a logged apology."""
        try:
            await work
        except RelayError as exc:
            await answer(blocks.reply(f":warning: {blocks.escape(exc.user_message)}"))
        except Exception:
            log.exception("a Slack request failed")
            await answer(blocks.reply(f":warning: {OOPS}"))


def _target(click: payloads.Click) -> tuple[blocks.Ref, Actor]:
    try:
        ref = blocks.Ref.decode(click.value)
    except ValueError:
        raise CommandInvalid("that button was not made by Relay", usage="/relay help") from None
    return ref, Actor(user=click.user, channel=click.channel, via="slack")


def _done(text: str) -> blocks.Message:
    return blocks.reply(f":white_check_mark: {blocks.escape(text[:1].upper() + text[1:])}")


def _on_fields(problems: dict[str, str], values: dict[str, Any]) -> dict[str, str]:
    """Problems keyed by input name → Slack's errors keyed by block id.

    The form's first block takes any problem that names no field of the form.
    """
    first = next(iter(values), "")
    errors: dict[str, str] = {}
    for name, why in problems.items():
        key = name if name in values else first
        errors[key] = f"{errors[key]}; {why}" if key in errors else why
    return errors
