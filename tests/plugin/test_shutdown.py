"""Shutdown: the app's own on_shutdown hooks and pending event listeners still reach the databases.

Litestar leaves its lifespan managers before it drains event listeners and runs on_shutdown hooks; the
plugin disposes its engines in an on_shutdown hook added last, so both run against live engines.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, Request, post
from litestar.events import listener
from litestar.params import FromPath
from litestar.testing import AsyncTestClient, TestClient
from sqlalchemy import insert

from tests.databases import KINDS
from tests.plugin.models import Account, AuditEntry, events, make_plugin

if TYPE_CHECKING:
    from collections.abc import Callable

    from plugin import SQLAlchemyPlugin
    from tests.databases import Database

pytestmark = pytest.mark.parametrize("kind", KINDS)


def names(db: Database, sql: str) -> list[str]:
    return [value for (value,) in db.fetch(sql)]


def shutdown_app(plugin: SQLAlchemyPlugin[Any]) -> Litestar:
    async def record_shutdown() -> None:
        async with plugin.transaction() as session:
            session.add(AuditEntry(message="shut down"))

    @listener("signed_up")
    async def audit_signup(name: str) -> None:
        await asyncio.sleep(0.3)  # still pending when the server starts shutting down
        async with plugin.transaction() as session:
            await session.execute(insert(events).values(kind=f"signup {name}"))

    @post("/signup/{name:str}")
    async def signup(name: FromPath[str], request: Request[Any, Any, Any]) -> None:
        async with plugin.transaction() as session:
            session.add(Account(name=name))
        request.app.emit("signed_up", name=name)

    return Litestar(route_handlers=[signup], listeners=[audit_signup], on_shutdown=[record_shutdown], plugins=[plugin])


@pytest.mark.anyio
async def test_on_shutdown_hooks_and_pending_listeners_still_write(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    db, logs = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": db, "logs": logs})
    async with AsyncTestClient(shutdown_app(plugin)) as client:
        assert (await client.post("/signup/ada")).status_code == 201
    assert plugin.engines.state == "closed"  # and only then
    assert names(db, "select name from accounts") == ["ada"]
    assert names(logs, "select kind from events") == ["signup ada"]
    assert names(logs, "select message from audit_entries") == ["shut down"]


def test_the_same_for_a_sync_config(kind: str, new_db: Callable[[str], Database]) -> None:
    db, logs = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": db, "logs": logs}, sync=True)

    def record_shutdown() -> None:
        with plugin.transaction() as session:
            session.add(AuditEntry(message="shut down"))

    app = Litestar(route_handlers=[], on_shutdown=[record_shutdown], plugins=[plugin])
    with TestClient(app):
        pass
    assert plugin.engines.state == "closed"
    assert names(logs, "select message from audit_entries") == ["shut down"]
