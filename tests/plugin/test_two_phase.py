"""Two-phase commit under faults: a lost answer to PREPARE or COMMIT PREPARED, a server that cannot be
reached to finish, PostgreSQL (a private cluster behind a fault proxy) and MariaDB (XA, behind a proxy).

Whatever happens, no prepared transaction of the plugin's is left behind while the server is reachable,
and the client, the log and ``CommitError`` say what really committed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from plugin import BindConfig, CommitError, ConfigurationError, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.faults import COMMIT_PREPARED, PREPARE_TRANSACTION, XA_COMMIT, XA_PREPARE
from tests.plugin.helpers import startup_error
from tests.plugin.orders import Audit, Base, Order, place, refs

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.databases import Database
    from tests.faults import FaultProxy, PrivateCluster

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql]


@post("/orders/{ref:str}/savepoint")
async def place_in_savepoint(ref: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    async with db_session.begin_nested():  # e.g. a get-or-create that may roll back to a savepoint
        db_session.add(Order(ref=ref))
    db_session.add(Audit(ref=ref))


@post("/orders/{ref:str}/alone")
async def place_alone(ref: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Order(ref=ref))  # one bind only


def app_for(default: str, logs: str) -> tuple[Litestar, SQLAlchemyPlugin[Any]]:
    config = SQLAlchemyAsyncConfig(binds={"default": default, "logs": logs}, base=Base, create_all=True, two_phase=True)
    plugin = SQLAlchemyPlugin(config=config)
    handlers = [place, place_in_savepoint, place_alone]
    return Litestar(route_handlers=handlers, plugins=[plugin], logging_config=None), plugin


def proxied(cluster: PrivateCluster, proxy: FaultProxy, *databases: str) -> list[str]:
    return [cluster.url(database, port=proxy.port) for database in databases]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("plugin")]


@pytest.fixture
def two_dbs(private_cluster: PrivateCluster, cluster_db: Callable[[], str], fault_proxy: FaultProxy) -> tuple[str, str]:
    return cluster_db(), cluster_db()


async def test_a_lost_answer_to_prepare_rolls_back_every_bind_by_xid(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = two_dbs
    app, _ = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    caplog.set_level(logging.WARNING, logger="plugin")
    async with AsyncTestClient(app) as client:
        # The logs server prepares the transaction, but its answer never reaches the app.
        rule = fault_proxy.drop_on(PREPARE_TRANSACTION, when="after", database=logs)
        response = await client.post("/orders/lost")
        assert rule.fired
        assert response.status_code == 500
        assert (await client.post("/orders/after")).status_code == 201

    assert private_cluster.prepared_transactions() == []  # nothing left holding locks
    assert refs(private_cluster, orders, "orders") == ["after"]
    assert refs(private_cluster, logs, "audits") == ["after"]
    [message] = errors(caplog)
    assert message.startswith("two-phase commit (prepare) failed on bind 'logs': ")
    assert message.endswith("committed: (none); rolled back: 'default', 'logs'")
    # The binds rolled back by xid leave their sessions clean: no failed rollback, no discarded connection.
    assert not [r for r in caplog.records if "rolling back a session failed" in r.getMessage()]


async def test_a_before_commit_listener_s_row_on_another_bind_is_prepared_with_the_rest(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The request writes on ``default`` only; a before_commit listener audits it on ``logs``. That row is part
    of the two-phase commit (before, it was committed in one phase after ``default`` had committed): a lost
    answer to its PREPARE rolls back both."""
    orders, logs = two_dbs
    app, _ = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    caplog.set_level(logging.WARNING, logger="plugin")

    def audit(session: Session) -> None:
        session.add(Audit(ref="audited"))

    event.listen(Session, "before_commit", audit)
    try:
        async with AsyncTestClient(app) as client:
            rule = fault_proxy.drop_on(PREPARE_TRANSACTION, when="after", database=logs)
            assert (await client.post("/orders/lost/alone")).status_code == 500
            assert rule.fired
            assert (await client.post("/orders/after/alone")).status_code == 201
    finally:
        event.remove(Session, "before_commit", audit)
    assert private_cluster.prepared_transactions() == []
    assert refs(private_cluster, orders, "orders") == ["after"]
    assert refs(private_cluster, logs, "audits") == ["audited"]
    [message] = errors(caplog)
    assert message.startswith("two-phase commit (prepare) failed on bind 'logs': ")
    assert message.endswith("committed: (none); rolled back: 'default', 'logs'")


async def test_a_lost_answer_to_commit_prepared_is_finished_by_xid_and_the_client_gets_its_201(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = two_dbs
    app, _ = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    caplog.set_level(logging.WARNING, logger="plugin")
    async with AsyncTestClient(app) as client:
        # The first bind to commit loses its connection before the server sees COMMIT PREPARED.
        rule = fault_proxy.drop_on(COMMIT_PREPARED, when="before", database=orders)
        assert (await client.post("/orders/retried")).status_code == 201
        assert rule.fired

    assert private_cluster.prepared_transactions() == []
    assert refs(private_cluster, orders, "orders") == ["retried"]
    assert refs(private_cluster, logs, "audits") == ["retried"]
    assert errors(caplog) == []
    [warning] = [r.getMessage() for r in caplog.records if "COMMIT PREPARED failed" in r.getMessage()]
    assert warning.startswith("bind 'default': COMMIT PREPARED failed (")
    assert warning.endswith("committed by xid from a fresh connection")


async def test_a_request_that_used_a_savepoint_is_still_finished_by_xid(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str]
) -> None:
    orders, logs = two_dbs
    app, _ = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    async with AsyncTestClient(app) as client:
        rule = fault_proxy.drop_on(COMMIT_PREPARED, when="before", database=orders)
        assert (await client.post("/orders/nested/savepoint")).status_code == 201
        assert rule.fired

    assert private_cluster.prepared_transactions() == []
    assert refs(private_cluster, orders, "orders") == ["nested"]
    assert refs(private_cluster, logs, "audits") == ["nested"]


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_lost_answer_to_commit_prepared_on_a_single_bind_request_leaves_nothing_prepared(
    when: str, private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str]
) -> None:
    orders, logs = two_dbs
    app, _ = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    async with AsyncTestClient(app) as client:
        rule = fault_proxy.drop_on(COMMIT_PREPARED, when=when, database=orders)  # type: ignore[arg-type]
        assert (await client.post("/orders/alone/alone")).status_code == 201
        assert rule.fired

    assert private_cluster.prepared_transactions() == []
    assert refs(private_cluster, orders, "orders") == ["alone"]


async def test_a_commit_prepared_that_ran_but_whose_answer_was_lost_counts_as_committed(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str]
) -> None:
    orders, logs = two_dbs
    app, _ = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    async with AsyncTestClient(app) as client:
        rule = fault_proxy.drop_on(COMMIT_PREPARED, when="after", database=logs)
        assert (await client.post("/orders/done")).status_code == 201
        assert rule.fired

    assert private_cluster.prepared_transactions() == []
    assert refs(private_cluster, orders, "orders") == ["done"]
    assert refs(private_cluster, logs, "audits") == ["done"]


async def test_a_prepared_transaction_that_cannot_be_finished_is_logged_with_its_statement(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = two_dbs
    app, plugin = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    caplog.set_level(logging.WARNING, logger="plugin")
    async with AsyncTestClient(app) as client:
        # Every COMMIT PREPARED on the logs database is cut before the server sees it: the retry too.
        fault_proxy.drop_on(COMMIT_PREPARED, when="before", database=logs, times=None)
        response = await client.post("/orders/stuck")
        [gid] = private_cluster.prepared_transactions(logs)  # holding its locks while the server is away
        assert refs(private_cluster, orders, "orders") == ["stuck"]  # the decision was commit
        fault_proxy.pass_through()  # the server can be reached again
        # Nothing of the plugin's stays prepared once it can: the next commit finishes it first.
        assert (await client.post("/orders/next")).status_code == 201
        assert private_cluster.prepared_transactions(logs) == []
    assert response.status_code == 500
    assert refs(private_cluster, logs, "audits") == ["stuck", "next"]
    [unfinished, summary] = errors(caplog)
    assert unfinished.startswith(f"bind 'logs': the prepared transaction {gid} could not be finished (")
    assert f"the decision was to commit it: run COMMIT PREPARED '{gid}' on that database (" in unfinished
    assert summary.startswith("two-phase commit (commit prepared) failed on bind 'logs': ")
    assert summary.endswith(
        "committed: 'default'; outcome unknown: 'logs' (the connection was lost before the server answered); "
        "rolled back: (none)"
    )
    assert f"bind 'logs': commit the prepared transaction {gid} once its server was back" in [
        r.getMessage() for r in caplog.records
    ]
    assert plugin.engines.state == "closed"


async def test_a_transaction_left_prepared_is_finished_at_shutdown_once_the_server_is_back(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str]
) -> None:
    orders, logs = two_dbs
    app, _ = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    async with AsyncTestClient(app) as client:
        fault_proxy.drop_on(COMMIT_PREPARED, when="before", database=logs, times=None)
        assert (await client.post("/orders/stuck")).status_code == 500
        assert len(private_cluster.prepared_transactions(logs)) == 1
        fault_proxy.pass_through()
    # No later request came; the shutdown gave it one more try.
    assert private_cluster.prepared_transactions(logs) == []
    assert refs(private_cluster, logs, "audits") == ["stuck"]


async def test_commit_error_lists_what_really_committed(
    private_cluster: PrivateCluster, fault_proxy: FaultProxy, two_dbs: tuple[str, str]
) -> None:
    orders, logs = two_dbs
    _, plugin = app_for(*proxied(private_cluster, fault_proxy, orders, logs))
    async with plugin.lifespan():
        fault_proxy.drop_on(COMMIT_PREPARED, when="before", database=logs, times=None)
        with pytest.raises(CommitError) as raised:
            async with plugin.transaction() as session:
                session.add_all([Order(ref="script"), Audit(ref="script")])
        fault_proxy.pass_through()
    assert raised.value.committed == ("default",)
    assert raised.value.unknown == ("logs",)
    for gid in private_cluster.prepared_transactions(logs):
        private_cluster.execute(f"rollback prepared '{gid}'", database=logs)


async def test_two_phase_on_a_server_without_prepared_transactions_stops_the_app_at_startup(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str]
) -> None:
    private_cluster.execute("alter system set max_prepared_transactions = 0")
    private_cluster.restart()
    try:
        name = cluster_db()
        app, _ = app_for(private_cluster.url(name), private_cluster.url(name))
        error = await startup_error(app)
    finally:
        private_cluster.execute("alter system set max_prepared_transactions = 20")
        private_cluster.restart()
    assert isinstance(error, ConfigurationError)
    assert str(error) == (
        f"bind 'default': two_phase=True needs PostgreSQL's max_prepared_transactions > 0, and it is 0 on "
        f"postgresql+asyncpg://postgres@127.0.0.1:{private_cluster.port}/{name}; set it (ALTER SYSTEM SET "
        "max_prepared_transactions = 20, then restart the server) or set two_phase=False"
    )


async def test_two_phase_on_sqlite_is_a_configuration_error_naming_the_bind(tmp_path: Any) -> None:
    app, _ = app_for(f"sqlite+aiosqlite:///{tmp_path}/a.db", f"sqlite+aiosqlite:///{tmp_path}/b.db")
    error = await startup_error(app)
    assert isinstance(error, ConfigurationError)
    assert str(error).startswith("bind 'default': two_phase=True needs PostgreSQL or MariaDB/MySQL")


# -- MariaDB (XA) -------------------------------------------------------------------------------------


def xa_recover(db: Database) -> list[str]:
    return [bytes(data).decode() if isinstance(data, bytes) else data for (*_, data) in db.fetch("xa recover")]


@pytest.mark.mariadb
async def test_mariadb_lost_answer_to_xa_commit_is_finished_by_xid(
    new_db: Callable[[str], Database], mariadb_fault_proxy: FaultProxy
) -> None:
    orders, logs = new_db("postgresql"), new_db("mariadb")
    logs_url = logs.url().set(port=mariadb_fault_proxy.port)
    app, _ = app_for(orders.url().render_as_string(hide_password=False), logs_url.render_as_string(hide_password=False))
    before = set(xa_recover(logs))  # XA RECOVER is server-wide: other sessions' transactions show too
    async with AsyncTestClient(app) as client:
        rule = mariadb_fault_proxy.drop_on(XA_COMMIT, when="before", database=logs.name)
        assert (await client.post("/orders/xa")).status_code == 201
        assert rule.fired

    assert [ref for (ref,) in orders.fetch("select ref from orders")] == ["xa"]
    assert [ref for (ref,) in logs.fetch("select ref from audits")] == ["xa"]
    assert set(xa_recover(logs)) - before == set()  # nothing of this request left prepared


@pytest.mark.mariadb
async def test_mariadb_lost_answer_to_xa_prepare_rolls_everything_back(
    new_db: Callable[[str], Database], mariadb_fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    orders, logs = new_db("postgresql"), new_db("mariadb")
    logs_url = logs.url().set(port=mariadb_fault_proxy.port)
    app, _ = app_for(orders.url().render_as_string(hide_password=False), logs_url.render_as_string(hide_password=False))
    caplog.set_level(logging.WARNING, logger="plugin")
    before = set(xa_recover(logs))
    async with AsyncTestClient(app) as client:
        rule = mariadb_fault_proxy.drop_on(XA_PREPARE, when="after", database=logs.name)
        assert (await client.post("/orders/xa")).status_code == 500
        assert rule.fired

    assert orders.fetch("select ref from orders") == []
    assert logs.fetch("select ref from audits") == []
    assert orders.fetch("select count(*) from pg_prepared_xacts where database = current_database()") == [(0,)]
    assert set(xa_recover(logs)) - before == set()  # nothing of this request left prepared
    [message] = errors(caplog)
    assert message.endswith("committed: (none); rolled back: 'default', 'logs'")


async def test_two_phase_on_a_given_sqlite_engine_is_a_configuration_error_naming_the_bind(tmp_path: Any) -> None:
    engines = [create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/{name}.db") for name in ("a", "b")]
    binds = {"default": BindConfig(engine=engines[0]), "logs": BindConfig(engine=engines[1])}
    config = SQLAlchemyAsyncConfig(binds=binds, base=Base, create_all=True, two_phase=True)
    app = Litestar(route_handlers=[place], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    error = await startup_error(app)
    assert isinstance(error, ConfigurationError)
    assert str(error).startswith("bind 'default': two_phase=True needs PostgreSQL or MariaDB/MySQL")


@pytest.mark.mariadb
def test_mariadb_an_xid_still_attached_to_its_dying_session_is_finished_once_the_server_lets_go(
    new_db: Callable[[str], Database],
) -> None:
    import threading

    import pymysql
    from sqlalchemy import create_engine

    from plugin import twophase

    db = new_db("mariadb")
    db.execute("create table t (id integer primary key)")
    url = db.url(sync=True)
    owner = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, database=db.name)
    cursor = owner.cursor()
    xid = "_sa_review9_attached"
    for sql in (f"XA START '{xid}'", "insert into t values (1)", f"XA END '{xid}'", f"XA PREPARE '{xid}'"):
        cursor.execute(sql)
    # The app saw this connection die; the server has not torn its session down yet (it lets go 0.5 s later).
    closer = threading.Timer(0.5, owner.close)
    closer.start()
    engine = create_engine(url)
    try:
        assert twophase.finish(engine, xid, "rollback") is True
    finally:
        closer.join()
        engine.dispose()
        if xid in xa_recover(db):
            db.execute(f"XA ROLLBACK '{xid}'")
    assert xid not in xa_recover(db)
    assert db.fetch("select id from t") == []
