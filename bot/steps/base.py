"""The contract between the engine and step executors: one attempt in, one outcome out.

The engine owns retries, checkpoints and timers; an executor performs exactly one
attempt of one step and reports what happened as a value. Expected failures (a
5xx, a timeout, a refused host) are ``Failed`` outcomes carrying whether they may
pass, never exceptions, so the engine's decision stays a pure function of data.
Cancellation is the one exception that must travel: the engine cancels in-flight
attempts on shutdown or when a run is cancelled, and an executor that swallowed
``asyncio.CancelledError`` would keep a worker busy on a dead run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from bot.definitions.models import FlowDef, Step
from bot.definitions.templating import Scope


@dataclass(frozen=True, kw_only=True)
class StepContext:
    """Everything an executor needs for one attempt; built by the engine, never mutated."""

    run_id: str
    key: str
    """The step's key within the run (its id, plus the item index inside a ``for_each``)."""
    attempt: int
    """1-based attempt number."""
    idempotency_key: str
    """Stable per (run, step key) across retries and crashes, so a receiver can dedupe."""
    step: Step
    flow: FlowDef
    scope: Scope
    """The template scope for this step, loop variable included."""
    timeout: timedelta
    """The step's own timeout, or the flow default."""
    services: Mapping[str, str]
    """Service name to base URL, resolved from the flow's ``services`` before the run."""
    secrets: Mapping[str, str]
    """Secret name to value, so executors can mask them in what they report."""


@dataclass(frozen=True, kw_only=True)
class Succeeded:
    """The attempt did what the step asked; ``output`` becomes ``steps.<id>.output``."""

    output: Any
    status: int | None = None


@dataclass(frozen=True, kw_only=True)
class Failed:
    """The attempt failed; ``message`` is plain words fit for Slack, secrets masked."""

    message: str
    retryable: bool
    """Whether trying again may succeed (a 503 may, a 404 will not)."""
    retry_after: float | None = None
    """Seconds the other side asked us to wait; replaces the computed back-off."""
    status: int | None = None
    excerpt: str | None = None
    """The start of the response body, masked, for the failure card."""


Outcome = Succeeded | Failed


class StepExecutor(Protocol):
    """Performs one attempt of one kind of step."""

    async def execute(self, context: StepContext) -> Outcome:
        """Run the attempt; return ``Failed`` for expected failures, never raise them.

        Must let ``asyncio.CancelledError`` propagate untouched.
        """
        ...
