"""Every Slack message Relay posts, built from ``slack_sdk`` models.

Modals and the Home tab live in ``views.py``, built from the blocks here.
Pure functions of the run's rows (a ``RunView``) and the time: no client calls,
so each surface is unit-tested alone and re-rendered freely (the outbox
delivers at least once, and each render replaces the last). Buttons carry a
``Ref`` (ids the handler checks against the current state), never an
instruction, because Slack delivers every click and lets a signed request be
replayed. Text from users and flow files is escaped (``text.escape``) and cut
to Slack's limits with a visible note, so a long error or a 500-step run never
makes Slack refuse a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.definitions.inputs import mask_inputs
from bot.definitions.models import FlowDef, InputType
from bot.engine.ports import RunView
from bot.engine.records import Attempt, Run
from bot.engine.states import RunState, StepState
from bot.slack.text import (
    RUN_MARKS,
    approval_of,
    author_mrkdwn,
    clip,
    code,
    date,
    deadline_text,
    decided_text,
    decider_text,
    duration,
    left,
    level_of,
    pack,
    people,
    person,
    plain,
    progress_text,
    question_of,
    retry_limit,
    run_line,
    step_lines,
    timer_due,
    vote_lines,
    waiting_on,
    wrap,
)
from bot.slack.text import channel as channel_mention
from bot.slack.text import escape as escape
from bot.slack.text import truncate as truncate

APPROVE = "relay_approve"
REJECT = "relay_reject"
RETRY = "relay_retry"
SKIP = "relay_skip"
CANCEL = "relay_cancel"

MAX_TEXT = 40_000
MAX_MESSAGE_BLOCKS = 50
SECTION_TEXT = 3_000
HEADER_TEXT = 150
BUTTON_TEXT = 75
STEP_SECTIONS = 10
"""Sections of step lines in a status message: 30,000 characters at most, well
under the 50-block limit whatever the number of steps."""
LIST_ITEMS = 20
"""Approvals listed with buttons in one message (two blocks each)."""

_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STEP_KEY = re.compile(r"(?:[a-z][a-z0-9_]{0,127}(?:\[\d{1,6}\])?)?")


@dataclass(frozen=True)
class Ref:
    """What a button carries: ids the handler checks against state, never an instruction."""

    run_id: str
    step_key: str = ""

    def __post_init__(self) -> None:
        if not _RUN_ID.fullmatch(self.run_id) or not _STEP_KEY.fullmatch(self.step_key):
            raise ValueError(
                f"not a run id and step key: {self.run_id[:70]!r}, {self.step_key[:140]!r}"
            )

    def encode(self) -> str:
        return f"{self.run_id}|{self.step_key}"

    @classmethod
    def decode(cls, value: str) -> Ref:
        """The ids back from a button's value; ValueError when it is not one of ours."""
        run_id, separator, step_key = value.partition("|")
        if not separator:
            raise ValueError(f"not a Relay button value: {value[:70]!r}")
        return cls(run_id, step_key)


@dataclass(frozen=True)
class Message:
    """A message's content: plain fallback text for notifications and screen readers, and blocks."""

    text: str
    blocks: list[Block]

    def as_kwargs(self) -> dict[str, Any]:
        """The arguments of chat.postMessage, chat.update, postEphemeral or a response_url."""
        return {"text": self.text, "blocks": [block.to_dict() for block in self.blocks]}


# ---------------------------------------------------------------- building blocks


def _message(text: str, blocks: list[Block]) -> Message:
    return Message(text=truncate(text, MAX_TEXT) or "Relay", blocks=blocks)


def section(text: str) -> SectionBlock:
    """A mrkdwn section cut to Slack's limit, so no caller can make Slack refuse it."""
    # verbatim: Slack must not turn bare words into mentions or links on its own;
    # the markup we want (<@U…>, <!date…>) is written out explicitly.
    return SectionBlock(
        text=MarkdownTextObject(text=truncate(text, SECTION_TEXT) or " ", verbatim=True)
    )


def context(text: str) -> ContextBlock:
    """Small grey mrkdwn for facts around the content, cut and verbatim like a section."""
    return ContextBlock(
        elements=[MarkdownTextObject(text=truncate(text, SECTION_TEXT) or " ", verbatim=True)]
    )


def header(text: str) -> HeaderBlock:
    """A title; plain text only, so it is clipped rather than escaped."""
    return HeaderBlock(text=PlainTextObject(text=clip(text, HEADER_TEXT) or "Relay"))


def _button(
    label: str,
    action_id: str,
    ref: Ref,
    *,
    style: str | None = None,
    confirm: ConfirmObject | None = None,
) -> ButtonElement:
    return ButtonElement(
        text=PlainTextObject(text=clip(label, BUTTON_TEXT)),
        action_id=action_id,
        value=ref.encode(),
        style=style,
        confirm=confirm,
    )


def _decision_buttons(run_id: str, step_key: str) -> ActionsBlock:
    ref = Ref(run_id, step_key)
    return ActionsBlock(
        elements=[
            _button("Approve", APPROVE, ref, style="primary"),
            _button("Reject", REJECT, ref, style="danger"),
        ]
    )


def _operator_buttons(run: Run, step_key: str) -> ActionsBlock:
    ref = Ref(run.id, step_key)
    cancel = _button(
        "Cancel run",
        CANCEL,
        ref,
        style="danger",
        confirm=ConfirmObject(
            title="Cancel this run?",
            text="The run ends as cancelled; finished steps are undone by their compensate steps.",
            confirm="Cancel run",
            deny="Keep it",
        ),
    )
    if run.parent_run_id is not None:
        # A sub-flow run is retried from its parent, never by itself.
        return ActionsBlock(elements=[cancel])
    return ActionsBlock(
        elements=[
            _button("Retry", RETRY, ref, style="primary"),
            _button("Skip step", SKIP, ref),
            cancel,
        ]
    )


def _value(value: Any) -> str:
    return "_none_" if value is None else truncate(escape(plain(value)), 300)


def _input_lines(flow: FlowDef, values: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """``*Label*: value`` per input, secrets masked, everything escaped."""
    masked = mask_inputs(flow, values)
    lines = []
    for name in names:
        if name in masked:
            spec = flow.inputs.get(name)
            label = (spec.label if spec is not None else None) or name
            lines.append(f"*{escape(label)}*: {_value(masked[name])}")
    return lines


def _run_context(run: Run) -> str:
    parts = [
        f"{RUN_MARKS[run.state]} *{run.state.value}*",
        f"run {code(run.id)}",
        f"flow {code(run.flow)}",
        f"started by {person(run.started_by)} {date(run.created_at)}",
    ]
    if run.parent_run_id:
        parts.append(f"sub-flow of run {code(run.parent_run_id)}")
    return " · ".join(parts)


def _took(run: Run) -> str:
    return duration((run.finished_at or run.updated_at) - run.created_at)


def _outcome(run: Run) -> str | None:
    """How a run ended (or that it is undoing steps), in one line; None while it runs."""
    error = run.error or {}
    message = truncate(escape(str(error.get("message") or "")), 1000)
    because = f": {message}" if message else ""
    at = f" at {code(str(error['step']))}" if error.get("step") else ""
    if run.state is RunState.SUCCEEDED:
        return f"✓ *Succeeded* in {_took(run)}"
    if run.state is RunState.COMPENSATING:
        return f"↺ *Undoing finished steps*{at}{because}"
    if run.state is RunState.FAILED:
        word = "Rejected" if error.get("reason") == "rejected" else "Failed"
        return f"✗ *{word}* after {_took(run)}{at}{because}"
    if run.state is RunState.CANCELLED:
        if error.get("reason") != "cancelled":
            return f"⊘ *Closed* after it failed{at}{because}"
        by = f" by {person(str(error['by']))}" if error.get("by") else ""
        why = because if message and message != "cancelled" else ""
        return f"⊘ *Cancelled*{by} after {_took(run)}{why}"
    return None


# ---------------------------------------------------------------- run messages


def run_status(view: RunView, *, now: datetime) -> Message:
    """The one live status message of a run, edited in place as the run moves."""
    run, flow = view.snapshot.run, view.flow
    blocks: list[Block] = [header(flow.label), context(_run_context(run))]
    inputs = _input_lines(flow, run.inputs, list(run.inputs))
    if inputs:
        blocks.append(section("*Inputs*\n" + "\n".join(inputs)))
    blocks.append(DividerBlock())
    lines = step_lines(view, now)
    for chunk in pack(
        lines,
        limit=SECTION_TEXT,
        max_chunks=STEP_SECTIONS,
        more=lambda n: f"… and {n} more lines: `relay show {run.id}` lists every step",
    ):
        blocks.append(section(chunk))
    outcome = _outcome(run)
    if outcome:
        blocks.append(section(outcome))
    text = f"{escape(flow.label)}: run {escape(run.id)} {run.state.value}"
    if run.state.finished:
        text += f" after {_took(run)}"
    return _message(text, blocks)


def step_detail(view: RunView, attempt: Attempt) -> Message:
    """A thread reply with one attempt's outcome: what was tried, what came back."""
    row = view.snapshot.steps.get(attempt.step_key)
    limit = retry_limit(view, row)
    of = f" of {limit}" if limit else ""
    mark = {"succeeded": "✓", "failed": "✗", "abandoned": "⚠"}.get(attempt.outcome or "", "…")
    head = f"{mark} {code(attempt.step_key)} attempt {attempt.number}{of}"
    head += f" {attempt.outcome or 'in flight'}"
    if attempt.finished_at:
        head += f" · {duration(attempt.finished_at - attempt.started_at)}"
    if attempt.status is not None:
        head += f" · HTTP {attempt.status}"
    lines = [head]
    if attempt.error:
        lines.append(truncate(escape(attempt.error), 1000))
    error = (row.error or {}) if row is not None else {}
    excerpt = error.get("excerpt") if row is not None and row.attempt == attempt.number else None
    if excerpt:
        lines.append(
            "\n".join(f"> {line}" for line in wrap(truncate(escape(str(excerpt)), 1500), 300))
        )
    if row is not None and row.state is StepState.RETRYING:
        due = timer_due(view, row.key)
        lines.append(f"↻ Will retry {date(due)}" if due else "↻ Will retry")
    text = f"{attempt.step_key} attempt {attempt.number} {attempt.outcome or 'in flight'}"
    return _message(text, [section("\n".join(lines))])


def approval_card(view: RunView, step_key: str, *, now: datetime) -> Message:
    """The live approval card: the question, who may decide, progress, then the decision."""
    found = approval_of(view, step_key)
    if found is None:
        return reply("This approval is no longer waiting for a decision.")
    row, step, approval = found
    run, flow = view.snapshot.run, view.flow
    question = question_of(row, step)
    votes = view.snapshot.votes_for(step_key)
    pending = approval.state == "pending" and run.state.active
    if pending:
        title = "Approval needed"
    elif approval.state == "pending":
        title = "No longer needed"
    else:
        title = approval.state.capitalize()
    body = question
    details = row.detail.get("details")
    if details:
        body += "\n" + "\n".join(f"> {line}" for line in escape(str(details)).split("\n"))
    blocks: list[Block] = [
        header(f"{title}: {flow.label}"),
        section(body),
        context(
            f"run {code(run.id)} · step {code(step_key)} · "
            f"requested by {person(run.started_by)} {date(approval.requested_at)}"
        ),
    ]
    names = step.show_inputs or [n for n, spec in flow.inputs.items() if not spec.secret]
    inputs = _input_lines(flow, run.inputs, names)
    if inputs:
        blocks.append(section("\n".join(inputs)))
    level = level_of(step, approval)
    if pending:
        lines = [f"*Who may decide*: {decider_text(level)}", progress_text(level, approval, votes)]
        if approval.level > 0:
            lines.append(
                f"⤴ Escalated to level {approval.level + 1}: "
                "the approvers before did not answer in time."
            )
        deadline = deadline_text(level, approval, now)
        if deadline:
            lines.append(deadline)
        blocks.append(section("\n".join(lines)))
    elif approval.state == "pending":
        blocks.append(section(f"⊘ The run ended ({run.state.value}) before a decision."))
    else:
        blocks.append(section(decided_text(approval, votes)))
    voted = vote_lines(step, approval, votes)
    if voted:
        blocks.append(section("\n".join(voted)))
    if pending:
        blocks.append(_decision_buttons(run.id, step_key))
    return _message(f"{title}: {truncate(question, 1000)}", blocks)


def reminder(view: RunView, step_key: str, *, now: datetime, escalated: bool = False) -> Message:
    """A thread nudge to the approvers who have not answered, with the time left.

    ``escalated`` words it as the first ask of the next level's approvers.
    """
    found = approval_of(view, step_key)
    if found is None:
        return reply("This approval is no longer waiting for a decision.")
    row, step, approval = found
    level = level_of(step, approval)
    title = "⤴ *Escalated to you*" if escalated else "⏰ *Still waiting for a decision*"
    lines = [f"{title}: {question_of(row, step)}"]
    who = waiting_on(level, approval, view.snapshot.votes_for(step_key))
    if who:
        lines.append(f"Waiting on {who}")
    deadline = deadline_text(level, approval, now)
    if deadline:
        lines.append(deadline)
    text = "Escalated: a decision is needed" if escalated else "Still waiting for a decision"
    return _message(f"{text} on {step_key}", [section("\n".join(lines))])


def alert(view: RunView, step_key: str, *, permalink: str | None, now: datetime) -> Message:
    """A failure alert: what failed and how, with Retry / Skip / Cancel while they can act."""
    run, flow = view.snapshot.run, view.flow
    row = view.snapshot.steps.get(step_key)
    error = (row.error or {}) if row is not None else {}
    message = truncate(escape(str(error.get("message") or "failed")), 1000)
    facts = []
    if error.get("status"):
        facts.append(f"HTTP {error['status']}")
    attempts = error.get("attempts") or (row.attempt if row is not None else 0)
    if attempts:
        facts.append(f"{attempts} attempt{'s' if attempts != 1 else ''}")
    # An alert is sent as the step fails; without a finish time, that moment is now.
    when = date((row.finished_at if row is not None else None) or now)
    lines = [
        f"✗ *{escape(flow.label)}* run {code(run.id)}: "
        f"step {code(step_key)} failed for good {when}",
        " · ".join([*facts, message]),
    ]
    if error.get("excerpt"):
        excerpt = truncate(escape(str(error["excerpt"])), 1200)
        lines.append("\n".join(f"> {line}" for line in wrap(excerpt, 300)))
    mention = flow.alerts.mention if flow.alerts else None
    if mention is not None and not mention.is_empty:
        cc = people(mention.users, mention.groups) + [channel_mention(c) for c in mention.channels]
        lines.append("cc " + ", ".join(cc))
    if permalink and permalink.startswith("https://") and not re.search(r"[\s<>|]", permalink):
        lines.append(f"<{permalink}|Open the run's status message>")
    blocks: list[Block] = [header(f"Step failed: {flow.label}"), section("\n".join(lines))]
    stuck = row is not None and row.state.failed and (run.error or {}).get("reason") != "rejected"
    if stuck and run.state in (RunState.FAILED, RunState.COMPENSATING):
        if run.state is RunState.COMPENSATING:
            blocks.append(
                context("↺ Undo steps are running; Retry and Skip work once they have finished.")
            )
        if run.parent_run_id:
            blocks.append(
                context(
                    f"This is a sub-flow: retry or skip in parent run {code(run.parent_run_id)}."
                )
            )
        blocks.append(_operator_buttons(run, step_key))
    else:
        blocks.append(section(f"*Since then*: {_since(view, step_key)}"))
    text = f"{escape(flow.label)} run {escape(run.id)}: step {step_key} failed: {message}"
    return _message(text, blocks)


def _since(view: RunView, step_key: str) -> str:
    run = view.snapshot.run
    row = view.snapshot.steps.get(step_key)
    if row is not None and row.state is StepState.SKIPPED:
        by = row.detail.get("by")
        who = f" by {person(str(by))}" if by else ""
        return f"the step was skipped{who}; the run is {run.state.value}."
    if run.state is RunState.SUCCEEDED:
        return f"the run was retried and succeeded {date(run.finished_at or run.updated_at)}."
    if run.state is RunState.CANCELLED:
        return f"the run was closed (cancelled) {date(run.finished_at or run.updated_at)}."
    if run.state is RunState.FAILED:
        return "the run failed again; see its latest alert."
    return f"the run was reopened and is {run.state.value}."


def notification(text: str) -> Message:
    """A flow's ``notify`` text: formatting kept, pings of everyone and disguised links not.

    Safe on text whose template values the chat already quoted with ``escape``:
    entities are not quoted twice (see ``text.author_mrkdwn``).
    """
    safe = author_mrkdwn(text)
    chunks = pack(
        wrap(safe, SECTION_TEXT),
        limit=SECTION_TEXT,
        max_chunks=12,
        more=lambda n: f"… ({n} more lines)",
    )
    return _message(safe, [section(chunk) for chunk in chunks])


def reply(text: str) -> Message:
    """A one-line ephemeral answer; the text is ours, with user parts escaped by the caller."""
    return _message(text, [section(text)])


# ---------------------------------------------------------------- listings


_HELP = [
    ("help", "this list"),
    ("list", "the flows you can run, with their inputs"),
    (
        "run FLOW key=value …",
        'start a run; quote values with spaces (`note="two words"`). `run FLOW` alone opens a form',
    ),
    ("status [RUN]", "a run's status message, or your recent runs"),
    ("cancel RUN", "cancel a run; finished steps are undone by their compensate steps"),
    ("retry RUN", "reopen a failed run from its failed step"),
    ("approvals", "the approvals waiting for your decision"),
]


def help_message() -> Message:
    """``/relay help``: every subcommand with its usage."""
    lines = [f"`/relay {usage}`: {what}" for usage, what in _HELP]
    intro = "*Relay* runs the team's flows durably: every step is saved before the next starts."
    return _message(
        "Relay commands: " + ", ".join(u for u, _ in _HELP),
        [section(intro), section("\n".join(lines))],
    )


def _input_summary(flow: FlowDef) -> str:
    parts = []
    for name, spec in flow.inputs.items():
        facts = [spec.type.value]
        if spec.type is InputType.CHOICE:
            facts.append("/".join(str(c) for c in spec.choices))
        if not spec.is_required:
            facts.append("optional")
        if spec.default is not None and not spec.secret:
            facts.append(f"default {plain(spec.default)}")
        if spec.secret:
            facts.append("secret")
        parts.append(f"{code(name)} ({escape(', '.join(facts))})")
    return ", ".join(parts) or "none"


def flows_message(flows: Sequence[FlowDef]) -> Message:
    """``/relay list``: each flow with its title, description and inputs."""
    if not flows:
        return reply(
            "No flows are loaded. Add YAML files to the flows directory "
            "(`relay validate` checks them)."
        )
    shown = flows[: MAX_MESSAGE_BLOCKS - 2]
    blocks: list[Block] = [header(f"Flows ({len(flows)})")]
    for flow in shown:
        text = f"*{escape(flow.label)}* {code(flow.name)}"
        if flow.description:
            text += f"\n{truncate(escape(flow.description), 1000)}"
        text += f"\nInputs: {_input_summary(flow)}\nStart: `/relay run {flow.name}`"
        blocks.append(section(text))
    if len(flows) > len(shown):
        blocks.append(
            context(f"… and {len(flows) - len(shown)} more: `relay validate` lists them all.")
        )
    return _message("Flows: " + ", ".join(f.name for f in flows), blocks)


def run_lines(runs: Sequence[Run], now: datetime, *, limit: int) -> list[str]:
    """One line per run, packed into at most ``limit`` section-sized chunks."""
    return pack(
        [run_line(run, now) for run in runs],
        limit=SECTION_TEXT,
        max_chunks=limit,
        more=lambda n: f"… and {n} more",
    )


def runs_message(runs: Sequence[Run], *, now: datetime) -> Message:
    """``/relay status`` without a run: the user's recent runs, one line each."""
    if not runs:
        return reply("You have no recent runs. Start one with `/relay run FLOW`.")
    blocks: list[Block] = [section("*Your recent runs*")]
    blocks += [section(chunk) for chunk in run_lines(runs, now, limit=10)]
    return _message(f"{len(runs)} recent runs", blocks)


def _waiting_item(view: RunView, step_key: str, now: datetime) -> list[Block]:
    """One approval in a list: its question, run and time left, and buttons while it waits."""
    found = approval_of(view, step_key)
    run = view.snapshot.run
    if found is None:
        return [section(f"run {code(run.id)} · step {code(step_key)}: no longer waiting")]
    row, step, approval = found
    facts = [
        escape(view.flow.label),
        f"run {code(run.id)}",
        f"requested by {person(run.started_by)}",
    ]
    if approval.deadline is not None:
        remaining = left(approval.deadline, now)
        passed = remaining.total_seconds() <= 0
        facts.append("deadline passed" if passed else f"{duration(remaining)} left")
    text = f"{question_of(row, step)}\n" + " · ".join(facts)
    if approval.state != "pending" or not run.state.active:
        return [section(f"{text}\n_{approval.state}, run {run.state.value}_")]
    return [section(text), _decision_buttons(run.id, step_key)]


def waiting_blocks(
    items: Sequence[tuple[RunView, str]], now: datetime, *, most: int
) -> list[Block]:
    """At most ``most`` approvals, then a count of the rest: lists and Home share one look."""
    blocks: list[Block] = []
    for view, step_key in items[:most]:
        blocks += _waiting_item(view, step_key, now)
    if len(items) > most:
        blocks.append(context(f"… and {len(items) - most} more waiting."))
    return blocks


def approvals_message(items: Sequence[tuple[RunView, str]], *, now: datetime) -> Message:
    """``/relay approvals``: each approval waiting for this user, with Approve / Reject."""
    if not items:
        return reply("Nothing is waiting for your decision.")
    blocks: list[Block] = [header(f"Waiting for your decision ({len(items)})")]
    blocks += waiting_blocks(items, now, most=LIST_ITEMS)
    return _message(f"{len(items)} approvals waiting for your decision", blocks)
