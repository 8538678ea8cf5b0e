"""The mrkdwn text of Relay's Slack messages: escaping, limits, times, people, runs.

``blocks.py`` and ``views.py`` arrange Block Kit; this module writes the words
inside it, so every line goes through the same few rules: user text is escaped before
it meets mrkdwn (or ``<!channel>`` pings a whole channel and
``<http://evil|click>`` disguises a link), text is cut with a visible note
instead of letting Slack refuse the whole message, and times are Slack dates
each reader sees in their own time zone.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.definitions.models import (
    ApprovalLevel,
    ApprovalStep,
    ParallelStep,
    Quorum,
    RetryingStep,
    Step,
)
from bot.engine.approvals import counted, current, progress
from bot.engine.ports import RunView
from bot.engine.records import Approval, Run, StepRun, Vote
from bot.engine.states import Decision, RunState, StepState, TimerPurpose

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_USER = re.compile(r"[UW][A-Z0-9]{2,}")
_KEPT_TOKENS = re.compile(r"<@[UW][A-Z0-9]{2,}>|<#C[A-Z0-9]{2,}>")
"""Mentions of one person or one channel, without a label: safe to keep in an
author's text, because they can neither ping everybody nor disguise a link."""
_BARE_AMPERSAND = re.compile(r"&(?!(?:amp|lt|gt);)")
_ENTITY_LENGTH = len("&amp;")
_TOKEN_LENGTH = 120
"""Longest ``<…>`` token Relay writes itself (a ``<!date^…>``); raw ``<`` further
back is not one of ours and is not worth keeping whole."""


def escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as entities, so user text can never become markup."""
    return text.translate(_ESCAPES)


def author_mrkdwn(text: str) -> str:
    """A notify text with its formatting kept and its markup neutralised.

    ``*bold*`` and ``_italic_`` survive because only ``& < >`` are touched. The
    only markup kept is a plain user or channel mention (``<@U…>``, ``<#C…>``),
    which texts such as ``"done, <@{{ run.started_by }}>"`` rely on. Existing
    entities are left alone: the chat already quotes each template value with
    ``escape`` as it renders, and quoting twice would show ``&lt;`` to readers.
    """
    parts: list[str] = []
    last = 0
    for match in _KEPT_TOKENS.finditer(text):
        parts.append(_escape_once(text[last : match.start()]))
        parts.append(match.group())
        last = match.end()
    parts.append(_escape_once(text[last:]))
    return "".join(parts)


def _escape_once(text: str) -> str:
    return _BARE_AMPERSAND.sub("&amp;", text).replace("<", "&lt;").replace(">", "&gt;")


def _safe_cut(text: str, at: int) -> int:
    """Move a cut back so it never splits an entity (``&amp;``) or a ``<…>`` token."""
    amp = text.rfind("&", max(0, at - _ENTITY_LENGTH + 1), at)
    if amp != -1 and ";" not in text[amp:at]:
        at = amp
    opening = text.rfind("<", max(0, at - _TOKEN_LENGTH), at)
    if opening != -1 and text.find(">", opening, at) == -1:
        at = opening
    return at


def _note(count: int) -> str:
    return f"… ({count} more characters)"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a note saying how much was left out.

    The result never exceeds ``limit``. When even the note does not fit, the
    text is cut hard and ends with an ellipsis.
    """
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    keep = limit - len(_note(len(text)))
    if keep <= 0:
        return clip(text, limit)
    cut = _safe_cut(text, keep)
    return text[:cut] + _note(len(text) - cut)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` with a bare ellipsis: for titles, labels and options."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return "…"[:limit]
    return text[: _safe_cut(text, limit - 1)] + "…"


def pack(
    lines: Sequence[str], *, limit: int, max_chunks: int, more: Callable[[int], str]
) -> list[str]:
    """Lines joined into at most ``max_chunks`` texts of at most ``limit`` characters.

    Lines that do not fit are left out and the last text ends with
    ``more(count)``, so a run of 500 steps still fits one message and says so.
    """
    chunks: list[str] = []
    current: list[str] = []
    size = -1
    for index, raw in enumerate(lines):
        line = truncate(raw, limit)
        if current and size + 1 + len(line) > limit:
            if len(chunks) + 1 >= max_chunks:
                return [*chunks, _close(current, len(lines) - index, limit, more)]
            chunks.append("\n".join(current))
            current, size = [], -1
        current.append(line)
        size += 1 + len(line)
    if current:
        chunks.append("\n".join(current))
    return chunks


def _close(current: list[str], left_out: int, limit: int, more: Callable[[int], str]) -> str:
    """The last chunk: as many lines as fit together with the note on what is missing."""
    kept = list(current)
    while kept and len("\n".join([*kept, more(left_out)])) > limit:
        kept.pop()
        left_out += 1
    return truncate("\n".join([*kept, more(left_out)]), limit)


def wrap(text: str, limit: int) -> list[str]:
    """The lines of ``text``, each longer line cut into pieces of at most ``limit``."""
    pieces: list[str] = []
    for line in text.split("\n"):
        while len(line) > limit:
            cut = _safe_cut(line, limit)
            space = line.rfind(" ", 0, cut)
            cut = space if space > limit // 2 else cut
            if cut <= 0:
                cut = limit
            pieces.append(line[:cut])
            line = line[cut:].lstrip(" ")
        pieces.append(line)
    return pieces


def plain(value: Any) -> str:
    """A value as people type it in ``name=value``: ``true``, ``eu, us``, ``2.5``.

    Not escaped: a form's initial value is plain text, so callers putting it in
    mrkdwn escape it themselves.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(plain(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


# ---------------------------------------------------------------- times


def duration(span: timedelta) -> str:
    """A span as people say it: ``350 ms``, ``4.5 s``, ``2 min 5 s``, ``3 h 10 min``."""
    seconds = max(span.total_seconds(), 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10:
        return f"{seconds:.1f}".removesuffix(".0") + " s"
    whole = round(seconds)
    for big, big_unit, small, small_unit in (
        (86_400, "d", 3_600, "h"),
        (3_600, "h", 60, "min"),
        (60, "min", 1, "s"),
    ):
        if whole >= big:
            count, rest = divmod(whole, big)
            part = rest // small
            return f"{count} {big_unit} {part} {small_unit}" if part else f"{count} {big_unit}"
    return f"{whole} s"


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def date(at: datetime) -> str:
    """An absolute time each reader sees in their own time zone; UTC as the fallback."""
    at = _utc(at)
    fallback = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def ago(at: datetime, now: datetime) -> str:
    """How long before ``now`` something happened: ``5 min ago``."""
    return f"{duration(_utc(now) - _utc(at))} ago"


def left(until: datetime, now: datetime) -> timedelta:
    """Time remaining until a deadline (negative once it has passed)."""
    return _utc(until) - _utc(now)


# ---------------------------------------------------------------- people


def person(actor: str) -> str:
    """A Slack user id as a mention; anyone else (a schedule, a parent run) as text."""
    return f"<@{actor}>" if _USER.fullmatch(actor) else escape(actor)


def group(group_id: str) -> str:
    """A user group id as Slack shows it: its @handle."""
    return f"<!subteam^{group_id}>"


def channel(channel_id: str) -> str:
    """A channel id as a link to the channel."""
    return f"<#{channel_id}>"


def people(users: Iterable[str] = (), groups: Iterable[str] = ()) -> list[str]:
    """Users and user groups as mentions, users first."""
    return [*(person(u) for u in users), *(group(g) for g in groups)]


# ---------------------------------------------------------------- runs and steps

RUN_MARKS = {
    RunState.RUNNING: "…",
    RunState.WAITING: "⏸",
    RunState.COMPENSATING: "↺",
    RunState.SUCCEEDED: "✓",
    RunState.FAILED: "✗",
    RunState.CANCELLED: "⊘",
}
STEP_MARKS = {
    StepState.PENDING: "◦",
    StepState.RUNNING: "…",
    StepState.RETRYING: "↻",
    StepState.WAITING: "⏸",
    StepState.SUCCEEDED: "✓",
    StepState.FAILED: "✗",
    StepState.REJECTED: "✗",
    StepState.SKIPPED: "-",
    StepState.CANCELLED: "⊘",
    StepState.COMPENSATED: "↺",
}
"""The terminal's marks (``bot.terminal``), so a run reads the same in both places."""
_NOTABLE_ITEMS = 5


def code(text: str) -> str:
    """An id as inline code, escaped; a backtick inside would end the code span."""
    return "`" + escape(text).replace("`", "'") + "`"


def timer_due(view: RunView, step_key: str) -> datetime | None:
    """When the step's retry or wait timer fires, if it has one."""
    for timer in view.snapshot.timers:
        if timer.step_key == step_key and timer.purpose in (TimerPurpose.RETRY, TimerPurpose.WAIT):
            return timer.due_at
    return None


def retry_limit(view: RunView, row: StepRun | None) -> int | None:
    """How many attempts the step's retry policy allows; None for steps that never retry."""
    if row is None:
        return None
    try:
        step = view.flow.step(row.step_id)
    except KeyError:
        return None
    if not isinstance(step, RetryingStep):
        return None
    return (step.retry or view.flow.defaults.retry).attempts


def _state_words(row: StepRun) -> str:
    if row.state is StepState.SKIPPED and row.detail.get("why") == "when":
        return "skipped (condition false)"
    if row.state is StepState.SKIPPED and row.detail.get("by"):
        return f"skipped by {person(str(row.detail['by']))}"
    if row.state is StepState.WAITING and row.kind == "approval":
        return "waiting for approval"
    return row.state.value


def _facts(view: RunView, row: StepRun, now: datetime) -> list[str]:
    """What matters about a step beyond its state, as the terminal's ``describe`` shows it."""
    facts = [_state_words(row)]
    if row.attempt > 1:
        facts.append(f"attempt {row.attempt}")
    if row.started_at and row.finished_at and row.state.finished:
        facts.append(duration(row.finished_at - row.started_at))
    elif row.state is StepState.RUNNING and row.started_at:
        facts.append(f"for {duration(_utc(now) - _utc(row.started_at))}")
    due = timer_due(view, row.key)
    if due is not None and row.state is StepState.RETRYING:
        facts.append(f"next try in {duration(left(due, now))}")
    elif due is not None and row.state is StepState.WAITING:
        facts.append(f"until {date(due)}")
    child = row.detail.get("child_run_id")
    if child and row.kind == "flow":
        facts.append(f"sub-run {code(str(child))}")
    message = (row.error or {}).get("message")
    if message and row.state in (StepState.RETRYING, StepState.FAILED, StepState.REJECTED):
        facts.append(truncate(escape(str(message)), 300))
    return facts


def _line(view: RunView, key: str, title: str | None, row: StepRun | None, now: datetime) -> str:
    name = code(key) + (f" {escape(title)}" if title else "")
    if row is None:
        return f"◦ {name} · {'not run' if view.snapshot.run.state.finished else 'not started'}"
    return f"{STEP_MARKS.get(row.state, '?')} {name} · " + " · ".join(_facts(view, row, now))


def _items(view: RunView, step_id: str, count: int, now: datetime, prefix: str) -> list[str]:
    """A ``for_each``: a count per state, then the items that need attention."""
    rows = [view.snapshot.steps.get(f"{step_id}[{index}]") for index in range(count)]
    states = Counter(row.state.value if row else "not started" for row in rows)
    lines = [f"{prefix}{count} items: " + ", ".join(f"{n} {state}" for state, n in states.items())]
    notable = [row for row in rows if row and (row.state.active or row.state.failed)]
    for row in notable[:_NOTABLE_ITEMS]:
        lines.append(prefix + _line(view, row.key, None, row, now))
    if len(notable) > _NOTABLE_ITEMS:
        lines.append(f"{prefix}… and {len(notable) - _NOTABLE_ITEMS} more items")
    return lines


def _tree(
    view: RunView, steps: Sequence[Step], now: datetime, prefix: str, seen: set[str]
) -> list[str]:
    lines: list[str] = []
    for step in steps:
        seen.add(step.id)
        row = view.snapshot.steps.get(step.id)
        lines.append(prefix + _line(view, step.id, step.title, row, now))
        if isinstance(step, ParallelStep):
            for name, branch in step.branches.items():
                lines += _tree(view, branch, now, f"{prefix}↳ {name}: ", seen)
        elif isinstance(step, RetryingStep) and step.for_each and row is not None:
            items = row.detail.get("items")
            if isinstance(items, list):
                lines += _items(view, step.id, len(items), now, prefix + "↳ ")
    return lines


def step_lines(view: RunView, now: datetime) -> list[str]:
    """One line per step in the flow's order (branches and items nested), then undo steps."""
    seen: set[str] = set()
    lines = _tree(view, view.flow.steps, now, "", seen)
    run = view.snapshot.run
    extra = sorted(
        (row for row in view.snapshot.steps.values() if row.step_id not in seen),
        key=lambda row: (_utc(row.started_at or run.created_at), row.key),
    )
    if extra:
        lines.append("*Undo and clean-up*")
    for row in extra:
        try:
            title = view.flow.step(row.step_id).title
        except KeyError:
            title = None
        lines.append(_line(view, row.key, title if row.key == row.step_id else None, row, now))
    return lines


def run_line(run: Run, now: datetime) -> str:
    """A run in a list: mark, id, flow, state, when it started and how long it took."""
    line = f"{RUN_MARKS[run.state]} {code(run.id)} {escape(run.flow)} · {run.state.value}"
    line += f" · started {ago(run.created_at, now)}"
    if run.state.finished:
        line += f" · took {duration((run.finished_at or run.updated_at) - run.created_at)}"
    error = (run.error or {}).get("message")
    if error and run.state is RunState.FAILED:
        line += f" · {truncate(escape(str(error)), 200)}"
    return line


# ---------------------------------------------------------------- approvals


def approval_of(view: RunView, step_key: str) -> tuple[StepRun, ApprovalStep, Approval] | None:
    """The row, definition and request of an approval step; None if it is not one."""
    row = view.snapshot.steps.get(step_key)
    approval = view.snapshot.approvals.get(step_key)
    if row is None or approval is None:
        return None
    try:
        step = view.flow.step(row.step_id)
    except KeyError:
        return None
    return (row, step, approval) if isinstance(step, ApprovalStep) else None


def question_of(row: StepRun, step: ApprovalStep) -> str:
    """The question as rendered for this run (it may quote inputs), escaped."""
    return escape(str(row.detail.get("question") or step.label))


def level_of(step: ApprovalStep, approval: Approval) -> ApprovalLevel:
    """The escalation level the approval is at."""
    levels = step.levels()
    return levels[min(approval.level, len(levels) - 1)]


def _quorum_who(quorum: Quorum) -> str:
    who = ", ".join(people(quorum.users, [quorum.group] if quorum.group else []))
    return f"{escape(quorum.label)} ({who})" if quorum.label else who


def decider_text(level: ApprovalLevel) -> str:
    """Who may decide at this level, and how many of them must approve."""
    if level.quorum:
        return "; ".join(f"{q.required} from {_quorum_who(q)}" for q in level.quorum)
    approvers = level.approvers
    who = ", ".join(people(approvers.users, approvers.groups)) if approvers else "nobody"
    return f"{who} ({level.required} needed)"


def _missing(level: ApprovalLevel, text: str) -> str:
    """A ``progress`` requirement ("1 from S0LEGAL") with its group shown as a mention."""
    count, separator, who = text.partition(" from ")
    for quorum in level.quorum if separator else ():
        if who == (quorum.label or quorum.group or ", ".join(quorum.users)):
            return f"{escape(count)} from {_quorum_who(quorum)}"
    return escape(text)


def progress_text(level: ApprovalLevel, approval: Approval, votes: Iterable[Vote]) -> str:
    """``1 of 2 approvals: <@U1> approved, waiting on 1 from @legal``."""
    done = progress(level, counted(approval, votes))
    text = f"*{len(done.approved_by)} of {done.required} approvals*"
    if done.approved_by:
        text += ": " + ", ".join(f"{person(voter)} approved" for voter in done.approved_by)
    if done.missing:
        text += ", waiting on " + ", ".join(_missing(level, m) for m in done.missing)
    return text


def waiting_on(level: ApprovalLevel, approval: Approval, votes: Iterable[Vote]) -> str:
    """The people a reminder should reach: approvers who have not answered yet."""
    cast = counted(approval, votes)
    if level.quorum:
        return ", ".join(_missing(level, m) for m in progress(level, cast).missing)
    voted = {vote.voter for vote in cast}
    approvers = level.approvers
    if approvers is None:
        return ""
    return ", ".join(people([u for u in approvers.users if u not in voted], approvers.groups))


_ON_TIMEOUT = {
    "reject": "then it is rejected",
    "approve": "then it is approved",
    "escalate": "then it goes to the next approvers",
}


def deadline_text(level: ApprovalLevel, approval: Approval, now: datetime) -> str | None:
    """Time left until the approval's deadline, and what happens then."""
    if approval.deadline is None:
        return None
    remaining = left(approval.deadline, now)
    then = _ON_TIMEOUT[level.on_timeout]
    if remaining.total_seconds() <= 0:
        return f"⏳ The deadline {date(approval.deadline)} has passed; {then}."
    return f"⏳ {duration(remaining)} left (until {date(approval.deadline)}); {then}."


def decided_text(approval: Approval, votes: Sequence[Vote]) -> str:
    """Who decided, when and how: by votes, by the timeout, or cancelled with the run."""
    when = f" {date(approval.decided_at)}" if approval.decided_at else ""
    if approval.state == "cancelled" or approval.how == "cancelled":
        return f"⊘ *Cancelled*{when}: the run was stopped before a decision."
    approved = approval.state == Decision.APPROVED.value
    word, mark = ("Approved", "✓") if approved else ("Rejected", "✗")
    if approval.how == "timeout":
        return f"⏱ *{word} automatically*{when}: nobody decided before the deadline."
    by = ", ".join(person(voter) for voter in approval.decided_by) or "the approvers"
    text = f"{mark} *{word}* by {by}{when}"
    if approval.reason and not current(approval, votes):
        text += f": {truncate(escape(approval.reason), 1000)}"
    return text


def vote_lines(step: ApprovalStep, approval: Approval, votes: Iterable[Vote]) -> list[str]:
    """Each answer to this request: who, when, the reason and any fields filled in."""
    labels = {spec.id: spec.label for spec in step.fields}
    lines = []
    for vote in current(approval, votes):
        mark = "✓" if vote.decision is Decision.APPROVED else "✗"
        line = f"{mark} {person(vote.voter)} {vote.decision.value} {date(vote.at)}"
        if vote.reason:
            line += f": {truncate(escape(vote.reason), 500)}"
        filled = [
            f"{escape(labels.get(key, key))}: {truncate(escape(str(value)), 200)}"
            for key, value in vote.fields.items()
        ]
        if filled:
            line += " (" + "; ".join(filled) + ")"
        lines.append(line)
    return lines
