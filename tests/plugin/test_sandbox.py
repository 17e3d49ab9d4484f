"""``plugin.sandbox()``: sessions join it, nothing survives it, and it ends cleanly on every path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import func, select, text

from plugin import LifecycleError, SandboxError, StatementRefusedError
from tests.databases import KINDS, Database
from tests.plugin.models import Account, AuditEntry, make_plugin

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


pytestmark = pytest.mark.anyio


def rows(app_db: Database, logs_db: Database) -> tuple[int, int]:
    return app_db.fetch("select count(*) from accounts")[0][0], logs_db.fetch("select count(*) from audit_entries")[0][
        0
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_session_joins_and_nothing_survives(kind: str, new_db: Callable[[str], Database]) -> None:
    app_db, logs_db = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": app_db, "logs": logs_db}, two_phase=kind != "sqlite")

    async with plugin.lifespan():
        async with plugin.sandbox() as sandbox:
            async with plugin.transaction() as session:  # commits: releases a savepoint
                session.add_all([Account(name="ada"), AuditEntry(message="hello")])
            async with plugin.session("logs") as logs:
                logs.add(AuditEntry(message="by hand"))
                await logs.commit()
            async with plugin.session() as session:
                seen = await session.scalar(select(func.count()).select_from(AuditEntry))
                with pytest.raises(StatementRefusedError, match="refused 'COMMIT' in the sandbox"):
                    await session.execute(text("COMMIT"))
                assert await session.scalar(select(Account.name)) == "ada"  # still usable after a refusal
            assert sandbox.binds == ["default", "logs"]
        assert sandbox.rolled_back
        assert plugin.sessions.sandbox is None
        async with plugin.transaction() as session:  # the engines serve again after the sandbox
            session.add(Account(name="after"))

    assert seen == 2
    assert rows(app_db, logs_db) == (1, 0)


async def test_a_cancelled_task_still_rolls_back(new_db: Callable[[str], Database]) -> None:
    app_db, logs_db = new_db("sqlite"), new_db("sqlite")
    plugin = make_plugin({"default": app_db, "logs": logs_db})
    inserted = anyio.Event()

    async def work() -> None:
        async with plugin.sandbox(), plugin.transaction() as session:
            session.add(Account(name="cancelled"))
            await session.flush()
            inserted.set()
            await anyio.sleep(30)

    async with plugin.lifespan():
        async with anyio.create_task_group() as group:
            group.start_soon(work)
            await inserted.wait()
            group.cancel_scope.cancel()
        assert plugin.sessions.sandbox is None
        async with plugin.sandbox():  # a new one can start
            pass

    assert rows(app_db, logs_db) == (0, 0)


async def test_misuse_says_what_to_do(new_db: Callable[[str], Database], tmp_path: Path) -> None:
    app_db, logs_db = new_db("sqlite"), new_db("sqlite")
    plugin = make_plugin({"default": app_db, "logs": logs_db})
    sync_plugin = make_plugin({"default": new_db("sqlite"), "logs": new_db("sqlite")}, sync=True)

    with pytest.raises(LifecycleError, match="the engines are not started yet"):
        async with plugin.sandbox():
            pass
    async with plugin.lifespan():
        async with plugin.sandbox():
            with pytest.raises(LifecycleError, match="a sandbox is already active on this plugin"):
                async with plugin.sandbox():
                    pass
        with pytest.raises(LifecycleError, match=r"this config is async; use `async with plugin\.sandbox\(\):`"):
            plugin.sandbox().__enter__()
    with sync_plugin.lifespan(), sync_plugin.sandbox(), sync_plugin.transaction() as session:
        session.add(Account(name="sync"))
    with sync_plugin.lifespan(), sync_plugin.session() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0

    missing = Database("sqlite", "missing", path=tmp_path / "no such directory" / "x.db")
    unreachable = make_plugin({"default": app_db, "logs": missing}, create_all=False)
    async with unreachable.lifespan():
        with pytest.raises(SandboxError, match="bind 'logs': the sandbox could not connect: OperationalError"):
            async with unreachable.sandbox():
                pass
        assert unreachable.sessions.sandbox is None
