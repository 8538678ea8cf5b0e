"""Every error Relay raises on purpose, in one tree.

::

    RelayError
    ├── ConfigError          settings missing or malformed at start-up
    ├── FlowNotFound         no flow by that name is loaded
    ├── FlowInvalid          a flow file has problems (carries them)
    ├── InputInvalid         run inputs do not fit the flow (carries them)
    ├── CommandInvalid       a chat command was not understood (carries the usage)
    ├── TemplateError        a template failed to render (undefined name, limits)
    ├── RunNotFound          no run with that id
    ├── StepNotFound         the run has no such step
    ├── PermissionDenied     the person may not do this
    ├── OperationRefused     the run or step is not in a state that allows it
    ├── VoteRefused          an approval vote was not counted (says why)
    ├── StepFailed           a step attempt failed (retryable, retry_after)
    └── LeaseLost            another worker took over a step this one was running

Each class docstring is its default message. People see ``user_message``,
rendered from structured fields, never a raw ``str()`` of a foreign exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RelayError(Exception):
    """Relay could not do what was asked."""

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        self.fields = fields
        super().__init__(self.message)

    @property
    def user_message(self) -> str:
        """One line a person can act on."""
        return self.message


class ConfigError(RelayError):
    """The configuration is incomplete or malformed."""


class FlowNotFound(RelayError):
    """No flow by that name is loaded."""


class FlowInvalid(RelayError):
    """The flow file has problems."""

    def __init__(self, message: str | None = None, *, problems: Sequence[Any] = ()) -> None:
        super().__init__(message, problems=list(problems))
        self.problems = list(problems)


class InputInvalid(RelayError):
    """The run's inputs do not fit the flow."""

    def __init__(self, message: str | None = None, *, problems: dict[str, str]) -> None:
        detail = "; ".join(f"{name}: {why}" for name, why in problems.items())
        super().__init__(message or f"invalid inputs: {detail}", problems=problems)
        self.problems = problems


class CommandInvalid(RelayError):
    """That command was not understood."""

    def __init__(self, message: str | None = None, *, usage: str) -> None:
        super().__init__(message, usage=usage)
        self.usage = usage

    @property
    def user_message(self) -> str:
        return f"{self.message}. Usage: {self.usage}"


class TemplateError(RelayError):
    """A template could not be rendered."""


class RunNotFound(RelayError):
    """No run has that id."""


class StepNotFound(RelayError):
    """The run has no step with that id."""


class PermissionDenied(RelayError):
    """You are not allowed to do that."""


class OperationRefused(RelayError):
    """The run is not in a state that allows this."""


class VoteRefused(RelayError):
    """Your vote was not counted."""


class StepFailed(RelayError):
    """The step failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(
            message, retryable=retryable, retry_after=retry_after, status=status, excerpt=excerpt
        )
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.excerpt = excerpt


class LeaseLost(RelayError):
    """Another worker took over this step; this worker's result was dropped."""
