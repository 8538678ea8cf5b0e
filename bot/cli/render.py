"""Plain-text rendering of runs for the terminal: tables, step lists, audit trails."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.engine.records import Attempt, AuditEntry, Run, Snapshot
from bot.redact import Redactor
from bot.terminal import describe


def ago(when: datetime, now: datetime) -> str:
    """``3m ago``: precise enough to recognise a run."""
    seconds = int((now - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def runs_table(runs: Sequence[Run], now: datetime, *, filtered: bool = False) -> str:
    """One line per run, newest first; ``filtered``: the runs are those some filter kept."""
    if not runs:
        return "no runs match" if filtered else "no runs yet"
    lines = [f"{'RUN':<13} {'FLOW':<24} {'STATE':<13} {'BY':<12} STARTED"]
    for run in runs:
        lines.append(
            f"{run.id:<13} {run.flow:<24} {run.state.value:<13} "
            f"{run.started_by:<12} {ago(run.created_at, now)}"
        )
    return "\n".join(lines)


def show_run(
    snapshot: Snapshot,
    attempts: Sequence[Attempt],
    audit: Sequence[AuditEntry],
    redactor: Redactor,
) -> str:
    """Everything about one run: header, steps with attempts and outputs, audit trail."""
    run = snapshot.run
    lines = [
        f"Run {run.id}  {run.flow}  {run.state.value}",
        f"  started by {run.started_by} at {run.created_at:%Y-%m-%d %H:%M:%S}Z"
        + (f" via {run.source.get('via')}" if run.source.get("via") else ""),
        f"  inputs: {redactor.mask_data(run.inputs)}",
    ]
    if run.error:
        lines.append(f"  error: {redactor.mask(str(run.error.get('message', '')))}")
    if run.outputs:
        lines.append(f"  outputs: {redactor.mask_data(run.outputs)}")
    lines.append("Steps:")
    by_step: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_step.setdefault(attempt.step_key, []).append(attempt)
    ordered = sorted(snapshot.steps.values(), key=lambda r: (r.started_at or run.created_at, r.key))
    for row in ordered:
        lines.append(describe(row))
        for attempt in by_step.get(row.key, []):
            took = ""
            if attempt.finished_at:
                took = (
                    f" {(attempt.finished_at - attempt.started_at).total_seconds() * 1000:,.0f} ms"
                )
            status = f" HTTP {attempt.status}" if attempt.status else ""
            error = f" — {redactor.mask(attempt.error)}" if attempt.error else ""
            outcome = attempt.outcome or "in flight"
            lines.append(f"      attempt {attempt.number}: {outcome}{status}{took}{error}")
        if row.output not in (None, {}):
            text = str(redactor.mask_data(row.output))
            lines.append(f"      output: {text[:300]}{'…' if len(text) > 300 else ''}")
    lines.append("Audit trail:")
    for entry in audit:
        detail = ", ".join(f"{k}={v}" for k, v in entry.detail.items() if v not in (None, ""))
        lines.append(
            f"  {entry.seq:>3} {entry.at:%H:%M:%S} {entry.actor:<14} {entry.action} {detail}"
        )
    return "\n".join(lines)
