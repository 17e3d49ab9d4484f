"""A connect timeout for ``db shell`` and ``db run`` (``--timeout``): a silent server fails fast.

Drivers' own connect timeouts do not all cover the whole handshake: asyncmy's ``connect_timeout``
bounds the TCP connect only, and then waits for the server's greeting forever (a port that accepts and
never answers kept ``db run`` waiting for minutes). So for async drivers every new connection is made
through SQLAlchemy's ``async_creator_fn`` connect parameter (what ``create_async_engine(async_creator=)``
uses), set in a ``do_connect`` listener, which awaits the driver's own public ``connect`` under
:func:`asyncio.timeout`-style cancellation. Sync drivers get their ``connect_timeout`` argument.

Only connecting is bounded; a query may run as long as it needs.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from plugin.exceptions import AlchemyError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine

    from plugin import SQLAlchemyPlugin

__all__ = ("ConnectTimeoutError", "connect_timeouts")


class ConnectTimeoutError(AlchemyError, TimeoutError):
    """A bind's server did not complete a connection within ``--timeout`` seconds."""


def _async_connect(driver: str) -> Callable[..., Any] | None:
    """The driver's public async ``connect`` (what SQLAlchemy's adapter calls by default)."""
    if driver == "asyncpg":
        import asyncpg  # type: ignore[import-untyped]

        return asyncpg.connect  # type: ignore[no-any-return]
    if driver == "asyncmy":
        import asyncmy

        return asyncmy.connect
    if driver == "psycopg_async":
        import psycopg

        return psycopg.AsyncConnection.connect
    return None  # aiosqlite opens a file; unknown drivers keep their own behaviour


_SYNC_TIMEOUT_ARGUMENT = {"psycopg": "connect_timeout", "psycopg2": "connect_timeout", "pymysql": "connect_timeout"}


def _listener(key: str, engine: Engine, seconds: float) -> Callable[..., None] | None:
    dialect = engine.dialect
    where = f"{engine.url.host or 'localhost'}:{engine.url.port or 'default port'}"
    message = (
        f"bind {key!r}: {where} did not complete a connection within {seconds:g} s (connect timed out); "
        "check that the server is up and answering, or give it longer with --timeout"
    )
    if getattr(dialect, "is_async", False):
        connect = _async_connect(dialect.driver)
        if connect is None:
            return None

        async def timed(*args: Any, **kwargs: Any) -> Any:
            try:
                return await asyncio.wait_for(connect(*args, **kwargs), seconds)
            except asyncio.TimeoutError:
                raise ConnectTimeoutError(message) from None

        def use_timed(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
            cparams.setdefault("async_creator_fn", timed)

        return use_timed
    argument = _SYNC_TIMEOUT_ARGUMENT.get(dialect.driver)
    if argument is None:
        return None

    def use_argument(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.setdefault(argument, max(2, math.ceil(seconds)))  # whole seconds; libpq's minimum is 2

    return use_argument


@contextmanager
def connect_timeouts(plugin: SQLAlchemyPlugin[Any], seconds: float) -> Iterator[None]:
    """While inside, every new connection of the plugin's (started) engines must be made in ``seconds``."""
    added: list[tuple[Engine, Callable[..., None]]] = []
    for key, engine in plugin.engines.every_sync_engine():
        if (listener := _listener(key, engine, seconds)) is not None:
            event.listen(engine, "do_connect", listener)
            added.append((engine, listener))
    try:
        yield
    finally:
        for engine, listener in added:
            event.remove(engine, "do_connect", listener)
