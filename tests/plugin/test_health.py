"""The opt-in health routes: readiness runs db check's checks (200/503), liveness touches nothing."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import ConfigurationError, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig
from tests.alembic_scripts import build
from tests.cli.apps import ShopBase
from tests.cli.helpers import create_tables
from tests.plugin.asgi import http

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.databases import Database

pytestmark = pytest.mark.anyio

PASSWORD = "h3alth-secret"


def make_app(binds: dict[str, str], *, sync: bool = False, **options: Any) -> tuple[Litestar, SQLAlchemyPlugin[Any]]:
    migrations = options.pop("migrations_config", None)
    config_class = SQLAlchemySyncConfig if sync else SQLAlchemyAsyncConfig
    plugin = SQLAlchemyPlugin(config=config_class(binds=binds, base=ShopBase, migrations=migrations))

    @get("/hello", sync_to_thread=False)
    def hello() -> str:
        return "hi"

    return Litestar([hello, plugin.health_route("/health/db", **options)], plugins=[plugin]), plugin


def count_statements(plugin: SQLAlchemyPlugin[Any], bind: str) -> list[str]:
    """Every statement the bind's engine runs from now on."""
    seen: list[str] = []
    event.listen(plugin.engines.sync_engine(bind), "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


@pytest.mark.postgresql
@pytest.mark.mariadb
async def test_all_binds_up_is_200_with_a_body_per_bind(new_db: Callable[[str], Database]) -> None:
    binds = {
        "default": create_tables(new_db("sqlite"), ShopBase),
        "pg": new_db("postgresql").url(password=PASSWORD).render_as_string(hide_password=False),
        "maria": new_db("mariadb").url(password=PASSWORD).render_as_string(hide_password=False),
    }
    app, _ = make_app(binds)
    async with AsyncTestClient(app) as client:
        response = await client.get("/health/db")

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["error"] is None
    assert body["problems"] == []
    assert list(body["binds"]) == ["default", "pg", "maria"]
    assert body["binds"]["default"]["server"].startswith("SQLite 3.")
    assert body["binds"]["pg"]["server"].startswith("PostgreSQL 15.")
    assert body["binds"]["maria"]["server"].startswith("MariaDB 10.")
    for bind in body["binds"].values():
        assert bind["ok"] is True
        assert bind["error"] is None
        assert bind["latency_ms"] > 0
        assert bind["pool"] == {
            "class": "AsyncAdaptedQueuePool",
            "size": 5,
            "checked_in": 1,  # the check's own connection, back in the pool
            "checked_out": 0,
            "overflow": 0,
        }
        assert bind["prepared_transactions"] == []
        assert "schema" not in bind
        assert "migrations" not in bind
    assert PASSWORD not in response.text
    assert "url" not in response.text


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_stopped_and_silent_servers_are_503_within_the_timeout(
    sync: bool, tmp_path: Path, refused_port: int, silent_port: int
) -> None:
    driver = "postgresql+psycopg" if sync else "postgresql+asyncpg"
    maria = "mysql+pymysql" if sync else "mysql+asyncmy"
    binds = {
        "default": f"sqlite{'' if sync else '+aiosqlite'}:///{tmp_path}/ok.db",
        "stopped": f"{driver}://app:{PASSWORD}@127.0.0.1:{refused_port}/app",
        "hung": f"{driver}://app:{PASSWORD}@127.0.0.1:{silent_port}/app",
        "hung_maria": f"{maria}://app:{PASSWORD}@127.0.0.1:{silent_port}/app",
    }
    app, _ = make_app(binds, sync=sync, timeout=1.0)
    async with AsyncTestClient(app) as client:
        started = time.monotonic()
        response = await client.get("/health/db")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert elapsed < 1 + 1
    body = response.json()
    assert body["ok"] is False
    assert body["binds"]["default"]["ok"] is True
    assert body["binds"]["default"]["server"].startswith("SQLite")
    for hung in ("hung", "hung_maria"):
        assert body["binds"][hung] == {
            **body["binds"][hung],
            "ok": False,
            "error": "no answer within 1 s (timed out)",
            "server": None,
            "latency_ms": None,
        }
    assert body["binds"]["stopped"]["ok"] is False
    refused = "Connection refused" if sync else "Connect call failed"
    assert refused in body["binds"]["stopped"]["error"]
    assert body["binds"]["stopped"]["pool"]["class"] == ("QueuePool" if sync else "AsyncAdaptedQueuePool")
    assert PASSWORD not in response.text


async def test_results_are_reused_within_the_cache_window(tmp_path: Path) -> None:
    app, plugin = make_app({"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}, cache_seconds=0.5)
    async with AsyncTestClient(app) as client:
        statements = count_statements(plugin, "default")
        first = (await client.get("/health/db")).json()
        ran = len(statements)
        second = (await client.get("/health/db")).json()
        within = len(statements)
        await asyncio.sleep(0.6)
        third = (await client.get("/health/db")).json()

    assert ran > 0
    assert within == ran  # the second request did not reach the database
    assert first["age_s"] < 0.5
    assert second["age_s"] >= first["age_s"]
    assert second["binds"]["default"]["latency_ms"] == first["binds"]["default"]["latency_ms"]
    assert len(statements) == 2 * ran  # after the window, checked again
    assert third["age_s"] < 0.5


async def test_concurrent_requests_share_one_run(tmp_path: Path, silent_port: int) -> None:
    binds = {
        "default": f"sqlite+aiosqlite:///{tmp_path}/a.db",
        "hung": f"postgresql+asyncpg://app@127.0.0.1:{silent_port}/app",
    }
    timeout = 1.0
    app, plugin = make_app(binds, timeout=timeout, cache_seconds=0)
    async with app.lifespan():  # requests in this task's loop, really at the same time
        statements = count_statements(plugin, "default")
        started = time.monotonic()
        exchanges = await asyncio.gather(*(http(app, "GET", "/health/db") for _ in range(5)))
        elapsed = time.monotonic() - started

    assert [e.status for e in exchanges] == [503] * 5
    assert len(statements) == 1  # one run's "select 1" for all five requests
    # nobody waited for a second run after the first: that would take two timeouts. (With a 0.5 s timeout and
    # a bound of 0.9 s, a loaded CI machine once took 0.97 s for the one run; alone it takes 0.505 s.)
    assert elapsed < 2 * timeout - 0.1


async def test_a_request_that_goes_away_leaves_the_run_to_the_others(tmp_path: Path, silent_port: int) -> None:
    binds = {
        "default": f"sqlite+aiosqlite:///{tmp_path}/a.db",
        "hung": f"postgresql+asyncpg://app@127.0.0.1:{silent_port}/app",
    }
    app, plugin = make_app(binds, timeout=0.5, cache_seconds=30)
    async with app.lifespan():
        statements = count_statements(plugin, "default")
        leaving = asyncio.ensure_future(http(app, "GET", "/health/db"))
        await asyncio.sleep(0.1)
        leaving.cancel()  # what a server does when it gives up on a request
        with pytest.raises(asyncio.CancelledError):
            await leaving
        await asyncio.sleep(0.6)  # the run it started ends anyway, and is kept
        later = await http(app, "GET", "/health/db")

    assert later.status == 503
    assert later.json()["binds"]["hung"]["error"] == "no answer within 0.5 s (timed out)"
    assert later.json()["age_s"] > 0
    assert len(statements) == 1  # one run, started by the request that left


async def test_engines_not_started_is_503_with_the_reason(tmp_path: Path) -> None:
    app, _ = make_app({"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"})
    exchange = await http(app, "GET", "/health/db")  # no lifespan: the engines never started

    assert exchange.status == 503
    assert exchange.json()["error"].startswith("LifecycleError: the engines are not started yet")
    assert exchange.json()["binds"] == {}


async def test_a_failure_of_no_bind_is_named_in_problems(tmp_path: Path) -> None:
    """A model imported after startup whose bind key is not configured fails db check, and the route."""

    class LateBase(DeclarativeBase):
        pass

    plugin = SQLAlchemyPlugin(
        config=SQLAlchemyAsyncConfig(binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}, base=LateBase)
    )
    app = Litestar([plugin.health_route()], plugins=[plugin])
    try:
        async with AsyncTestClient(app) as client:

            class Late(LateBase):
                __tablename__ = "late"
                __bind_key__ = "reports"
                id: Mapped[int] = mapped_column(primary_key=True)

            response = await client.get("/health/db")
    finally:
        LateBase.registry.dispose()

    assert response.status_code == 503
    body = response.json()
    assert body["binds"]["default"]["ok"] is True
    assert body["problems"] == [
        "model 'Late' has __bind_key__ = 'reports', which is not a configured bind (configured: 'default'); "
        "add 'reports' to binds= or fix the model"
    ]


async def test_pool_figures_are_the_apps_own_and_current(tmp_path: Path) -> None:
    app, plugin = make_app({"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}, cache_seconds=30)
    async with AsyncTestClient(app) as client:
        before = (await client.get("/health/db")).json()["binds"]["default"]["pool"]
        async with plugin.engines.engine("default").connect() as held:  # type: ignore[union-attr]
            await held.exec_driver_sql("select 1")
            during = (await client.get("/health/db")).json()

    assert before["checked_out"] == 0
    assert during["binds"]["default"]["pool"]["checked_out"] == 1  # read now, though the checks are cached
    assert during["age_s"] > 0


async def test_liveness_never_touches_the_databases(tmp_path: Path, silent_port: int) -> None:
    app, plugin = make_app({"default": f"postgresql+asyncpg://app@127.0.0.1:{silent_port}/app"}, timeout=5)
    async with AsyncTestClient(app) as client:
        connects: list[object] = []
        event.listen(plugin.engines.sync_engine("default"), "connect", lambda *a: connects.append(a))
        started = time.monotonic()
        response = await client.get("/health/db/live")
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert elapsed < 0.5
    assert connects == []
    assert plugin.engines.state == "closed"


async def test_schema_and_migrations_on_request(tmp_path: Path, new_db: Callable[[str], Database]) -> None:
    db = new_db("sqlite")
    scripts = build(tmp_path / "scripts", "per_bind", ["default"])
    scripts.stamp("default", db.url(sync=True), "default2")
    binds = {"default": str(db.url())}
    app, plugin = make_app(binds, schema=True, migrations=True, migrations_config=scripts.migrations)
    plain, _ = make_app(binds, migrations_config=scripts.migrations)
    async with AsyncTestClient(app) as client:
        checkouts: list[object] = []
        event.listen(plugin.engines.sync_engine("default"), "checkout", lambda *a: checkouts.append(a))
        response = await client.get("/health/db")
    async with AsyncTestClient(plain) as client:
        connectivity_only = await client.get("/health/db")

    assert response.status_code == 503
    bind = response.json()["binds"]["default"]
    assert bind["schema"] == {"tables": 1, "missing_tables": ["customers"], "missing_columns": []}
    assert bind["migrations"]["status"] == "pending"
    assert [p["revision"] for p in bind["migrations"]["pending"]] == ["default3"]
    assert len(checkouts) == 1  # schema and migrations read on the check's own connection
    assert connectivity_only.status_code == 200


async def test_the_routes_declare_no_dependency_and_leave_other_routes_alone(tmp_path: Path) -> None:
    app, _ = make_app({"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"})
    handlers = [
        h
        for route in app.routes
        if route.path.startswith("/health")
        for h in route.route_handlers  # type: ignore[attr-defined]
        if h.handler_name != "options_handler"  # Litestar's own CORS preflight answer
    ]
    assert [h.handler_name for h in handlers] == ["readiness", "liveness"]
    assert [h.parsed_fn_signature.parameters for h in handlers] == [{}, {}]  # so never a session
    async with AsyncTestClient(app) as client:
        assert (await client.get("/hello")).text == "hi"


@pytest.mark.parametrize("options", [{"timeout": 0}, {"cache_seconds": -1}])
def test_bad_options_are_one_clear_error(options: dict[str, float], tmp_path: Path) -> None:
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}))
    with pytest.raises(ConfigurationError, match="timeout must be > 0 and cache_seconds >= 0"):
        plugin.health_route(**options)  # type: ignore[arg-type]
