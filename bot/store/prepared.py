"""The engine's hottest statements, compiled once by SQLAlchemy and run on SQLite's driver.

A transition writes half a dozen small rows. On SQLite, SQLAlchemy's execution
path (an execution context, parameter processing by name, a result wrapper)
cost about twice what SQLite itself spent on each of them, and most of an
engine step. A ``Prepared`` statement is still written in Core and compiled by
SQLAlchemy's compiler, and its values still pass through each column type's
own bind processor (``UTCDateTime``, ``JSON``); only the per-call wrapping is
skipped: the compiled SQL and a list of positional values go straight to the
driver's ``executemany``.

On PostgreSQL the statement runs through ``Connection.execute`` as any other:
asyncpg's round trip dwarfs the wrapping there.

Rows read back (``SELECT``, ``RETURNING``) pass through each column type's
result processor in the same way. The one limit, checked when a statement is
compiled: no ``IN`` lists or other values rendered at execution time.

SQLAlchemy's events and ``echo`` do not see these statements on SQLite; the
driver's trace callback does (``Database.driver_connections``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from bot.store.threads import driver_of

Params = Mapping[str, Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    slots: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    """For each ``?`` of the SQL in order: the parameter's name, the value bound in
    the statement itself (used when the parameters lack the name), and the
    type's bind processor."""
    results: tuple[Callable[[Any], Any] | None, ...] = ()
    """Each returned column's result processor."""
    _processed: tuple[tuple[int, Callable[[Any], Any]], ...] = field(init=False, compare=False)
    """The returned columns that have a processor, by position: most have none."""
    _orders: dict[tuple[str, ...], tuple[tuple[int, Any, Callable[[Any], Any] | None], ...]] = (
        field(default_factory=dict, compare=False)
    )
    """``slots`` with each name's index in a row of values (-1: not given), by names."""

    def __post_init__(self) -> None:
        processed = tuple((n, p) for n, p in enumerate(self.results) if p is not None)
        object.__setattr__(self, "_processed", processed)

    def row(self, found: tuple[Any, ...]) -> tuple[Any, ...]:
        """A row as SQLAlchemy would return it."""
        if not self._processed:
            return found
        values = list(found)
        for number, process in self._processed:
            values[number] = process(values[number])
        return tuple(values)

    def values(self, params: Params) -> tuple[Any, ...]:
        """Positional values for the driver."""
        return self.values_in(tuple(params), [tuple(params.values())])[0]

    def values_in(
        self, names: tuple[str, ...], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[Any, ...]]:
        """Positional values for the driver, of rows given as values in ``names`` order.

        A value its type refuses is a ``StatementError``, as it would be through
        ``Connection.execute``.
        """
        order = self._orders.get(names)
        if order is None:
            index = {name: number for number, name in enumerate(names)}
            order = self._orders[names] = tuple(
                (index.get(name, -1), default, process) for name, default, process in self.slots
            )
        found = []
        try:
            for row in rows:
                out = []
                for number, default, process in order:
                    value = row[number] if number >= 0 else default
                    out.append(value if process is None else process(value))
                found.append(tuple(out))
        except Exception as exc:
            raise sa.exc.StatementError(str(exc), self.sql, None, exc) from exc
        return found


class Prepared:
    """A Core statement run with as little wrapping as the database allows."""

    def __init__(self, statement: sa.Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, ...], _Compiled] = {}
        returned = getattr(statement, "exported_columns", ())
        self.keys: tuple[str, ...] = tuple(column.key for column in returned)
        """Names of the columns a ``SELECT`` or ``RETURNING`` gives back, in order."""

    def execute(self, conn: sa.Connection, params: Sequence[Params]) -> int:
        """Run the statement once per parameter set; the number of rows it changed."""
        if not params:
            return 0
        if conn.dialect.name != "sqlite":
            many = params[0] if len(params) == 1 else list(params)
            result: sa.CursorResult[Any] = conn.execute(self.statement, many)
            return result.rowcount
        compiled = self._compile(conn.dialect, params[0])
        cursor = driver_of(conn).executemany(compiled.sql, [compiled.values(p) for p in params])
        return int(cursor.rowcount)

    def execute_rows(
        self, conn: sa.Connection, names: tuple[str, ...], rows: Sequence[Sequence[Any]]
    ) -> int:
        """``execute`` with each parameter set given as values in the order of ``names``.

        The engine writes records this way: a tuple read off each record in one
        go costs less than a dict of it, which ``execute`` would take apart again.
        """
        if not rows:
            return 0
        if conn.dialect.name != "sqlite":
            return self.execute(conn, [dict(zip(names, row, strict=True)) for row in rows])
        compiled = self._compile(conn.dialect, names)
        cursor = driver_of(conn).executemany(compiled.sql, compiled.values_in(names, rows))
        return int(cursor.rowcount)

    def rows(self, conn: sa.Connection, params: Sequence[Params]) -> list[tuple[Any, ...]]:
        """The rows the statement returned (``SELECT`` or ``RETURNING``), in parameter order."""
        if not params:
            return []
        if conn.dialect.name != "sqlite":
            many = params[0] if len(params) == 1 else list(params)
            return [tuple(row) for row in conn.execute(self.statement, many)]
        compiled = self._compile(conn.dialect, params[0])
        driver = driver_of(conn)
        found: list[tuple[Any, ...]] = []
        for one in params:
            found += map(compiled.row, driver.execute(compiled.sql, compiled.values(one)))
        return found

    def mappings(self, conn: sa.Connection, params: Params) -> list[dict[str, Any]]:
        """The rows of one run of the statement, each a dict by column key."""
        keys = self.keys
        return [dict(zip(keys, row, strict=True)) for row in self.rows(conn, [params])]

    def _compile(self, dialect: Dialect, params: Params | tuple[str, ...]) -> _Compiled:
        # By the names as given: sorting them on every call cost more than
        # compiling a second order of the same names once.
        keys = tuple(params)
        found = self._compiled.get(keys)
        if found is None:
            found = self._compiled[keys] = _compile(self.statement, dialect, keys)
        return found


def _compile(statement: sa.Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup or ())
    binds = [compiled.binds[name] for name in names]
    if "POSTCOMPILE" in compiled.string or any(bind.expanding for bind in binds):
        raise ValueError(f"cannot prepare a statement with values rendered late: {statement}")
    returned = getattr(statement, "exported_columns", ())
    return _Compiled(
        sql=compiled.string,
        slots=tuple(
            (name, bind.effective_value, bind.type.dialect_impl(dialect).bind_processor(dialect))
            for name, bind in zip(names, binds, strict=True)
        ),
        results=tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in returned
        ),
    )
