"""The one Litestar internal the transaction middleware leans on, kept in one place (see STYLE principle 13).

``tests/plugin/test_transactions.py::test_a_response_whose_commit_failed_is_not_kept_by_the_response_cache``
fails when it changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.utils.scope.state import ScopeState

if TYPE_CHECKING:
    from litestar.types import Scope

__all__ = ("keep_out_of_response_cache",)


def keep_out_of_response_cache(scope: Scope) -> None:
    """Keep Litestar's response cache from storing the response now being sent.

    The cache middleware sits inside the transaction middleware: it records a response's messages before
    the commit decides it and stores them when the last body message passes. It records nothing for a
    response it believes was served from the cache, which is what this flag says.
    """
    ScopeState.from_scope(scope).is_cached = True
