"""Review of the read-only settle (a unit of work that only read commits without the cancellation shield):
what must still be settled to its end when the request is cancelled during its COMMIT.

A private PostgreSQL cluster behind a fault proxy (tests/faults/), as in test_commit_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import pytest
from litestar import post
from litestar.di import NamedDependency
from sqlalchemy import Integer, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.faults import COMMIT
from tests.plugin import asgi
from tests.plugin.orders import refs
from tests.plugin.test_commit_faults import app_for, messages

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
