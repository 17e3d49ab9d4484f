"""What the plugin registers: dependency keys and type names that resolve without user help.

This module imports the session and engine types only for type checkers, as many apps do: the string
annotations must still resolve, from the plugin's signature namespace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency
from litestar.exceptions import LitestarDeprecationWarning
from litestar.testing import AsyncTestClient, TestClient

from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig
from tests.plugin.models import Account
from tests.plugin.user_types import add_engine, open_plain_session, open_session

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

pytestmark = pytest.mark.anyio


@get("/types")
async def types(
    db_session: NamedDependency[AsyncSession],
    db_engine: NamedDependency[AsyncEngine],
    audit_db_session: NamedDependency[AsyncSession],
    audit_db_engine: NamedDependency[AsyncEngine],
) -> dict[str, str]:
    return {
        "db_session": type(db_session).__name__,
        "db_engine": type(db_engine).__name__,
        "audit_db_session": type(audit_db_session).__name__,
        "audit_db_engine": type(audit_db_engine).__name__,
        "audit_database": str(audit_db_engine.url.database),
    }


async def test_async_types_resolve_from_the_plugin_namespace(tmp_path: Path) -> None:
    config = SQLAlchemyAsyncConfig(
        binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db", "audit": f"sqlite+aiosqlite:///{tmp_path}/b.db"},
        base=(),
    )
    app = Litestar([types], plugins=[SQLAlchemyPlugin(config=config)])
    async with AsyncTestClient(app) as client:
        assert (await client.get("/types")).json() == {
            "db_session": "AsyncRoutingSession",
            "db_engine": "AsyncEngine",
            "audit_db_session": "AsyncRoutingSession",
            "audit_db_engine": "AsyncEngine",
            "audit_database": f"{tmp_path}/b.db",
        }


@get("/sync-types", sync_to_thread=True)
def sync_types(db_session: NamedDependency[Session], db_engine: NamedDependency[Engine]) -> dict[str, str]:
    return {"db_session": type(db_session).__name__, "db_engine": type(db_engine).__name__}


def test_sync_types_resolve_from_the_plugin_namespace(tmp_path: Path) -> None:
    config = SQLAlchemySyncConfig(binds={"default": f"sqlite:///{tmp_path}/a.db"}, base=())
    with TestClient(Litestar([sync_types], plugins=[SQLAlchemyPlugin(config=config)])) as client:
        assert client.get("/sync-types").json() == {"db_session": "SyncRoutingSession", "db_engine": "Engine"}


async def test_plain_annotations_work_too(tmp_path: Path) -> None:
    """``db_session: AsyncSession`` without NamedDependency: Litestar 2.x infers it (and warns about 3.0)."""

    @get("/plain")
    async def plain(db_session: AsyncSession) -> str:
        return type(db_session).__name__

    plugin = SQLAlchemyPlugin(SQLAlchemyAsyncConfig(binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}, base=()))
    with pytest.warns(LitestarDeprecationWarning, match="Inferred dependency field 'db_session'"):
        app = Litestar([plain], plugins=[plugin])

    async with AsyncTestClient(app) as client:
        assert (await client.get("/plain")).text == "AsyncRoutingSession"


@get("/custom-keys")
async def custom_keys(session: NamedDependency[AsyncSession], reports_session: NamedDependency[AsyncSession]) -> str:
    return f"{type(session).__name__} {type(reports_session).__name__}"


async def test_dependency_keys_follow_session_key(tmp_path: Path) -> None:
    config = SQLAlchemyAsyncConfig(
        binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db", "reports": f"sqlite+aiosqlite:///{tmp_path}/b.db"},
        base=(),
        session_key="session",
        engine_key="engine",
    )
    assert [key for key, _ in config.dependency_keys()] == ["session", "engine", "reports_session", "reports_engine"]
    async with AsyncTestClient(Litestar([custom_keys], plugins=[SQLAlchemyPlugin(config=config)])) as client:
        assert (await client.get("/custom-keys")).text == "AsyncRoutingSession AsyncRoutingSession"


def test_sync_scripts_use_plain_with(tmp_path: Path) -> None:
    from tests.plugin.models import Base

    plugin = SQLAlchemyPlugin(
        config=SQLAlchemySyncConfig(
            binds={"default": f"sqlite:///{tmp_path}/a.db", "logs": f"sqlite:///{tmp_path}/b.db"},
            base=Base,
            create_all=True,
        )
    )
    with plugin.lifespan():
        with plugin.transaction() as session:
            session.add(Account(name="script"))
        with plugin.session() as session:
            assert [a.name for a in session.query(Account)] == ["script"]
    assert plugin.engines.state == "closed"


def _user_types_app(tmp_path: Path, *handlers: Any) -> Litestar:
    config = SQLAlchemyAsyncConfig(binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}, base=())
    return Litestar([open_session, add_engine, *handlers], plugins=[SQLAlchemyPlugin(config=config)])


async def test_user_types_named_session_and_engine_are_the_users(tmp_path: Path) -> None:
    """tests/plugin/user_types.py defines dataclasses ``Session`` and ``Engine`` and takes them as bodies."""
    async with AsyncTestClient(_user_types_app(tmp_path)) as client:
        session = await client.post("/sessions", json={"user": "ada", "token": "t0k"})
        engine = await client.post("/engines", json={"model": "V8", "horsepower": 450})

    assert (session.status_code, session.json()) == (
        201,
        {"body": "Session", "user": "ada", "db_session": "AsyncRoutingSession"},
    )
    assert (engine.status_code, engine.json()) == (
        201,
        {"body": "Engine", "horsepower": 450, "db_engine": "AsyncEngine"},
    )


def test_type_checking_names_still_resolve_next_to_user_types(tmp_path: Path) -> None:
    """This module imports ``Session``/``Engine`` only for type checkers; in an app that also has a handler
    whose module defines its own ``Session`` and ``Engine``, each handler resolves the names it means."""
    config = SQLAlchemySyncConfig(binds={"default": f"sqlite:///{tmp_path}/a.db"}, base=())
    with TestClient(Litestar([open_plain_session, sync_types], plugins=[SQLAlchemyPlugin(config=config)])) as client:
        body = client.post("/plain-sessions", json={"user": "bob", "token": "x"})
        names = client.get("/sync-types")

    assert (body.status_code, body.text) == (201, "tests.plugin.user_types.Session for bob")
    assert names.json() == {"db_session": "SyncRoutingSession", "db_engine": "Engine"}


async def test_user_types_in_routers_and_controllers_are_found_too(tmp_path: Path) -> None:
    from litestar import Router

    from tests.plugin.user_types import GarageController

    config = SQLAlchemyAsyncConfig(binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}, base=())
    app = Litestar(
        [Router("/nested", route_handlers=[open_session]), GarageController], plugins=[SQLAlchemyPlugin(config=config)]
    )
    async with AsyncTestClient(app) as client:
        session = await client.post("/nested/sessions", json={"user": "cy", "token": "t"})
        engine = await client.post("/garage", json={"model": "V6", "horsepower": 300})

    assert (session.status_code, session.json()["body"]) == (201, "Session")
    assert (engine.status_code, engine.text) == (201, "Engine V6")
