"""What happened to the rows a shell or ``db run`` wrote: committed by the code, by the plugin, or rolled back.

Counted from SQLAlchemy's engine events, per connection (two sessions on one bind hold two connections,
each committing on its own) and reported per bind. A commit counts only when the database accepted it:
the ``commit`` event comes before the COMMIT is sent, so a failure reported right after it (``handle_error``
with no statement) takes the rows back.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Connection

__all__ = ("Ledger",)


class Ledger:
    """Row counts per bind: written, committed by the code itself, committed by the plugin, rolled back."""

    def __init__(self) -> None:
        self.written: Counter[str] = Counter()
        """Rows inserted, updated or deleted, whatever became of them."""
        self.committed_by_code: Counter[str] = Counter()
        """Rows the code committed itself (``await session.commit()``)."""
        self.committed: Counter[str] = Counter()
        """Rows the plugin committed at the end (the transaction policy)."""
        self.rolled_back: Counter[str] = Counter()
        self.settling = False
        """Set while the plugin settles the unit of work: commits then are the plugin's, not the code's."""
        self._open: dict[Connection, tuple[str, int]] = {}
        self._last_commit: tuple[Connection, str, int, Counter[str]] | None = None

    def pending(self) -> Counter[str]:
        """Rows written and neither committed nor rolled back yet, per bind."""
        pending: Counter[str] = Counter()
        for key, rows in self._open.values():
            pending[key] += rows
        return +pending

    def roll_back_everything(self) -> None:
        """A sandbox was rolled back: every row written is gone, whatever the code "committed"."""
        self.rolled_back = +self.written
        self.committed_by_code, self.committed, self._open = Counter(), Counter(), {}

    def listeners(self, key: str) -> list[tuple[str, Callable[..., None]]]:
        """The engine events to listen to for bind ``key``."""
        return [
            ("after_cursor_execute", self._counter(key)),
            ("commit", self._on_commit(key)),
            ("commit_twophase", self._on_commit(key)),
            ("rollback", self._on_rollback(key)),
            ("rollback_twophase", self._on_rollback(key)),
            ("handle_error", self._on_error),
        ]

    def _counter(self, key: str) -> Callable[..., None]:
        def count(conn: Connection, cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
            # ORM and Core DML say what they are; text() DML does not, but it returns no rows and changes some.
            dml = context is not None and (context.isinsert or context.isupdate or context.isdelete)
            if (dml or cursor.description is None) and cursor.rowcount > 0:
                self.written[key] += cursor.rowcount
                _, rows = self._open.get(conn, (key, 0))
                self._open[conn] = (key, rows + cursor.rowcount)

        return count

    def _on_commit(self, key: str) -> Callable[..., None]:
        def commit(conn: Connection, *_args: Any) -> None:
            _, rows = self._open.pop(conn, (key, 0))
            book = self.committed if self.settling else self.committed_by_code
            book[key] += rows
            self._last_commit = (conn, key, rows, book)

        return commit

    def _on_rollback(self, key: str) -> Callable[..., None]:
        def rollback(conn: Connection, *_args: Any) -> None:
            _, rows = self._open.pop(conn, (key, 0))
            self.rolled_back[key] += rows
            self._last_commit = None

        return rollback

    def _on_error(self, context: Any) -> None:
        last = self._last_commit
        if last is not None and context.connection is last[0] and context.statement is None:
            conn, key, rows, book = last  # the COMMIT itself failed: the rows were not committed
            book[key] -= rows
            self._open[conn] = (key, rows)
            self._last_commit = None
