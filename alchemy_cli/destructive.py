"""Which SQL destroys data or schema, decided by reading it (``plugin.statements``), and asking first.

Destructive, as pgcli's "destructive warning" counts it: ``DROP``, ``TRUNCATE``, ``ALTER``, ``RENAME``,
and ``DELETE`` or ``UPDATE`` with no ``WHERE`` of their own (a ``WHERE`` inside a subquery does not
limit the outer statement). Each statement of a script is judged on its own; comments, strings and
``WITH`` clauses are read through, never matched as text (``select 'drop table x'`` is a harmless
select). The tokenizer is the sandbox's own, so both rules read SQL the same way.

On a terminal the user is asked; without one the statement is refused unless ``--yes`` was given.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plugin.exceptions import AlchemyError
from plugin.statements import shorten, split

if TYPE_CHECKING:
    from collections.abc import Callable

    from plugin.statements import Statement

__all__ = ("Confirmation", "DestructiveStatementError", "destructive_statements")

_ALWAYS = {"DROP", "TRUNCATE", "ALTER", "RENAME"}
_UNLESS_WHERE = {"DELETE", "UPDATE"}


class DestructiveStatementError(AlchemyError):
    """A destructive statement was not confirmed: refused without a terminal, or answered no."""


def _reason(statement: Statement) -> str | None:
    kind = statement.verb
    if kind in _ALWAYS:
        return kind
    if kind in _UNLESS_WHERE and not statement.has_word("WHERE", top_level=True):
        return f"{kind} without WHERE"
    return None


def destructive_statements(sql: str, dialect: str = "") -> list[str]:
    """One description per destructive statement in ``sql``, e.g. ``DELETE without WHERE: delete from notes``."""
    return [
        f"{reason}: {shorten(statement.text, 80)}"
        for statement in split(sql, dialect)
        if (reason := _reason(statement)) is not None
    ]


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
