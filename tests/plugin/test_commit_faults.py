"""A request's commit when the connection dies, the answer is lost, the task is cancelled or the server
freezes at shutdown: a private PostgreSQL cluster behind a fault proxy (tests/faults/).

The client, the log and ``CommitError`` must say what really happened; no dead connection goes back to
the pool; settling runs to its end; shutdown is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import pytest
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from sqlalchemy import Integer, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig
from tests.faults import COMMIT, COMMIT_PREPARED, INSERT, PREPARE_TRANSACTION
from tests.plugin import asgi
from tests.plugin.orders import Audit, Base, Order, place, refs

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

    from tests.databases import Database
    from tests.faults import FaultProxy, PrivateCluster

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql]


@get("/audits")
async def count_audits(logs_db_session: NamedDependency[AsyncSession]) -> int:
    return int(await logs_db_session.scalar(select(func.count()).select_from(Audit)) or 0)


def one_connection(url: str, **options: Any) -> BindConfig:
    """A pool of exactly one connection (replicas' too): a dead one put back would fail the very next request."""
    return BindConfig(url=url, engine_options={"pool_size": 1, "max_overflow": 0}, **options)


def app_for(
    cluster: PrivateCluster, proxy: FaultProxy, orders: str, logs: str, **options: Any
) -> tuple[Litestar, SQLAlchemyPlugin[Any]]:
    binds = {
        "default": one_connection(cluster.url(orders, port=proxy.port)),
        "logs": one_connection(cluster.url(logs, port=proxy.port)),
    }
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds=binds, base=Base, create_all=True, **options))
    return Litestar(route_handlers=[place, count_audits], plugins=[plugin], logging_config=None), plugin


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith("plugin")]


def mariadb_logs(
    new_db: Callable[[str], Database], proxy: FaultProxy, *, sync: bool = False
) -> tuple[dict[str, BindConfig], Database, Database]:
    """One-connection binds: ``default`` on the shared PostgreSQL server, ``logs`` on MariaDB through ``proxy``."""
    orders, logs = new_db("postgresql"), new_db("mariadb")
    logs_url = logs.url(sync=sync).set(port=proxy.port).render_as_string(hide_password=False)
    orders_url = orders.url(sync=sync).render_as_string(hide_password=False)
    return {"default": one_connection(orders_url), "logs": one_connection(logs_url)}, orders, logs


async def pools_returned(plugin: SQLAlchemyPlugin[Any]) -> None:
    """Wait (up to 5 s) until every bind's pool has its connections back; a sync session may be closed by an
    abandoned worker thread just after its request ended."""
    for key in plugin.engines.engines:
        for _ in range(50):
            if plugin.engines.sync_engine(key).pool.checkedout() == 0:
                break
            await asyncio.sleep(0.1)
        assert plugin.engines.sync_engine(key).pool.checkedout() == 0, key


@pytest.fixture
def dbs(cluster_db: Callable[[], str]) -> tuple[str, str]:
    return cluster_db(), cluster_db()


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_connection_lost_at_commit_is_not_pooled_and_its_outcome_is_unknown(
    when: str,
    private_cluster: PrivateCluster,
    fault_proxy: FaultProxy,
    dbs: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    orders, logs = dbs
    app, plugin = app_for(private_cluster, fault_proxy, orders, logs)
    caplog.set_level(logging.ERROR, logger="plugin")
    async with AsyncTestClient(app) as client:
        # The second bind's COMMIT: cut before the server sees it, or after it ran (the answer is lost).
        rule = fault_proxy.drop_on(COMMIT, when=when, database=logs)  # type: ignore[arg-type]
        response = await client.post("/orders/cut")
        assert rule.fired
        assert response.status_code == 500
        # The next, unrelated request gets a working connection from the one-connection pool.
        assert (await client.get("/audits")).status_code == 200
        assert (await client.post("/orders/next")).status_code == 201
        assert plugin.engines.sync_engine("logs").pool.checkedout() == 0

    assert refs(private_cluster, orders, "orders") == ["cut", "next"]
    assert refs(private_cluster, logs, "audits") == (["cut", "next"] if when == "after" else ["next"])
    [message] = messages(caplog, logging.ERROR)
    assert message.startswith("commit failed on bind 'logs': ")
    assert message.endswith(
        "committed: 'default'; outcome unknown: 'logs' (the connection was lost before the server answered); "
        "rolled back: (none)"
    )


OUTSIDE: dict[str, AsyncEngine] = {}
"""The engine outside the binds that ``/beside/{ref}`` writes through (the test sets it)."""


@post("/beside/{ref:str}")
async def place_beside_an_outside_write(ref: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Order(ref=ref))
    await db_session.execute(
        text("insert into things (ref) values (:ref)"),
        {"ref": ref},
        bind_arguments={"bind": OUTSIDE["engine"].sync_engine},
    )


def assert_lost_outside(caplog: pytest.LogCaptureFixture) -> None:
    """The one ERROR line of a request whose bind committed and whose COMMIT outside the binds was lost."""
    [message] = messages(caplog, logging.ERROR)
    assert message.startswith("commit (after every bind committed) failed: ")
    assert message.endswith(
        "committed: 'default'; outcome unknown: '(an engine outside the binds)' (the connection was lost before "
        "the server answered); rolled back: (none)"
    )


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_write_outside_the_binds_whose_commit_is_lost_is_named_with_an_unknown_outcome(
    when: str,
    private_cluster: PrivateCluster,
    fault_proxy: FaultProxy,
    cluster_db: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    orders, logs, outside = cluster_db(), cluster_db(), cluster_db()
    private_cluster.execute("create table things (id serial primary key, ref varchar(20))", database=outside)
    app, plugin = app_for(private_cluster, fault_proxy, orders, logs)
    app.register(place_beside_an_outside_write)
    caplog.set_level(logging.ERROR, logger="plugin")
    OUTSIDE["engine"] = create_async_engine(private_cluster.url(outside, port=fault_proxy.port))
    try:
        async with AsyncTestClient(app) as client:
            # The bind commits first; then the session's own commit() commits the outside engine: its COMMIT is
            # cut before the server sees it, or after it ran (the answer is lost).
            rule = fault_proxy.drop_on(COMMIT, when=when, database=outside)  # type: ignore[arg-type]
            response = await client.post("/beside/cut")
            assert rule.fired
            assert response.status_code == 500
            assert (await client.post("/orders/next")).status_code == 201
            await pools_returned(plugin)
    finally:
        await OUTSIDE.pop("engine").dispose()
    assert refs(private_cluster, orders, "orders") == ["cut", "next"]
    assert refs(private_cluster, outside, "things") == (["cut"] if when == "after" else [])
    assert_lost_outside(caplog)


@pytest.mark.mariadb
@pytest.mark.parametrize("when", ["before", "after"])
async def test_on_mariadb_a_write_outside_the_binds_whose_commit_is_lost_is_named_with_an_unknown_outcome(
    when: str, new_db: Callable[[str], Database], mariadb_fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The same on asyncmy: the binds on PostgreSQL, the engine outside them on MariaDB behind the proxy."""
    orders, outside = new_db("postgresql"), new_db("mariadb")
    outside.execute("create table things (id integer auto_increment primary key, ref varchar(20))")
    binds = {"default": one_connection(orders.url()), "logs": one_connection(new_db("postgresql").url())}
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds=binds, base=Base, create_all=True))
    app = Litestar(route_handlers=[place_beside_an_outside_write], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.ERROR, logger="plugin")
    OUTSIDE["engine"] = create_async_engine(outside.url().set(port=mariadb_fault_proxy.port))
    try:
        async with app.lifespan():
            rule = mariadb_fault_proxy.drop_on(COMMIT, when=when, database=outside.name)  # type: ignore[arg-type]
            assert (await asgi.http(app, "POST", "/beside/cut")).status == 500
            assert rule.fired
            await pools_returned(plugin)
    finally:
        await OUTSIDE.pop("engine").dispose()
    assert orders.fetch("select ref from orders") == [("cut",)]
    assert outside.fetch("select ref from things") == ([("cut",)] if when == "after" else [])
    assert_lost_outside(caplog)


async def cancelled_while_stalled(
    proxy: FaultProxy,
    request: Coroutine[Any, Any, Any],
    statement: str,
    *,
    database: str,
    when: Literal["before", "after"] = "before",
    release_first: bool = True,
) -> None:
    """Run ``request`` until ``statement`` reaches (or is answered by) ``database``, hold it there, cancel the
    request (a timeout middleware, or the server giving up), then let the statement through.

    With ``release_first`` the statement is let through before the cancelled request is awaited (a settle
    that must run to its end needs it); without, the request must end while the statement is still held.
    """
    rule = proxy.stall_on(statement, when=when, database=database)
    task = asyncio.create_task(request)
    assert await rule.wait_async()
    task.cancel()
    if release_first:
        await asyncio.sleep(0.2)
        proxy.release()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    proxy.release()


async def test_a_request_cancelled_while_its_binds_commit_settles_them_all_and_says_so(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = dbs
    app, plugin = app_for(private_cluster, fault_proxy, orders, logs)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        # Hold the second bind's COMMIT, so the cancellation lands between the two.
        sent: list[dict[str, Any]] = []
        request = asgi.http(app, "POST", "/orders/cancelled", on_send=sent.append)
        await cancelled_while_stalled(fault_proxy, request, COMMIT, database=logs)
        assert sent == []  # nobody is left to receive a response
        assert plugin.engines.sync_engine("logs").pool.checkedout() == 0

    assert refs(private_cluster, orders, "orders") == ["cancelled"]
    assert refs(private_cluster, logs, "audits") == ["cancelled"]
    assert messages(caplog, logging.WARNING) == [
        "the task was cancelled while its transaction was being settled; settled anyway: committed: 'default', 'logs'"
    ]


async def a_read_cancelled_during_its_commit(
    app: Litestar, proxy: FaultProxy, database: str, caplog: pytest.LogCaptureFixture, *, on: str
) -> None:
    """``GET /audits`` cancelled while ``database`` holds its COMMIT: a read commits without the shield, so
    the cancellation interrupts the COMMIT and the request ends while it is still held. The WARNING says the
    outcome is unknown ``on`` what it names, and the next read works (the interrupted connection was dropped,
    not pooled)."""
    sent: list[dict[str, Any]] = []
    request = asgi.http(app, "GET", "/audits", on_send=sent.append)
    await cancelled_while_stalled(proxy, request, COMMIT, database=database, release_first=False)
    assert sent == []  # nobody is left to receive a response
    assert messages(caplog, logging.WARNING) == [
        f"the task was cancelled while committing a unit of work that only read; the outcome is unknown on {on}"
    ]
    assert (await asgi.http(app, "GET", "/audits")).status == 200


async def test_a_request_that_only_read_and_is_cancelled_during_its_commit_says_the_outcome_is_unknown(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = dbs
    app, plugin = app_for(private_cluster, fault_proxy, orders, logs)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        await a_read_cancelled_during_its_commit(app, fault_proxy, logs, caplog, on="bind 'logs'")
        assert plugin.engines.sync_engine("logs").pool.checkedout() == 0  # the one pooled connection was reused


async def test_a_read_from_a_replica_cancelled_during_its_commit_names_the_replicas(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # The replica is the same database reached through the proxy, the primary is reached directly: only the
    # replica's COMMIT can be held.
    orders, logs = dbs
    binds = {
        "default": one_connection(private_cluster.url(orders)),
        "logs": one_connection(private_cluster.url(logs), replicas=[private_cluster.url(logs, port=fault_proxy.port)]),
    }
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds=binds, base=Base, create_all=True))
    app = Litestar(route_handlers=[place, count_audits], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        await a_read_cancelled_during_its_commit(app, fault_proxy, logs, caplog, on="its read replicas")
        for key, engine in plugin.engines.every_sync_engine():
            assert engine.pool.checkedout() == 0, key


@pytest.mark.mariadb
async def test_on_mariadb_a_cancelled_read_says_the_outcome_is_unknown_and_a_cancelled_write_is_settled(
    new_db: Callable[[str], Database], mariadb_fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The two sides of the settle, on asyncmy: a read's COMMIT is interrupted and its connection dropped; a
    write's COMMIT runs to its end although the request was cancelled while it waited."""
    binds, orders, logs = mariadb_logs(new_db, mariadb_fault_proxy)
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds=binds, base=Base, create_all=True))
    app = Litestar(route_handlers=[place, count_audits], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        await a_read_cancelled_during_its_commit(app, mariadb_fault_proxy, logs.name, caplog, on="bind 'logs'")
        assert plugin.engines.sync_engine("logs").pool.checkedout() == 0
        caplog.clear()

        sent: list[dict[str, Any]] = []
        request = asgi.http(app, "POST", "/orders/cancelled", on_send=sent.append)
        await cancelled_while_stalled(mariadb_fault_proxy, request, COMMIT, database=logs.name)
        assert sent == []
        assert plugin.engines.sync_engine("logs").pool.checkedout() == 0

    assert orders.fetch("select ref from orders") == [("cancelled",)]
    assert logs.fetch("select ref from audits") == [("cancelled",)]
    assert messages(caplog, logging.WARNING) == [
        "the task was cancelled while its transaction was being settled; settled anyway: committed: 'default', 'logs'"
    ]


@post("/writes/{how:str}")
async def write_somehow(how: FromPath[str], logs_db_session: NamedDependency[AsyncSession]) -> None:
    if how == "text":
        await logs_db_session.execute(text("insert into audits (ref) values ('text')"))
    elif how == "core":
        await logs_db_session.execute(insert(Audit).values(ref="core"))
    elif how == "connection":
        connection = await logs_db_session.connection()
        await connection.exec_driver_sql("insert into audits (ref) values ('connection')")
    elif how == "bulk":
        await logs_db_session.run_sync(lambda session: session.bulk_insert_mappings(Audit, [{"ref": "bulk"}]))
    elif how == "returning":  # text().columns(): a TextualSelect, is_select although its SQL is an INSERT
        statement = text("insert into audits (ref) values ('returning') returning id").columns(id=Integer)
        (await logs_db_session.execute(statement)).scalar_one()
    elif how == "flushed":
        logs_db_session.add(Audit(ref="flushed"))
        await logs_db_session.flush()
    else:
        logs_db_session.add(Audit(ref="pending"))  # flushed by the settle


@pytest.mark.parametrize("how", ["text", "core", "returning", "connection", "bulk", "flushed", "pending"])
async def test_every_kind_of_write_is_settled_to_its_end_when_the_request_is_cancelled_during_the_commit(
    private_cluster: PrivateCluster,
    fault_proxy: FaultProxy,
    dbs: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    orders, logs = dbs
    app, _ = app_for(private_cluster, fault_proxy, orders, logs)
    app.register(write_somehow)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        await cancelled_while_stalled(fault_proxy, asgi.http(app, "POST", f"/writes/{how}"), COMMIT, database=logs)
    assert refs(private_cluster, logs, "audits") == [how]
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
        request = asgi.http(app, "GET", "/both")
        await cancelled_while_stalled(fault_proxy, request, statement, database=logs, when=when)  # type: ignore[arg-type]
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
        await cancelled_while_stalled(fault_proxy, asgi.http(app, "GET", "/sync-audits"), COMMIT, database=logs)
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


@post("/sync-orders/{ref:str}", sync_to_thread=True)
def place_sync(ref: FromPath[str], db_session: NamedDependency[Session]) -> None:
    db_session.add_all([Order(ref=ref), Audit(ref=ref)])


@get("/sync-audits", sync_to_thread=True)
def count_audits_sync(logs_db_session: NamedDependency[Session]) -> int:
    return int(logs_db_session.scalar(select(func.count()).select_from(Audit)) or 0)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_request_cancelled_while_it_flushes_commits_nothing_and_says_nothing_was_committed(
    private_cluster: PrivateCluster,
    fault_proxy: FaultProxy,
    dbs: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    orders, logs = dbs
    if kind == "async":
        app, plugin = app_for(private_cluster, fault_proxy, orders, logs)
    else:
        binds = {
            "default": one_connection(private_cluster.url(orders, driver="postgresql+psycopg", port=fault_proxy.port)),
            "logs": one_connection(private_cluster.url(logs, driver="postgresql+psycopg", port=fault_proxy.port)),
        }
        plugin = SQLAlchemyPlugin(config=SQLAlchemySyncConfig(binds=binds, base=Base, create_all=True))
        app = Litestar(route_handlers=[place_sync], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        # Hold the flush's INSERT into the second bind: nothing is committed yet when the cancellation lands.
        sent: list[dict[str, Any]] = []
        path = "/orders/flushing" if kind == "async" else "/sync-orders/flushing"
        request = asgi.http(app, "POST", path, on_send=sent.append)
        # A sync flush's worker thread cannot be interrupted: the request stops waiting for it.
        await cancelled_while_stalled(fault_proxy, request, INSERT, database=logs)
        assert sent == []
        await pools_returned(plugin)

    assert refs(private_cluster, orders, "orders") == []
    assert refs(private_cluster, logs, "audits") == []
    assert messages(caplog, logging.WARNING) == []


@pytest.mark.mariadb
async def test_on_mariadb_a_sync_flush_cancelled_mid_statement_leaves_a_working_pool_and_commits_nothing(
    new_db: Callable[[str], Database], mariadb_fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """pymysql, unlike psycopg, does not serialise two threads on one connection: the session of a cancelled
    sync flush must not be closed (ROLLBACK sent) while its worker thread still waits for an INSERT's reply."""
    binds, orders, logs = mariadb_logs(new_db, mariadb_fault_proxy, sync=True)
    plugin = SQLAlchemyPlugin(config=SQLAlchemySyncConfig(binds=binds, base=Base, create_all=True))
    app = Litestar(route_handlers=[place_sync, count_audits_sync], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with app.lifespan():
        sent: list[dict[str, Any]] = []
        request = asgi.http(app, "POST", "/sync-orders/flushing", on_send=sent.append)
        await cancelled_while_stalled(mariadb_fault_proxy, request, INSERT, database=logs.name)
        assert sent == []
        # The pool's one connection to each bind comes back, and works: the next request reads through it.
        await pools_returned(plugin)
        for _ in range(3):
            answer = await asgi.http(app, "GET", "/sync-audits")
            assert (answer.status, answer.body) == (200, b"0")

    assert orders.fetch("select ref from orders") == []
    assert logs.fetch("select ref from audits") == []
    assert messages(caplog, logging.WARNING) == []


@post("/sync-handler-insert", sync_to_thread=True)
def insert_in_handler(logs_db_session: NamedDependency[Session]) -> None:
    logs_db_session.execute(insert(Audit).values(ref="handler"))


@pytest.mark.mariadb
async def test_on_mariadb_a_sync_handler_cancelled_mid_statement_leaves_a_working_pool(
    new_db: Callable[[str], Database], mariadb_fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync handler's thread, like a sync flush's, runs on after its request was cancelled: its session is
    closed when the thread's statement is done, not under it (pymysql would be put out of step)."""
    binds, _, logs = mariadb_logs(new_db, mariadb_fault_proxy, sync=True)
    plugin = SQLAlchemyPlugin(config=SQLAlchemySyncConfig(binds=binds, base=Base, create_all=True))
    app = Litestar(route_handlers=[insert_in_handler, count_audits_sync], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING)
    async with app.lifespan():
        request = asgi.http(app, "POST", "/sync-handler-insert")
        await cancelled_while_stalled(mariadb_fault_proxy, request, INSERT, database=logs.name)
        await pools_returned(plugin)
        for _ in range(3):
            answer = await asgi.http(app, "GET", "/sync-audits")
            assert (answer.status, answer.body) == (200, b"0")

    assert logs.fetch("select ref from audits") == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@contextlib.contextmanager
def frozen(cluster: PrivateCluster) -> Iterator[None]:
    """Stop every process of the cluster (SIGSTOP): a server that stopped answering without closing."""
    data = Path(f"/var/lib/postgresql/15/{cluster.name}")
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False)
    pids = [postmaster, *(int(pid) for pid in children.stdout.split())]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_shutdown_is_bounded_when_the_server_stops_answering(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = dbs
    app, plugin = app_for(private_cluster, fault_proxy, orders, logs, shutdown_timeout=1.0)
    caplog.set_level(logging.WARNING, logger="plugin")
    with contextlib.ExitStack() as frozen_later:
        async with app.lifespan():
            assert (await asgi.http(app, "POST", "/orders/pooled")).status == 201  # leaves pooled connections
            frozen_later.enter_context(frozen(private_cluster))
            started = anyio.current_time()
        # Leaving the lifespan disposed the engines: bounded although no connection could close cleanly.
        elapsed = anyio.current_time() - started
    assert elapsed < 10, f"shutdown took {elapsed:.1f} s"
    assert plugin.engines.state == "closed"
    warnings = messages(caplog, logging.WARNING)
    assert "bind 'default': its connections did not close within 1 s at shutdown" in " ".join(warnings)
