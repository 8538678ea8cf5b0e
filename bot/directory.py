"""Group membership for runs outside Slack, from a small YAML file.

``RELAY_DIRECTORY_FILE`` maps user-group ids to member ids::

    S0FINANCE: [U0ANA, U0BEN]
    S0ONCALL: [U0CAT, U0DAN, U0EVE]

In Slack the same questions go to ``usergroups.users.list`` instead.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import yaml

from bot.errors import ConfigError


class StaticDirectory:
    """A fixed membership table."""

    def __init__(self, members: Mapping[str, Collection[str]] | None = None) -> None:
        self._members = {group: frozenset(users) for group, users in (members or {}).items()}

    @classmethod
    def from_file(cls, path: Path | None) -> StaticDirectory:
        """Read the table; a missing or malformed file is a one-line ConfigError."""
        if path is None:
            return cls()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read RELAY_DIRECTORY_FILE {path}: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ConfigError(f"{path}: write one `GROUP_ID: [USER_ID, ...]` line per group")
        return cls({str(group): [str(u) for u in users] for group, users in data.items()})

    async def groups_of(self, user: str, among: Collection[str]) -> frozenset[str]:
        return frozenset(group for group in among if user in self._members.get(group, ()))

    def members(self, group: str) -> frozenset[str]:
        return self._members.get(group, frozenset())
