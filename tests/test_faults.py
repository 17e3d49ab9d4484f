"""The fault tools themselves (tests/faults/): a private cluster that really stops and terminates
backends, and a proxy that really drops, loses replies and stalls, for psycopg, asyncpg and pymysql."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import psycopg
import pymysql
import pytest

from tests.faults import COMMIT, COMMIT_PREPARED, XA_COMMIT, FaultProxy, PrivateCluster

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.databases import Database

pytestmark = pytest.mark.postgresql


def _connect(cluster: PrivateCluster, name: str, port: int | None = None) -> psycopg.Connection[Any]:
    return psycopg.connect(cluster.url(name, driver="postgresql", port=port), connect_timeout=5)


def _table(cluster: PrivateCluster, name: str) -> None:
    cluster.execute("create table t (n int primary key)", database=name)


def _rows(cluster: PrivateCluster, name: str) -> list[int]:
    return [n for (n,) in cluster.execute("select n from t order by n", database=name)]


def test_the_cluster_is_private_and_survives_a_crash(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str]
) -> None:
    assert private_cluster.port != 5432
    assert private_cluster.execute("show max_prepared_transactions") == [("20",)]
    name = cluster_db()
    _table(private_cluster, name)
    private_cluster.execute("insert into t values (1)", database=name)

    private_cluster.stop(mode="immediate")
    assert not private_cluster.is_running()
    with pytest.raises(psycopg.OperationalError):
        private_cluster.execute("select 1")
    private_cluster.start()

    assert _rows(private_cluster, name) == [1]


def test_terminate_backends_kills_a_session_mid_transaction(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str]
) -> None:
    name = cluster_db()
    _table(private_cluster, name)
    with _connect(private_cluster, name) as connection:
        connection.execute("insert into t values (1)")
        assert private_cluster.sessions(name, "idle in transaction") == 1

        assert private_cluster.terminate_backends(name, states=["idle in transaction"]) == 1

        with pytest.raises(psycopg.OperationalError):
            connection.execute("insert into t values (2)")
    assert _rows(private_cluster, name) == []


def test_prepared_transactions_are_listed_and_dropped_with_the_database(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str]
) -> None:
    name = cluster_db()
    _table(private_cluster, name)
    with _connect(private_cluster, name) as connection:
        connection.execute("insert into t values (1)")
        connection.execute("prepare transaction 'tools-test'")
    assert private_cluster.prepared_transactions(name) == ["tools-test"]

    private_cluster.drop_database(name)

    assert private_cluster.prepared_transactions(name) == []


def test_the_proxy_forwards_until_told_otherwise(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str], fault_proxy: FaultProxy
) -> None:
    name = cluster_db()
    _table(private_cluster, name)
    with _connect(private_cluster, name, fault_proxy.port) as connection:
        connection.execute("insert into t values (%s)", (1,))  # extended protocol
        connection.commit()  # simple protocol
        assert fault_proxy.connections == 1
        assert connection.execute("select count(*) from t").fetchone() == (1,)


@pytest.mark.parametrize(("when", "stored"), [("before", []), ("after", [1])])
def test_a_dropped_commit_is_cut_before_or_after_the_server_ran_it(
    private_cluster: PrivateCluster,
    cluster_db: Callable[[], str],
    fault_proxy: FaultProxy,
    when: str,
    stored: list[int],
) -> None:
    name = cluster_db()
    _table(private_cluster, name)
    rule = fault_proxy.drop_on(COMMIT, when=when)  # type: ignore[arg-type]
    with _connect(private_cluster, name, fault_proxy.port) as connection:
        connection.execute("insert into t values (1)")
        with pytest.raises(psycopg.OperationalError):
            connection.commit()

    assert rule.fired == ["COMMIT"]
    assert _rows(private_cluster, name) == stored
    assert private_cluster.sessions(name) == 0


def test_a_stalled_reply_waits_for_release(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str], fault_proxy: FaultProxy
) -> None:
    name = cluster_db()
    _table(private_cluster, name)
    rule = fault_proxy.stall_on(COMMIT, when="after")
    done: Future[None] = Future()
    with _connect(private_cluster, name, fault_proxy.port) as connection:
        connection.execute("insert into t values (1)")

        def commit() -> None:
            try:
                connection.commit()
                done.set_result(None)
            except Exception as exc:
                done.set_exception(exc)

        threading.Thread(target=commit, daemon=True).start()
        try:
            assert rule.wait()  # fired when the proxy saw the COMMIT: the server may still be running it
            deadline = time.monotonic() + 10
            while _rows(private_cluster, name) != [1] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _rows(private_cluster, name) == [1]  # the server committed ...
            assert not done.done()  # ... and the client is still waiting for the reply
        finally:
            fault_proxy.release()
        done.result(timeout=10)


@pytest.mark.anyio
async def test_a_statement_held_before_the_server_runs_until_its_stall_ends(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str], fault_proxy: FaultProxy
) -> None:
    import asyncpg

    name = cluster_db()
    _table(private_cluster, name)
    rule = fault_proxy.stall_on(r"insert into t", when="before", seconds=60)
    connection = await asyncpg.connect(private_cluster.url(name, driver="postgresql", port=fault_proxy.port))
    try:
        insert = asyncio.ensure_future(connection.execute("insert into t values (1)"))
        assert await rule.wait_async()
        assert _rows(private_cluster, name) == []  # held: the server has not seen it
        assert not insert.done()
        fault_proxy.pass_through()  # releases it long before its 60 s
        await asyncio.wait_for(insert, 10)
    finally:
        await connection.close()
    assert _rows(private_cluster, name) == [1]


@pytest.mark.anyio
async def test_asyncpg_commit_prepared_reply_lost_and_extended_protocol_drop(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str], fault_proxy: FaultProxy
) -> None:
    import asyncpg

    name, other = cluster_db(), cluster_db()
    _table(private_cluster, name)
    fault_proxy.drop_on(r"insert into t", when="before", database=other)  # another database: never fires
    lost = fault_proxy.drop_on(COMMIT_PREPARED, when="after", database=name)
    connection = await asyncpg.connect(private_cluster.url(name, driver="postgresql", port=fault_proxy.port))
    try:
        await connection.execute("insert into t values ($1)", 1)  # extended protocol: Parse/Bind/Execute
        await connection.execute("begin; insert into t values (2); prepare transaction 'tools-async'")
        with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError)):
            await connection.execute("commit prepared 'tools-async'")
    finally:
        await connection.close()

    assert await lost.wait_async()
    assert _rows(private_cluster, name) == [1, 2]
    assert private_cluster.prepared_transactions(name) == []


@pytest.mark.anyio
async def test_cut_all_and_refuse_look_like_a_dead_server(
    private_cluster: PrivateCluster, cluster_db: Callable[[], str], fault_proxy: FaultProxy
) -> None:
    import asyncpg

    name = cluster_db()
    url = private_cluster.url(name, driver="postgresql", port=fault_proxy.port)
    connection = await asyncpg.connect(url)
    fault_proxy.refuse()
    fault_proxy.cut_all()
    with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError)):
        await connection.fetchval("select 1")
    with pytest.raises((ConnectionError, OSError, asyncpg.PostgresError)):
        await asyncio.wait_for(asyncpg.connect(url), 10)
    fault_proxy.refuse(False)
    connection = await asyncpg.connect(url)
    assert await connection.fetchval("select 1") == 1
    await connection.close()


@pytest.mark.mariadb
def test_mariadb_xa_commit_reply_lost(new_db: Callable[[str], Database], mariadb_fault_proxy: FaultProxy) -> None:
    database = new_db("mariadb")
    database.execute("create table t (n int primary key)")
    rule = mariadb_fault_proxy.drop_on(XA_COMMIT, when="after", database=database.name)
    url = database.url()
    connection = pymysql.connect(host="127.0.0.1", port=mariadb_fault_proxy.port, user=url.username or "root",
                                 password=url.password or "", database=database.name)  # fmt: skip
    try:
        cursor = connection.cursor()
        for statement in ("xa start 'tools-xa'", "insert into t values (1)", "xa end 'tools-xa'",
                          "xa prepare 'tools-xa'"):  # fmt: skip
            cursor.execute(statement)
        with pytest.raises(pymysql.err.OperationalError):
            cursor.execute("xa commit 'tools-xa'")
    finally:
        connection.close()

    assert rule.fired == ["xa commit 'tools-xa'"]
    assert database.fetch("select n from t") == [(1,)]
    assert [row for row in database.fetch("xa recover") if b"tools-xa" in bytes(row[3])] == []
