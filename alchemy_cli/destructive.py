"""Which SQL destroys data or schema, decided by parsing (sqlparse), and asking before running it.

Destructive, as pgcli's "destructive warning" counts it: ``DROP``, ``TRUNCATE``, ``ALTER``, ``RENAME``,
and ``DELETE`` or ``UPDATE`` with no ``WHERE`` of their own (a ``WHERE`` inside a subquery does not
limit the outer statement). Each statement of a script is judged on its own; comments and ``WITH``
clauses are read through, never matched as text (``select 'drop table x'`` is a harmless select).

On a terminal the user is asked; without one the statement is refused unless ``--yes`` was given.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlparse
from sqlparse.sql import Parenthesis, Where
from sqlparse.tokens import Keyword

from plugin.exceptions import AlchemyError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlparse.sql import Statement

__all__ = ("Confirmation", "DestructiveStatementError", "destructive_statements")

_ALWAYS = {"DROP", "TRUNCATE", "ALTER", "RENAME"}
_UNLESS_WHERE = {"DELETE", "UPDATE"}


class DestructiveStatementError(AlchemyError):
    """A destructive statement was not confirmed: refused without a terminal, or answered no."""


def _kind(statement: Statement) -> str:
    kind = str(statement.get_type())  # type: ignore[no-untyped-call]  # sqlparse has no type hints
    if kind != "UNKNOWN":
        return kind
    # sqlparse gives up on some statements (a WITH whose name is a keyword, such as ``old``; RENAME):
    # take the first top-level DML or DDL keyword, else the first keyword.
    keywords = [token for token in statement.tokens if token.ttype in Keyword]
    for token in keywords:
        if token.ttype in Keyword.DML or token.ttype in Keyword.DDL:
            return str(token.normalized).upper()
    return str(keywords[0].normalized).upper() if keywords else kind


def _has_own_where(statement: Statement) -> bool:
    # Top-level tokens only: a Where nested in a Parenthesis belongs to a subquery.
    return any(isinstance(token, Where) for token in statement.tokens if not isinstance(token, Parenthesis))


def _reason(statement: Statement) -> str | None:
    kind = _kind(statement)
    if kind in _ALWAYS:
        return kind
    if kind in _UNLESS_WHERE and not _has_own_where(statement):
        return f"{kind} without WHERE"
    return None


def destructive_statements(sql: str) -> list[str]:
    """One description per destructive statement in ``sql``, e.g. ``DELETE without WHERE: delete from notes``."""
    found = []
    for statement in sqlparse.parse(sql):
        if (reason := _reason(statement)) is not None:
            text = " ".join(str(statement).strip().rstrip(";").split())
            found.append(f"{reason}: {text if len(text) <= 80 else text[:79] + '…'}")
    return found


def _ask_on_terminal(question: str) -> bool:
    from alchemy_cli.render import confirm

    return confirm(question)


@dataclass(frozen=True)
class Confirmation:
    """How destructive SQL is let through: ``assume_yes`` (``--yes``), else ask on a terminal, else refuse."""

    assume_yes: bool = False
    ask: Callable[[str], bool] | None = None
    """Asks the user a yes/no question; defaults to :func:`alchemy_cli.render.confirm`."""

    def check(self, sql: str, bind: str) -> None:
        """Return when ``sql`` may run on ``bind``; raise :class:`DestructiveStatementError` otherwise."""
        found = destructive_statements(sql)
        if not found or self.assume_yes:
            return
        what = "; ".join(found)
        if not sys.stdin.isatty():
            raise DestructiveStatementError(
                f"refused destructive SQL on bind {bind!r} ({what}); nobody can confirm it without a terminal, "
                "so pass --yes to run it"
            )
        if not (self.ask or _ask_on_terminal)(f"Destructive SQL on bind {bind!r}: {what}. Run it?"):
            raise DestructiveStatementError(f"not confirmed, so not run: {what}")
