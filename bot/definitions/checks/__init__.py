"""Cross-field checks on a flow that has already passed model validation.

The models check each value on its own; these checks look at the whole file:
ids that clash, templates that read what will not exist, hosts that come from
input, approvals nobody can satisfy. Each check is a small function with one
concern that yields Problems; ``CHECKS`` lists them and ``run_checks`` runs
them all, so adding a check is adding a function and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bot.definitions.checks import approvals, http, policies, steps, templates
from bot.definitions.checks.catalog import check_catalog
from bot.definitions.checks.context import CheckContext
from bot.definitions.checks.tokens import scan_tokens
from bot.definitions.models import FlowDef
from bot.definitions.problems import Problem
from bot.definitions.yaml_source import SourceMap

Check = Callable[[CheckContext], Iterable[Problem]]

CHECKS: tuple[Check, ...] = (
    steps.duplicate_step_ids,
    steps.constant_when,
    steps.unused_compensate,
    steps.calls_itself,
    templates.template_references,
    http.http_targets,
    http.http_headers,
    approvals.impossible_approvals,
    approvals.approver_exclusions,
    approvals.approval_forms,
    policies.durations,
    policies.triggers,
    policies.permissions,
    policies.input_defaults,
)


def run_checks(flow: FlowDef, *, source: SourceMap, file: str) -> list[Problem]:
    """Every problem the checks find in ``flow``, in file order."""
    ctx = CheckContext(flow=flow, source=source, file=file)
    found = [problem for check in CHECKS for problem in check(ctx)]
    return sorted(found, key=Problem.sort_key)


__all__ = ["CHECKS", "Check", "CheckContext", "check_catalog", "run_checks", "scan_tokens"]
