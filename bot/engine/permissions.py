"""Who may run a flow and who may operate its runs: pure rules over the flow's audiences."""

from __future__ import annotations

from collections.abc import Collection

from bot.definitions.models import Audience, FlowDef
from bot.engine.records import Run

LOCAL_OPERATOR = "local"
"""The identity of someone at the server's own terminal without ``--as``: they hold the
database already, so the flow's audiences do not bind them."""


def audience_groups(flow: FlowDef) -> frozenset[str]:
    """Every user group that any permission of the flow mentions."""
    permissions = flow.permissions
    if permissions is None:
        return frozenset()
    groups: set[str] = set()
    for audience in (permissions.run, permissions.operate):
        if audience is not None:
            groups.update(audience.groups)
    return frozenset(groups)


def _within(audience: Audience, user: str, groups: Collection[str], channel: str | None) -> bool:
    return (
        user in audience.users
        or any(group in groups for group in audience.groups)
        or (channel is not None and channel in audience.channels)
    )


def may_run(flow: FlowDef, user: str, groups: Collection[str], channel: str | None) -> bool:
    """No ``permissions.run`` means anyone in the workspace (``relay validate`` warns)."""
    if user == LOCAL_OPERATOR:
        return True
    audience = flow.permissions.run if flow.permissions else None
    return audience is None or _within(audience, user, groups, channel)


def may_operate(
    flow: FlowDef, run: Run, user: str, groups: Collection[str], channel: str | None
) -> bool:
    """Operators: the ``operate`` audience; without one, whoever may run it, and the starter."""
    if user == LOCAL_OPERATOR or user == run.started_by:
        return True
    permissions = flow.permissions
    if permissions is None:
        return True
    if permissions.operate is not None:
        return _within(permissions.operate, user, groups, channel)
    return may_run(flow, user, groups, channel)
