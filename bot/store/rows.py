"""Rows ↔ records: the only place that knows how a frozen record is laid out in a table.

Enums are stored as their string values and tuples as JSON lists; everything
else maps one field to one column of the same name. Datetimes need nothing
here: ``UTCDateTime`` already hands back aware UTC values.
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from enum import Enum
from typing import Any

import sqlalchemy as sa

from bot.engine.records import Approval, Attempt, AuditEntry, Run, StepRun, Timer, Vote
from bot.engine.states import Decision, RunState, StepState, TimerPurpose

Record = Run | StepRun | Attempt | Approval | Vote | Timer | AuditEntry


_NAMES: dict[type, tuple[str, ...]] = {}
"""Field names by record class: ``dataclasses.fields`` rebuilds its answer on every call."""


def _names(cls: type[Record]) -> tuple[str, ...]:
    found = _NAMES.get(cls)
    if found is None:
        found = _NAMES[cls] = tuple(field.name for field in fields(cls))
    return found


def to_row(record: Record) -> dict[str, Any]:
    """Column values for ``record``, one per dataclass field."""
    names, read = _reader(type(record))
    return dict(zip(names, read(record), strict=True))


def values_of(records: Sequence[Record]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """The column names of the records' class, and each record's values in that order.

    ``to_row`` for a batch of one class, without a dict per record: enums become
    their values; tuples stay tuples, which JSON columns store as lists.
    """
    names, read = _reader(type(records[0]))
    return names, [read(record) for record in records]


_READERS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def _reader(cls: type[Record]) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    found = _READERS.get(cls)
    if found is not None:
        return found
    names = _names(cls)
    hints = typing.get_type_hints(cls)
    enums = [
        number
        for number, name in enumerate(names)
        if isinstance(hints[name], type) and issubclass(hints[name], Enum)
    ]
    get = operator.attrgetter(*names)

    def read(record: Record) -> tuple[Any, ...]:
        values = list(get(record))
        for number in enums:
            values[number] = values[number].value
        return tuple(values)

    found = _READERS[cls] = (names, read)
    return found


def changed_columns(old: Record, new: Record) -> dict[str, Any]:
    """Column values of the fields where ``new`` differs from ``old`` (records of one class).

    Compares the fields themselves: converting both records to rows first
    would walk the run's definition twice on every transition.
    """
    changed = {}
    for name in _names(type(new)):
        value = getattr(new, name)
        before = getattr(old, name)
        if value is not before and value != before:
            changed[name] = _plain(value)
    return changed


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def columns_of(row: sa.Row[Any], table: sa.Table) -> dict[str, Any]:
    """One table's columns out of a joined row, keyed by column name.

    Joined tables share column names (``state``, ``run_id``), so the row is
    read by ``Column`` object, never by string.
    """
    mapping = row._mapping
    return {column.name: mapping[column] for column in table.c}


def _values(cls: type[Record], row: Mapping[Any, Any]) -> dict[str, Any]:
    return {name: row[name] for name in _names(cls)}


def run_from(row: Mapping[Any, Any]) -> Run:
    """A ``Run`` from a ``runs`` row (state to enum, undo plan to a tuple)."""
    values = _values(Run, row)
    values.update(state=RunState(row["state"]), undo_plan=tuple(row["undo_plan"]))
    return Run(**values)


def step_from(row: Mapping[Any, Any]) -> StepRun:
    """A ``StepRun`` from a ``step_runs`` row."""
    values = _values(StepRun, row)
    values.update(state=StepState(row["state"]))
    return StepRun(**values)


def attempt_from(row: Mapping[Any, Any]) -> Attempt:
    """An ``Attempt`` from an ``attempts`` row."""
    return Attempt(**_values(Attempt, row))


def approval_from(row: Mapping[Any, Any]) -> Approval:
    """An ``Approval`` from an ``approvals`` row (deciders to a tuple)."""
    values = _values(Approval, row)
    values.update(decided_by=tuple(row["decided_by"]))
    return Approval(**values)


def vote_from(row: Mapping[Any, Any]) -> Vote:
    """A ``Vote`` from a ``votes`` row."""
    values = _values(Vote, row)
    values.update(decision=Decision(row["decision"]), groups=tuple(row["groups"]))
    return Vote(**values)


def timer_from(row: Mapping[Any, Any]) -> Timer:
    """A ``Timer`` from a ``timers`` row."""
    values = _values(Timer, row)
    values.update(purpose=TimerPurpose(row["purpose"]))
    return Timer(**values)


def audit_from(row: Mapping[Any, Any]) -> AuditEntry:
    """An ``AuditEntry`` from an ``audit`` row (its surrogate id is not part of it)."""
    return AuditEntry(**_values(AuditEntry, row))
