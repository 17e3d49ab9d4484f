"""Which bind a statement runs on: the one that owns every table the statement reads or writes.

A statement is routed by its tables, never by the first entity alone, so a union, CTE, subquery, join
or ``EXISTS`` of tables on another bind cannot silently run on the wrong database. The tables are the
ones in the statement itself plus, for ORM statements, those the ORM adds when it compiles (joins along
relationships, eager joins, inheritance). A statement whose tables live on different binds raises
:class:`~plugin.exceptions.CrossBindError`.

Finding the tables walks the statement, so the answer is cached by the statement's structure (SQLAlchemy's
cache key, computed and memoized anyway to find the compiled SQL): a repeated statement, e.g.
``session.get(Model, pk)``, costs one dictionary lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.expression import ColumnClause, Select, TableClause
from sqlalchemy.sql.visitors import iterate

from plugin._sqlalchemy import structure_key
from plugin.exceptions import CrossBindError

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable

    from sqlalchemy.sql.expression import ClauseElement

__all__ = ("StatementRouter", "statement_tables")

MAX_ROUTES = 4096
"""Distinct statement structures remembered; past that the memory starts over (as SQLAlchemy's own
compiled cache is bounded). Apps have far fewer unless they build SQL text from data."""


def _collect(statement: ClauseElement, into: dict[TableClause, None]) -> None:
    for element in iterate(statement):
        if isinstance(element, TableClause):
            into[element] = None
        elif isinstance(element, ColumnClause) and isinstance(element.table, TableClause):
            # A column names its table even where no FROM does: UPDATE ... WHERE b.x = a.id reads "a".
            into[element.table] = None


def statement_tables(statement: ClauseElement) -> list[TableClause]:
    """Every table ``statement`` reads or writes, in the order first met."""
    found: dict[TableClause, None] = {}
    _collect(statement, found)
    if isinstance(statement, Select):
        # The ORM adds tables when it compiles a SELECT (joins along relationships, eager joins,
        # inheritance); its compiled form names them. DML is not compiled here: ORM bulk DML compiles
        # only inside its own execution.
        try:
            compile_state = statement.compile().compile_state
        except SQLAlchemyError:  # dialect-only syntax the generic compiler refuses: the walk above stands
            compile_state = None
        compiled = getattr(compile_state, "statement", None)
        if compiled is not None and compiled is not statement:
            _collect(compiled, found)
    return list(found)


def _describe(tables: Iterable[TableClause]) -> str:
    return ", ".join(repr(getattr(t, "fullname", t.name)) for t in tables)


class StatementRouter:
    """Routes statements by their tables, with ``owner(table)`` as the one rule for a table's bind."""

    def __init__(self, owner: Callable[[TableClause], str]) -> None:
        self._owner = owner
        self._routes: dict[Hashable, str | None] = {}

    def key_for(self, statement: ClauseElement) -> str | None:
        """The bind owning every table of ``statement``; ``None`` when it names no table (``text()``).

        Raises :class:`~plugin.exceptions.CrossBindError` when its tables live on different binds.
        """
        structure = structure_key(statement)
        if structure is None:  # SQLAlchemy cannot cache it either: walk it every time
            return self._route(statement)
        try:
            return self._routes[structure]
        except KeyError:
            pass
        key = self._route(statement)
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        self._routes[structure] = key
        return key

    def _route(self, statement: ClauseElement) -> str | None:
        by_bind: dict[str, list[TableClause]] = {}
        for table in statement_tables(statement):
            by_bind.setdefault(self._owner(table), []).append(table)
        if len(by_bind) > 1:
            where = "; ".join(f"{_describe(tables)} on bind {key!r}" for key, tables in by_bind.items())
            raise CrossBindError(
                f"one statement uses tables of different binds ({where}), and a statement runs on one "
                "database: split it into one statement per bind, or pass "
                "bind_arguments={'bind_key': ...} if that bind's database has every table"
            )
        return next(iter(by_bind), None)
