"""Review of the read-only settle (a unit of work that only read commits without the cancellation shield):
what must still be settled to its end when the request is cancelled during its COMMIT.

A private PostgreSQL cluster behind a fault proxy (tests/faults/), as in test_commit_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from sqlalchemy import Integer, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from plugin import SQLAlchemyPlugin, SQLAlchemySyncConfig
from tests.faults import COMMIT, COMMIT_PREPARED, PREPARE_TRANSACTION
from tests.plugin import asgi
from tests.plugin.orders import Audit, Base, Order, refs
from tests.plugin.test_commit_faults import app_for, messages, one_connection

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.faults import FaultProxy, PrivateCluster

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql]


@pytest.fixture
def dbs(cluster_db: Callable[[], str]) -> tuple[str, str]:
    return cluster_db(), cluster_db()


@post("/returning", status_code=200)
async def insert_returning(logs_db_session: NamedDependency[AsyncSession]) -> int:
    # text().columns() is SQLAlchemy's way to type a text statement's rows: a TextualSelect, is_select=True.
    statement = text("insert into audits (ref) values ('returning') returning id").columns(id=Integer)
    return int((await logs_db_session.execute(statement)).scalar_one())


async def test_a_text_write_typed_with_columns_is_settled_to_its_end_when_the_request_is_cancelled(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = dbs
    app, _ = app_for(private_cluster, fault_proxy, orders, logs)
    app.register(insert_returning)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        rule = fault_proxy.stall_on(COMMIT, when="before", database=logs)
        task = asyncio.create_task(asgi.http(app, "POST", "/returning"))
        assert await rule.wait_async()
        task.cancel()
        await asyncio.sleep(0.2)
        fault_proxy.release()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert refs(private_cluster, logs, "audits") == ["returning"]
    assert messages(caplog, logging.WARNING) == [
        "the task was cancelled while its transaction was being settled; settled anyway: committed: 'logs'"
    ]


@get("/both")
async def read_both(db_session: NamedDependency[AsyncSession]) -> int:
    orders = await db_session.scalar(select(func.count()).select_from(Order)) or 0
    audits = await db_session.scalar(select(func.count()).select_from(Audit)) or 0
    return int(orders + audits)


@pytest.mark.parametrize("stall", [(PREPARE_TRANSACTION, "after"), (COMMIT_PREPARED, "before")])
async def test_a_two_phase_read_cancelled_while_it_commits_leaves_no_transaction_prepared(
    private_cluster: PrivateCluster,
    fault_proxy: FaultProxy,
    dbs: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
    stall: tuple[str, str],
) -> None:
    orders, logs = dbs
    app, plugin = app_for(private_cluster, fault_proxy, orders, logs, two_phase=True)
    app.register(read_both)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        # The cancellation lands once the second bind prepared (its answer held), or once both prepared.
        statement, when = stall
        rule = fault_proxy.stall_on(statement, when=when, database=logs)  # type: ignore[arg-type]
        task = asyncio.create_task(asgi.http(app, "GET", "/both"))
        assert await rule.wait_async()
        task.cancel()
        await asyncio.sleep(0.2)
        fault_proxy.release()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert plugin.engines.sync_engine("logs").pool.checkedout() == 0
        # A prepared transaction nobody finishes holds its locks (ACCESS SHARE on audits) until an operator
        # runs ROLLBACK PREPARED: a migration's ALTER TABLE would wait on it forever.
        assert private_cluster.prepared_transactions(logs) == []
        assert private_cluster.prepared_transactions(orders) == []
    assert messages(caplog, logging.WARNING) == [
        "the task was cancelled while its transaction was being settled; settled anyway: committed: 'default', 'logs'"
    ]


@get("/sync-audits", sync_to_thread=True)
def count_sync(logs_db_session: NamedDependency[Session]) -> int:
    return int(logs_db_session.scalar(select(func.count()).select_from(Audit)) or 0)


async def test_a_sync_read_cancelled_during_its_commit_is_settled_to_its_end_before_it_is_closed(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = dbs
    binds = {
        "default": one_connection(private_cluster.url(orders, driver="postgresql+psycopg", port=fault_proxy.port)),
        "logs": one_connection(private_cluster.url(logs, driver="postgresql+psycopg", port=fault_proxy.port)),
    }
    plugin: SQLAlchemyPlugin[Any] = SQLAlchemyPlugin(
        config=SQLAlchemySyncConfig(binds=binds, base=Base, create_all=True)
    )
    app = Litestar(route_handlers=[count_sync], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        rule = fault_proxy.stall_on(COMMIT, when="before", database=logs)
        task = asyncio.create_task(asgi.http(app, "GET", "/sync-audits"))
        assert await rule.wait_async()
        task.cancel()
        await asyncio.sleep(0.5)
        fault_proxy.release()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(50):
            if plugin.engines.sync_engine("logs").pool.checkedout() == 0:
                break
            await asyncio.sleep(0.1)
        assert plugin.engines.sync_engine("logs").pool.checkedout() == 0
        assert (await asgi.http(app, "GET", "/sync-audits")).status == 200
    # Before: the cancelled caller closed the session while the worker thread was still committing it
    # ("closing a session failed", then an ERROR), and the WARNING said the outcome was unknown.
    assert messages(caplog, logging.ERROR) == []
    assert messages(caplog, logging.WARNING) == [
        "the task was cancelled while its transaction was being settled; settled anyway: committed: 'logs'"
    ]
