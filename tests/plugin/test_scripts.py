"""Sessions outside requests (workers, scripts): same routing, same transaction policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from plugin import BindKeyError, CommitConflictError, TransactionPolicy
from tests.databases import KINDS
from tests.plugin.models import Account, AuditEntry, make_plugin

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.databases import Database

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", KINDS)
async def test_transaction_commits_on_success_and_rolls_back_on_error(
    kind: str, new_db: Callable[[str], Database]
) -> None:
    app_db, logs_db = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": app_db, "logs": logs_db})

    async def crashing_job() -> None:
        async with plugin.transaction() as session:
            session.add_all([Account(name="lost"), AuditEntry(message="lost")])
            await session.flush()
            raise RuntimeError("worker crashed")

    async def duplicate_job() -> None:
        async with plugin.transaction() as session:
            session.add(Account(name="kept"))

    async with plugin.lifespan():
        async with plugin.transaction() as session:
            session.add_all([Account(name="kept"), AuditEntry(message="kept")])
        with pytest.raises(RuntimeError, match="worker crashed"):
            await crashing_job()
        async with plugin.transaction(dry_run=True) as session:
            session.add(Account(name="dry"))
        with pytest.raises(CommitConflictError):
            await duplicate_job()
        async with plugin.session("logs") as logs_session:
            assert (await logs_session.scalars(select(AuditEntry.message))).all() == ["kept"]

    assert app_db.fetch("select name from accounts") == [("kept",)]
    assert logs_db.fetch("select message from audit_entries") == [("kept",)]


async def test_manual_policy_never_commits_for_you(new_db: Callable[[str], Database]) -> None:
    db = new_db("sqlite")
    plugin = make_plugin({"default": db, "logs": new_db("sqlite")}, transaction=TransactionPolicy(mode="manual"))
    async with plugin.lifespan():
        async with plugin.transaction() as session:
            session.add(Account(name="left open"))
        async with plugin.transaction() as session:
            session.add(Account(name="committed by hand"))
            await session.commit()
    assert db.fetch("select name from accounts") == [("committed by hand",)]


async def test_an_unknown_bind_names_the_configured_ones(new_db: Callable[[str], Database]) -> None:
    plugin = make_plugin({"default": new_db("sqlite"), "logs": new_db("sqlite")})
    async with plugin.lifespan():
        with pytest.raises(BindKeyError) as raised:
            plugin.session("audit")
        with pytest.raises(BindKeyError, match=r"^bind 'audit' is not configured"):
            plugin.transaction("audit")
    assert str(raised.value) == "bind 'audit' is not configured (configured: 'default', 'logs')"
