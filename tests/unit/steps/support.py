"""Build HTTP steps and step contexts the way the engine would, for executor tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bot.definitions.models import FlowDef, HttpStep
from bot.definitions.templating import Scope
from bot.steps.base import StepContext


def http_step(**fields: Any) -> HttpStep:
    """An http step from YAML-like keys (``json=`` works, as in a flow file)."""
    return HttpStep.model_validate({"id": "call", "kind": "http", **fields})


def http_context(
    step: HttpStep,
    *,
    scope: Scope | None = None,
    services: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    idempotency_key: str = "run-1:call",
    defaults: Mapping[str, Any] | None = None,
) -> StepContext:
    secrets = dict(secrets or {})
    flow = FlowDef.model_validate(
        {
            "name": "test-flow",
            "steps": [step.model_dump(by_alias=True, exclude_none=True)],
            "secrets": sorted(secrets),
            "services": {name: {"url": url} for name, url in (services or {}).items()},
            "defaults": dict(defaults or {}),
        }
    )
    return StepContext(
        run_id="run-1",
        key=step.id,
        attempt=1,
        idempotency_key=idempotency_key,
        step=step,
        flow=flow,
        scope=scope or Scope(secrets=secrets),
        timeout=timedelta(seconds=timeout),
        services=dict(services or {}),
        secrets=secrets,
    )
