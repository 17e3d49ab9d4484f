from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING

import pytest

from tests.databases import MARIADB_URL, REQUIRE_SERVERS, Database, new_database, require_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.faults import FaultProxy, PrivateCluster
    from tests.faults.standby import PrivateStandby


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Every Litestar app a test builds applies its logging config to the root logger; undo that after
    each test, so later tests do not log through handlers bound to streams pytest has since closed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def new_db(tmp_path: Path) -> Iterator[Callable[[str], Database]]:
    """Factory of fresh databases (``new_db("postgresql")``), all dropped after the test."""
    created: list[Database] = []

    def make(kind: str) -> Database:
        database = new_database(kind, tmp_path)
        created.append(database)
        return database

    yield make
    for database in created:
        database.drop()


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of this session's own (tests/faults/cluster.py), running; tests may stop,
    restart or kill it and terminate its backends. Skipped (failed under REQUIRE_DB_SERVERS=1) when this
    machine cannot build one."""
    from tests.faults import PrivateCluster, cluster_problem

    if problem := cluster_problem():
        if REQUIRE_SERVERS:
            pytest.fail(f"REQUIRE_DB_SERVERS=1 but no private PostgreSQL cluster: {problem}")
        pytest.skip(problem)
    with PrivateCluster.leased() as cluster:
        cluster.start()
        yield cluster


@pytest.fixture(scope="session")
def replica_pair() -> Iterator[tuple[PrivateCluster, PrivateStandby]]:
    """A private PostgreSQL primary and its streaming hot standby (tests/faults/standby.py), both running;
    the standby applies the primary's commits 2 s late. Built on first use and kept between runs. Skipped
    (failed under REQUIRE_DB_SERVERS=1) when this machine cannot build them."""
    from tests.faults.standby import leased_pair, standby_problem

    if problem := standby_problem():
        if REQUIRE_SERVERS:
            pytest.fail(f"REQUIRE_DB_SERVERS=1 but no private PostgreSQL standby: {problem}")
        pytest.skip(problem)
    with leased_pair() as pair:
        yield pair


@pytest.fixture
def cluster_db(private_cluster: PrivateCluster) -> Iterator[Callable[[], str]]:
    """Factory of fresh databases in the private cluster (``name = cluster_db()``), dropped after the
    test; the cluster is started again first if the test left it down."""
    created: list[str] = []

    def make() -> str:
        created.append(private_cluster.create_database())
        return created[-1]

    yield make
    private_cluster.start()
    for name in created:
        private_cluster.drop_database(name)


@pytest.fixture
def fault_proxy(private_cluster: PrivateCluster) -> Iterator[FaultProxy]:
    """A fault proxy in front of the private cluster: ``private_cluster.url(name, port=fault_proxy.port)``."""
    from tests.faults import FaultProxy

    with FaultProxy.leased(private_cluster.port) as proxy:
        yield proxy


@pytest.fixture
def mariadb_fault_proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of the MariaDB test server (it only cuts or holds this test's own traffic)."""
    from tests.faults import FaultProxy

    require_server("mariadb")
    with FaultProxy.leased(MARIADB_URL.port or 3306, protocol="mysql") as proxy:
        yield proxy


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections and never says a word (a hung server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


@pytest.fixture
def refused_port() -> int:
    """A local port with nothing listening (a stopped server)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port
