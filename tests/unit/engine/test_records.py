"""``evolve`` makes the same records as ``dataclasses.replace``, and refuses what it would."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.engine.records import AuditEntry, Run, Snapshot, StepRun, evolve
from bot.engine.states import RunState, StepState

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

RUN = Run(
    id="r1",
    flow="f",
    definition={"name": "f"},
    definition_hash="h",
    state=RunState.RUNNING,
    inputs={"n": 1},
    started_by="U0A",
    created_at=T0,
    updated_at=T0,
)
STEP = StepRun(run_id="r1", key="a", step_id="a", kind="http", state=StepState.PENDING)


@pytest.mark.parametrize(
    ("record", "changes"),
    [
        (RUN, {"state": RunState.SUCCEEDED, "version": 3, "finished_at": T0}),
        (STEP, {"state": StepState.RUNNING, "attempt": 2, "lease_owner": "w", "detail": {}}),
        (STEP, {}),
        (
            AuditEntry(
                run_id="r1",
                seq=1,
                at=T0,
                actor="U0A",
                action="run.started",
                detail={},
                prev_hash="",
                hash="x",
            ),
            {"prev_hash": "y"},
        ),
        (Snapshot(run=RUN, steps={"a": STEP}), {"steps": {}}),
    ],
)
def test_evolve_is_replace(record: Any, changes: dict[str, Any]) -> None:
    before = dataclasses.replace(record)
    made = evolve(record, **changes)
    assert made == dataclasses.replace(record, **changes)
    assert made is not record
    assert record == before, "the original is left as it was"
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.state = None


def test_evolve_refuses_a_field_the_record_does_not_have() -> None:
    with pytest.raises(TypeError, match="StepRun has no field stat"):
        evolve(STEP, stat=StepState.RUNNING)
    with pytest.raises(TypeError):
        dataclasses.replace(STEP, stat=StepState.RUNNING)
