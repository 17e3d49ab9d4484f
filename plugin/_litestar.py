"""The Litestar internals the plugin leans on, kept in one place (STYLE principle 13), each pinned by a test.

- ``ScopeState.is_cached``: keeps the response cache from storing a response whose commit failed
  (``tests/plugin/test_transactions.py::test_a_response_whose_commit_failed_is_not_kept_by_the_response_cache``).
- ``KwargsModel.dependency_batches``: a handler's resolved dependency graph, read once per route when it is
  registered (``tests/plugin/test_routes.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.utils.scope.state import ScopeState

if TYPE_CHECKING:
    from litestar.types import Scope

__all__ = ("dependency_keys", "keep_out_of_response_cache")


def keep_out_of_response_cache(scope: Scope) -> None:
    """Keep Litestar's response cache from storing the response now being sent.

    The cache middleware sits inside the transaction middleware: it records a response's messages before
    the commit decides it and stores them when the last body message passes. It records nothing for a
    response it believes was served from the cache, which is what this flag says.
    """
    ScopeState.from_scope(scope).is_cached = True


def dependency_keys(kwargs_model: Any) -> list[str] | None:
    """The keys of every dependency in a handler's resolved graph (all layers, transitively), or ``None``
    when the graph is not of the shape this was written for."""
    batches = getattr(kwargs_model, "dependency_batches", None)
    if not isinstance(batches, list):
        return None
    try:
        return [dependency.key for batch in batches for dependency in batch]
    except (AttributeError, TypeError):
        return None
