"""An opt-in health route: readiness runs the checks of ``db check``; liveness touches nothing.

Example::

    plugin = SQLAlchemyPlugin(config=config)
    app = Litestar(route_handlers=[..., plugin.health_route("/health/db")], plugins=[plugin])

``GET /health/db`` checks every bind concurrently (the same :func:`plugin.checks.check_binds` as
``litestar db check``) on the app's own engines and answers 200 when all pass, 503 otherwise, with a
JSON object per bind. Results are kept for ``cache_seconds``, so a probe every second does not reach
the databases every second; concurrent requests share one run. Pool figures are read on every request
(they cost no database access). ``GET /health/db/live`` answers 200 without touching any database.

The handlers take no parameters, so they never get a session and the transaction middleware has
nothing to do for them. Bodies carry no URL and no password (driver errors are redacted).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar import Response, Router, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy.pool import QueuePool

from plugin.checks import CheckReport, check_binds
from plugin.exceptions import ConfigurationError
from plugin.migrations import ScriptCache

if TYPE_CHECKING:
    from sqlalchemy.pool import Pool

    from plugin.checks import BindCheck
    from plugin.plugin import SQLAlchemyPlugin

__all__ = ("health_router", "pool_figures")


def pool_figures(pool: Pool) -> dict[str, Any]:
    """What a pool holds right now, read without touching the database.

    ``overflow`` counts connections open beyond ``size``. Pools without a queue (``NullPool``,
    ``StaticPool``, ...) keep no such figures: they are ``None``.
    """
    if not isinstance(pool, QueuePool):
        return {"class": type(pool).__name__, "size": None, "checked_in": None, "checked_out": None, "overflow": None}
    return {
        "class": type(pool).__name__,
        "size": pool.size(),
        "checked_in": pool.checkedin(),
        "checked_out": pool.checkedout(),
        # QueuePool.overflow() starts at -size and counts up with each connection it opens.
        "overflow": max(0, pool.overflow()),
    }


@dataclass(frozen=True)
class _Result:
    report: CheckReport | None
    error: str | None
    at: float
    """``time.monotonic()`` when the run ended."""


class _Runner:
    """Runs the checks at most once per ``cache_seconds``; requests arriving meanwhile share the run."""

    def __init__(
        self, plugin: SQLAlchemyPlugin[Any], *, timeout: float, cache_seconds: float, schema: bool, migrations: bool
    ) -> None:
        self._plugin = plugin
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._schema = schema
        self._migrations = migrations
        self._scripts = ScriptCache()
        self._last: _Result | None = None
        self._running: asyncio.Task[_Result] | None = None

    async def _run(self) -> _Result:
        plugin = self._plugin
        try:
            report = await check_binds(
                plugin.engines,
                plugin.router,
                timeout=self._timeout,
                schema=self._schema,
                migrations=plugin.config.migration_configs if self._migrations else None,
                scripts=self._scripts,
            )
        except Exception as exc:  # e.g. the engines are not started: unhealthy, and say why
            result = _Result(None, f"{type(exc).__name__}: {exc}", time.monotonic())
        else:
            result = _Result(report, None, time.monotonic())
        self._last = result  # here, not in the waiters: a run whose waiters all left still counts
        return result

    async def result(self) -> _Result:
        last = self._last
        if last is not None and time.monotonic() - last.at < self._cache_seconds:
            return last
        running = self._running
        if running is None or running.done() or running.get_loop() is not asyncio.get_running_loop():
            running = self._running = asyncio.ensure_future(self._run())
        # shield: a client that goes away must not cancel the run the other requests wait for.
        return await asyncio.shield(running)


def _bind_body(check: BindCheck, pool: dict[str, Any] | None, *, schema: bool, migrations: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ok": check.ok,
        "latency_ms": None if check.latency_ms is None else round(check.latency_ms, 3),
        "connect_ms": None if check.connect_ms is None else round(check.connect_ms, 3),
        "server": check.server,
        "error": check.error,
        "pool": pool,
        # Part of every check (they fail it), so always shown: a 503 must say why.
        "prepared_transactions": [{"xid": p.xid, "commit": p.commit, "rollback": p.rollback} for p in check.prepared],
    }
    if schema:
        body["schema"] = {
            "tables": check.tables,
            "missing_tables": list(check.missing_tables),
            "missing_columns": list(check.missing_columns),
        }
    if migrations:
        body["migrations"] = check.migrations.as_dict() if check.migrations else None
    return body


def health_router(
    plugin: SQLAlchemyPlugin[Any],
    path: str = "/health/db",
    *,
    live_path: str | None = None,
    timeout: float = 2.0,
    cache_seconds: float = 2.0,
    schema: bool = False,
    migrations: bool = False,
    include_in_schema: bool = False,
) -> Router:
    """The readiness route at ``path`` and the liveness route at ``live_path`` (``<path>/live``).

    Args:
        plugin: the app's plugin; its engines (started by the app's lifespan) are the ones checked.
        path: where readiness answers.
        live_path: where liveness answers (default ``<path>/live``).
        timeout: seconds each bind may take to connect and answer; a request ends within about that.
        cache_seconds: how long a result is reused (0: every request checks).
        schema: also compare tables with the models, as ``db check`` does.
        migrations: also require each bind with migrations configured to be at its head.
        include_in_schema: list the routes in the app's OpenAPI schema.
    """
    if timeout <= 0 or cache_seconds < 0:
        raise ConfigurationError(
            f"health_route(timeout={timeout!r}, cache_seconds={cache_seconds!r}): timeout must be > 0 and "
            "cache_seconds >= 0"
        )
    runner = _Runner(plugin, timeout=timeout, cache_seconds=cache_seconds, schema=schema, migrations=migrations)

    @get(path, include_in_schema=include_in_schema, cache=False)
    async def readiness() -> Response[dict[str, Any]]:
        result = await runner.result()
        engines = plugin.engines.engines
        binds = {}
        if result.report is not None:
            for check in result.report.binds:
                engine = engines.get(check.bind)
                pool = pool_figures(engine.pool) if engine is not None else None
                binds[check.bind] = _bind_body(check, pool, schema=schema, migrations=migrations)
        ok = result.report is not None and result.report.ok
        # Failures that belong to no bind (db check prints them under its table): a 503 must say why.
        problems = [] if result.report is None else [p.describe(list(binds)) for p in result.report.unknown_bind_keys]
        body = {
            "ok": ok,
            "age_s": round(time.monotonic() - result.at, 3),
            "timeout_s": timeout,
            "error": result.error,
            "problems": problems,
            "binds": binds,
        }
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)

    @get(live_path or f"{path.rstrip('/')}/live", include_in_schema=include_in_schema)
    async def liveness() -> dict[str, str]:
        return {"status": "alive"}

    return Router(path="/", route_handlers=[readiness, liveness])
