"""Engines: created at startup, every one disposed at shutdown, clear errors in the wrong state."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest
from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from plugin import BindKeyError, LifecycleError, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.plugin import asgi
from tests.plugin.models import (
    Account,
    AuditEntry,
    Base,
    Metric,
    MetricsBase,
    logs_metadata,
    make_app,
    make_plugin,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.databases import Database

pytestmark = pytest.mark.anyio


@post("/touch-all/{n:int}")
async def touch_all(n: FromPath[int], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name=f"a{n}"), AuditEntry(message="m"), Metric(value=n)])


@pytest.mark.postgresql
@pytest.mark.mariadb
async def test_every_bind_engine_is_disposed_at_shutdown(new_db: Callable[[str], Database]) -> None:
    databases = {"default": new_db("sqlite"), "logs": new_db("postgresql"), "metrics": new_db("mariadb")}
    opened: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    engines = {}
    for key, db in databases.items():  # ready engines, so the counters see every connection from the start
        engines[key] = engine = create_async_engine(db.url())
        event.listen(engine.sync_engine, "connect", lambda *_, key=key: opened.update([key]))
        event.listen(engine.sync_engine, "close", lambda *_, key=key: closed.update([key]))
    config = SQLAlchemyAsyncConfig(binds=engines, base=(Base, logs_metadata, MetricsBase), create_all=True)
    plugin = SQLAlchemyPlugin(config=config)

    async with AsyncTestClient(make_app(plugin, [touch_all])) as client:
        assert set(plugin.engines.engines) == {"default", "logs", "metrics"}
        for n in range(3):
            assert (await client.post(f"/touch-all/{n}")).status_code == 201
        # pooled connections stay open while the app runs
        assert databases["logs"].open_connections() >= 1
        assert databases["metrics"].open_connections() >= 1

    assert plugin.engines.state == "closed"
    assert databases["logs"].open_connections() == 0
    assert databases["metrics"].open_connections() == 0
    assert set(opened) == {"default", "logs", "metrics"}
    assert closed == opened


async def test_ready_engines_are_adopted_and_disposed_too(tmp_path: object) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    disposed: list[bool] = []
    event.listen(engine.sync_engine, "engine_disposed", lambda _engine: disposed.append(True))
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": engine}, base=()))

    async with plugin.lifespan():
        assert plugin.engines.engine("default") is engine

    assert disposed == [True]


async def test_lifecycle_errors_say_what_state_the_engines_are_in() -> None:
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite://"}, base=()))

    with pytest.raises(LifecycleError) as raised:
        plugin.engines.engine("default")
    assert str(raised.value) == (
        "the engines are not started yet; use sessions inside the app's lifespan, or wrap a script in "
        "`async with plugin.lifespan():`"
    )

    async with plugin.lifespan():
        with pytest.raises(BindKeyError) as missing:
            plugin.engines.engine("logs")
        assert str(missing.value) == "bind 'logs' is not configured (configured: 'default')"
        with pytest.raises(LifecycleError, match=r"^the engines are already started; start them once"):
            plugin.engines.start()

    with pytest.raises(LifecycleError) as after:
        plugin.engines.engine("default")
    assert str(after.value) == ("the engines were disposed at shutdown; start the app (or plugin.lifespan()) again")

    async with plugin.lifespan():  # an app may be started again (tests do)
        assert plugin.engines.state == "open"


async def test_a_session_used_before_startup_says_so() -> None:
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite://"}, base=()))
    async with plugin.session() as session:
        with pytest.raises(LifecycleError, match=r"^the engines are not started yet"):
            await session.get(Account, 1)


async def test_entering_the_lifespan_again_while_the_app_runs_changes_nothing(
    new_db: Callable[[str], Database],
) -> None:
    """A worker that wraps itself in plugin.lifespan() inside a running app is refused, harmlessly."""
    db = new_db("sqlite")
    plugin = make_plugin({"default": db, "logs": new_db("sqlite")})
    app = make_app(plugin, [touch_one])
    async with app.lifespan():
        with pytest.raises(LifecycleError, match=r"^the engines are already started"):
            async with plugin.lifespan():
                pass
        assert plugin.engines.state == "open"
        assert (await asgi.http(app, "POST", "/touch-one")).status == 201
    assert db.fetch("select name from accounts") == [("still-works",)]


@post("/touch-one")
async def touch_one(db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name="still-works"))
