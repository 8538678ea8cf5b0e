"""The audit trail's hash chain: each entry seals the one before it.

Per run rather than global, so that writers of different runs never contend on
one chain head; ``relay audit verify`` walks every run's chain and checks it
ends at the head the run row records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bot.engine.records import AuditEntry

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
"""``json.dumps`` with these settings builds an encoder per call; entries are sealed often."""


def entry_hash(entry: AuditEntry) -> str:
    """The hash an entry must carry: a canonical JSON of its fields and the previous hash."""
    return _digest(
        entry.prev_hash, entry.run_id, entry.seq, entry.at, entry.actor, entry.action, entry.detail
    )


def _digest(
    prev_hash: str, run_id: str, seq: int, at: datetime, actor: str, action: str, detail: Any
) -> str:
    body = _CANONICAL.encode([prev_hash, run_id, seq, at.isoformat(), actor, action, detail])
    return hashlib.sha256(body.encode()).hexdigest()


def seal(
    *, run_id: str, seq: int, prev_hash: str, at: datetime, actor: str, action: str, detail: Any
) -> AuditEntry:
    """Make the next entry of a chain."""
    return AuditEntry(
        run_id=run_id,
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        detail=detail,
        prev_hash=prev_hash,
        hash=_digest(prev_hash, run_id, seq, at, actor, action, detail),
    )


def verify_chain(entries: Iterable[AuditEntry], *, head: str) -> str | None:
    """None when the chain is intact and ends at ``head``; else what is wrong, in words."""
    prev = ""
    expected_seq = 1
    for entry in entries:
        if entry.seq != expected_seq:
            return f"entry {expected_seq} is missing (found {entry.seq})"
        if entry.prev_hash != prev:
            return f"entry {entry.seq} does not follow entry {entry.seq - 1}"
        if entry_hash(entry) != entry.hash:
            return f"entry {entry.seq} ({entry.action}) was altered"
        prev = entry.hash
        expected_seq += 1
    if prev != head:
        return "the last entries were removed" if head else "entries exist for a run with none"
    return None
