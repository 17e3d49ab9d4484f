"""The transaction policy: whether a unit of work commits, from its final HTTP status or its success.

A pure value object (no I/O): requests, ``plugin.transaction()`` and ``litestar db run`` share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from plugin.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Set

__all__ = ("SUCCESS_STATUS", "TransactionPolicy")

SUCCESS_STATUS = 200
"""The status a successful unit of work outside HTTP (a script, ``db run``) is judged by."""


def _statuses(value: Iterable[int]) -> frozenset[int]:
    statuses = frozenset(value)
    if bad := sorted(s for s in statuses if not (isinstance(s, int) and 100 <= s <= 599)):
        raise ConfigurationError(f"{bad} are not HTTP status codes; use integers from 100 to 599")
    return statuses


@dataclass(frozen=True)
class TransactionPolicy:
    """When a unit of work commits. One object serves requests and ``litestar db run``.

    Example::

        TransactionPolicy(commit_on_redirect=True, rollback_statuses={207})
    """

    mode: Literal["autocommit", "manual"] = "autocommit"
    """``autocommit``: commit on success, roll back otherwise. ``manual``: never commit; the handler
    commits itself and whatever it left open is rolled back."""
    commit_on_redirect: bool = False
    """Also commit when the final status is 3xx."""
    commit_statuses: Set[int] = frozenset()
    """Extra statuses that commit (e.g. ``{422}`` for an API that stores failed attempts)."""
    rollback_statuses: Set[int] = frozenset()
    """Statuses that roll back even though they would commit (e.g. ``{202}``)."""

    def __post_init__(self) -> None:
        if self.mode not in ("autocommit", "manual"):
            raise ConfigurationError(f"transaction mode {self.mode!r} is unknown; use 'autocommit' or 'manual'")
        commit, rollback = _statuses(self.commit_statuses), _statuses(self.rollback_statuses)
        if overlap := sorted(commit & rollback):
            raise ConfigurationError(
                f"status {', '.join(map(str, overlap))} is in both commit_statuses and rollback_statuses; "
                "keep each status in one of them"
            )
        object.__setattr__(self, "commit_statuses", commit)
        object.__setattr__(self, "rollback_statuses", rollback)

    def should_commit(self, status: int) -> bool:
        """Whether a unit of work that ended with ``status`` (and did not raise) commits."""
        if self.mode == "manual" or status in self.rollback_statuses:
            return False
        return (
            200 <= status < 300 or (self.commit_on_redirect and 300 <= status < 400) or status in self.commit_statuses
        )
