"""The flow format: what a YAML file in ``flows/`` may say, as frozen pydantic models.

Every model forbids unknown keys so that a typo is an error with a did-you-mean,
never a silently ignored setting. A step is a tagged union on ``kind``. Fields
that hold Jinja templates are listed by each step's ``templates()`` so that the
checker and the engine agree on exactly which strings are rendered.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.definitions.values import (
    ChannelId,
    Cron,
    Duration,
    EnvName,
    FlowName,
    GroupId,
    Identifier,
    StepId,
    TimeZone,
    UserId,
)

Path = tuple[str | int, ...]
"""Where a value sits in the YAML document, e.g. ``("steps", 2, "url")``."""

MAX_STEPS = 500


class Model(BaseModel):
    """Base of every flow model: unknown keys are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- inputs


class InputType(StrEnum):
    """The types a run input can have; the Slack form picks a widget for each."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    LIST = "list"


class InputDef(Model):
    """One typed input of a flow: how it is asked for, checked and shown."""

    type: InputType = InputType.STRING
    description: str = ""
    label: str | None = None
    required: bool | None = None
    """Defaults to true when there is no ``default``."""
    default: Any = None
    min: float | None = None
    max: float | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    pattern: str | None = None
    choices: list[str | int] = []
    secret: bool = False
    """Masked as ``***`` wherever the value is displayed or stored for display."""

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None

    @model_validator(mode="after")
    def _consistent(self) -> InputDef:
        if self.type is InputType.CHOICE and not self.choices:
            raise ValueError("a choice input needs `choices`: a list of the allowed values")
        if self.choices and self.type is not InputType.CHOICE:
            raise ValueError("`choices` only applies to `type: choice`")
        if self.pattern is not None:
            import re

            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"`pattern` is not a valid regular expression: {exc}") from None
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("`min` is greater than `max`")
        return self


# ---------------------------------------------------------------- people


class Audience(Model):
    """A set of people: Slack users, members of user groups, or anyone in a channel."""

    users: list[UserId] = []
    groups: list[GroupId] = []
    channels: list[ChannelId] = []

    @property
    def is_empty(self) -> bool:
        return not (self.users or self.groups or self.channels)


class Permissions(Model):
    """Who may start runs of a flow and who may operate them (retry, skip, cancel)."""

    run: Audience | None = None
    """Missing: anyone in the workspace may run the flow."""
    operate: Audience | None = None
    """Missing: the people who may run it, and each run's own starter."""


class Alerts(Model):
    """Where failure alerts go, and whom they mention."""

    channel: ChannelId | None = None
    mention: Audience = Audience()


# ---------------------------------------------------------------- policies


RetryReason = Literal["connection", "timeout", "5xx", "429"] | Annotated[int, Field(ge=100, le=599)]


class RetryPolicy(Model):
    """How a step is tried again after a failure that may pass.

    The delay before attempt ``n + 1`` is ``backoff * multiplier ** (n - 1)``, capped
    at ``max_backoff``; with ``jitter`` it is drawn from the upper half of that
    interval so that many runs failing together do not retry in lockstep. A
    ``Retry-After`` from the server replaces the computed delay.
    """

    attempts: int = Field(default=3, ge=1, le=100)
    """Total attempts, the first one included."""
    backoff: Duration = timedelta(seconds=1)
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    max_backoff: Duration = timedelta(minutes=5)
    jitter: bool = True
    on: list[RetryReason] = ["connection", "timeout", "5xx", "429"]
    """Which failures retry: connection errors, timeouts, any 5xx, 429, or listed statuses.
    Other 4xx responses never retry unless their code is listed."""

    def delay(self, attempt: int, rand: float) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based); ``rand`` in [0, 1)."""
        base = self.backoff.total_seconds() * self.multiplier ** max(attempt - 1, 0)
        base = min(base, self.max_backoff.total_seconds())
        if self.jitter:
            base = base / 2 + base / 2 * rand
        return timedelta(seconds=base)

    def retries_status(self, status: int) -> bool:
        """Whether an HTTP status counts as a failure that may pass."""
        if status in self.on:
            return True
        if status == 429:
            return "429" in self.on
        return 500 <= status < 600 and "5xx" in self.on


class Defaults(Model):
    """Settings every step inherits unless it sets its own."""

    retry: RetryPolicy = RetryPolicy()
    timeout: Duration = timedelta(seconds=30)


class ForEach(Model):
    """Run the step once per item of a list, at most ``concurrency`` at a time."""

    items: str | list[Any]
    """A template that renders to a list (``"{{ inputs.skus }}"``), or a literal list."""
    as_: Identifier = Field(default="item", alias="as")
    concurrency: int = Field(default=4, ge=1, le=100)


# ---------------------------------------------------------------- steps


class StepBase(Model):
    """What every step has: an id, a condition, and how failure is handled."""

    id: StepId
    title: str | None = None
    when: str | None = None
    """A Jinja expression; the step is skipped when it is false."""
    continue_on_error: bool = False
    compensate: list[Step] = []
    """Steps that undo this one if a later step fails for good (run in reverse order)."""

    @property
    def label(self) -> str:
        return self.title or self.id

    def templates(self) -> Iterator[tuple[Path, str]]:
        """Every template string of this step (not of nested steps), with its path."""
        return iter(())

    def children(self) -> Iterator[tuple[Path, Step]]:
        """Steps nested inside this one (branches), with their paths."""
        return iter(())


class RetryingStep(StepBase):
    """A step whose action can fail transiently and so may be retried."""

    retry: RetryPolicy | None = None
    timeout: Duration | None = None
    for_each: ForEach | None = None

    def _for_each_templates(self) -> Iterator[tuple[Path, str]]:
        if self.for_each is not None and isinstance(self.for_each.items, str):
            yield ("for_each", "items"), self.for_each.items


HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
StatusSpec = Annotated[int, Field(ge=100, le=599)] | Literal["2xx", "3xx", "4xx", "5xx"]


class HttpStep(RetryingStep):
    """Call an HTTP API. The response (status, headers, JSON or text) is the output.

    Scheme, host and port come from the flow file alone: either a literal ``url``
    whose origin holds no template, or a named ``service`` plus a ``path``.
    Templated values are percent-encoded where they land in the URL.
    """

    kind: Literal["http"]
    method: HttpMethod = "GET"
    url: str | None = None
    service: Identifier | None = None
    path: str = ""
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    body_json: Any = Field(default=None, alias="json")
    form: dict[str, str] | None = None
    expect: list[StatusSpec] = ["2xx"]
    follow_redirects: bool = False
    max_response_bytes: int = Field(default=1_048_576, ge=1, le=64 * 1_048_576)

    @model_validator(mode="after")
    def _target(self) -> HttpStep:
        if (self.url is None) == (self.service is None):
            raise ValueError("an http step needs exactly one of `url` or `service` (+ `path`)")
        if self.url is not None and self.path:
            raise ValueError("`path` goes with `service`; put the path in `url` instead")
        if self.body_json is not None and self.form is not None:
            raise ValueError("send either `json` or `form`, not both")
        return self

    def templates(self) -> Iterator[tuple[Path, str]]:
        if self.url is not None:
            yield ("url",), self.url
        if self.path:
            yield ("path",), self.path
        for name, value in self.headers.items():
            yield ("headers", name), value
        for name, value in self.query.items():
            yield ("query", name), value
        yield from _strings_in(self.body_json, ("json",))
        for name, value in (self.form or {}).items():
            yield ("form", name), value
        yield from self._for_each_templates()

    def expects(self, status: int) -> bool:
        """Whether ``status`` counts as success for this step."""
        for spec in self.expect:
            if isinstance(spec, int) and spec == status:
                return True
            if isinstance(spec, str) and status // 100 == int(spec[0]):
                return True
        return False


class FieldType(StrEnum):
    """Types of the values an approver fills in."""

    STRING = "string"
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"


class FormField(Model):
    """A value the approver fills in when deciding; it becomes part of the output."""

    id: Identifier
    label: str
    type: FieldType = FieldType.STRING
    required: bool = True
    description: str = ""


class Approvers(Model):
    """Who may decide. Never empty: an approval nobody may answer is invalid."""

    users: list[UserId] = []
    groups: list[GroupId] = []


class Quorum(Model):
    """A per-group requirement, e.g. one approval from @legal."""

    group: GroupId | None = None
    users: list[UserId] = []
    required: int = Field(default=1, ge=1)
    label: str | None = None

    @model_validator(mode="after")
    def _someone(self) -> Quorum:
        if self.group is None and not self.users:
            raise ValueError("a quorum needs a `group` or `users`")
        return self


OnTimeout = Literal["reject", "approve", "escalate"]


class ApprovalLevel(Model):
    """One level of an approval chain: who decides, how many, and until when."""

    approvers: Approvers | None = None
    required: int = Field(default=1, ge=1)
    """How many approvals from ``approvers`` (N of M)."""
    quorum: list[Quorum] = []
    """Instead of ``approvers``: every listed quorum must be met."""
    timeout: Duration | None = None
    on_timeout: OnTimeout = "reject"
    escalate: Escalation | None = None
    """The next level, used when ``on_timeout: escalate``."""
    remind_every: Duration | None = None

    @model_validator(mode="after")
    def _who(self) -> ApprovalLevel:
        has_approvers = self.approvers is not None and bool(
            self.approvers.users or self.approvers.groups
        )
        if has_approvers == bool(self.quorum):
            raise ValueError(
                "say who decides with exactly one of `approvers` (users and groups) "
                "or `quorum` (one requirement per group); nobody-may-decide is not allowed"
            )
        if self.on_timeout == "escalate" and self.escalate is None:
            raise ValueError("`on_timeout: escalate` needs an `escalate` block naming who is next")
        if self.on_timeout == "escalate" and self.timeout is None:
            raise ValueError("`on_timeout: escalate` needs a `timeout`")
        if self.escalate is not None and self.on_timeout != "escalate":
            raise ValueError("`escalate` is only used with `on_timeout: escalate`")
        return self

    def levels(self) -> list[ApprovalLevel]:
        """The chain of levels: this one, then each escalation in turn."""
        chain: list[ApprovalLevel] = [self]
        while chain[-1].escalate is not None:
            chain.append(chain[-1].escalate)
        return chain


class Escalation(ApprovalLevel):
    """The next approvers in a chain, with their own timeout."""


class ApprovalStep(StepBase, ApprovalLevel):
    """Ask people to decide; the run waits as a row, not a coroutine."""

    kind: Literal["approval"]
    question: str
    details: str | None = None
    allow_requester: bool = False
    exclude_approvers_of: list[StepId] = []
    """Nobody who approved one of these steps may approve this one (four eyes)."""
    require_reason: Literal["reject", "always", "never"] = "reject"
    fields: list[FormField] = []
    channel: ChannelId | None = None
    """Where to post the card; defaults to where the run was started."""
    dm: bool = False
    """Send the card to each approver directly instead of to a channel."""
    show_inputs: list[Identifier] = []

    @model_validator(mode="after")
    def _where(self) -> ApprovalStep:
        if self.dm and self.channel is not None:
            raise ValueError("ask either in a `channel` or by `dm`, not both")
        return self

    def templates(self) -> Iterator[tuple[Path, str]]:
        yield ("question",), self.question
        if self.details is not None:
            yield ("details",), self.details


class NotifyStep(RetryingStep):
    """Send a message to a channel, a person, or (by default) the run's thread."""

    kind: Literal["notify"]
    text: str
    channel: ChannelId | None = None
    user: str | None = None
    """A user id, or a template such as ``"{{ run.started_by }}"``."""

    @model_validator(mode="after")
    def _one_target(self) -> NotifyStep:
        if self.channel is not None and self.user is not None:
            raise ValueError("notify either a `channel` or a `user`, not both")
        return self

    def templates(self) -> Iterator[tuple[Path, str]]:
        yield ("text",), self.text
        if self.user is not None:
            yield ("user",), self.user
        yield from self._for_each_templates()


class WaitStep(StepBase):
    """Pause for a duration or until a time, durably (a timer row)."""

    kind: Literal["wait"]
    duration: Duration | None = None
    until: str | None = None
    """A template that renders to an ISO 8601 date-time."""

    @model_validator(mode="after")
    def _one(self) -> WaitStep:
        if (self.duration is None) == (self.until is None):
            raise ValueError("a wait step needs exactly one of `duration` or `until`")
        return self

    def templates(self) -> Iterator[tuple[Path, str]]:
        if self.until is not None:
            yield ("until",), self.until


class SubFlowStep(RetryingStep):
    """Run another flow with inputs; its ``outputs`` become this step's output."""

    kind: Literal["flow"]
    flow: FlowName
    inputs: dict[Identifier, Any] = {}

    def templates(self) -> Iterator[tuple[Path, str]]:
        yield from _strings_in(self.inputs, ("inputs",))
        yield from self._for_each_templates()


class ParallelStep(StepBase):
    """Run branches side by side; the step finishes when every branch has."""

    kind: Literal["parallel"]
    branches: dict[Identifier, list[Step]]

    @field_validator("branches")
    @classmethod
    def _enough(cls, value: dict[str, list[Step]]) -> dict[str, list[Step]]:
        if len(value) < 2:
            raise ValueError("a parallel step needs at least two branches")
        for name, steps in value.items():
            if not steps:
                raise ValueError(f"branch `{name}` has no steps")
        return value

    def children(self) -> Iterator[tuple[Path, Step]]:
        for name, steps in self.branches.items():
            for index, step in enumerate(steps):
                yield ("branches", name, index), step


Step = Annotated[
    HttpStep | ApprovalStep | NotifyStep | WaitStep | SubFlowStep | ParallelStep,
    Field(discriminator="kind"),
]
STEP_KINDS = ("http", "approval", "notify", "wait", "flow", "parallel")


# ---------------------------------------------------------------- flow


class Service(Model):
    """A named base URL: literal, or read from an environment variable at run time."""

    url: str | None = None
    env: EnvName | None = None

    @model_validator(mode="after")
    def _one(self) -> Service:
        if (self.url is None) == (self.env is None):
            raise ValueError("a service needs exactly one of `url` or `env`")
        if self.url is not None and "{{" in self.url:
            raise ValueError("a service `url` cannot hold templates: hosts come from the file")
        return self


class Trigger(Model):
    """Start runs on a schedule."""

    schedule: Cron
    timezone: TimeZone = "UTC"
    inputs: dict[Identifier, Any] = {}


class FlowDef(Model):
    """A whole flow file."""

    version: Literal[1] = 1
    name: FlowName
    title: str | None = None
    description: str = ""
    inputs: dict[Identifier, InputDef] = {}
    permissions: Permissions | None = None
    alerts: Alerts | None = None
    defaults: Defaults = Defaults()
    secrets: list[EnvName] = []
    """Environment variables the flow may read as ``secrets.NAME``; always shown as ***."""
    services: dict[Identifier, Service] = {}
    triggers: list[Trigger] = []
    steps: list[Step] = Field(min_length=1)
    on_failure: list[Step] = []
    outputs: dict[Identifier, str] = {}

    @property
    def label(self) -> str:
        return self.title or self.name

    def walk(self) -> Iterator[tuple[Path, Step]]:
        """Every step in the file, depth first, with its path."""
        for section in ("steps", "on_failure"):
            for index, step in enumerate(getattr(self, section)):
                yield from _walk(step, (section, index))

    def step(self, step_id: str) -> Step:
        """The step with this id (anywhere in the file)."""
        return self._steps_by_id[step_id]

    @functools.cached_property
    def _steps_by_id(self) -> dict[str, Step]:
        # The engine looks a step up on every transition and attempt; walking the
        # tree for it cost a generator frame per step before it.
        found: dict[str, Step] = {}
        for _, step in self.walk():
            found.setdefault(step.id, step)
        return found


def _walk(step: Step, path: Path) -> Iterator[tuple[Path, Step]]:
    yield path, step
    for sub_path, child in step.children():
        yield from _walk(child, path + sub_path)
    for index, undo in enumerate(step.compensate):
        yield from _walk(undo, (*path, "compensate", index))


def _strings_in(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings_in(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings_in(item, (*path, index))


_RECURSIVE: tuple[type[BaseModel], ...] = (
    StepBase,
    RetryingStep,
    HttpStep,
    ApprovalLevel,
    Escalation,
    ApprovalStep,
    NotifyStep,
    WaitStep,
    SubFlowStep,
    ParallelStep,
    FlowDef,
)
for _model in _RECURSIVE:
    _model.model_rebuild()
