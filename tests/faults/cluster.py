"""A private PostgreSQL 15 cluster that tests may stop, restart and terminate backends on.

The machine's shared server (port 5432) must never be stopped or reconfigured by a test, so fault tests
use their own cluster, made with the Debian wrappers (``pg_createcluster``, ``pg_ctlcluster``; the server
runs as the ``postgres`` user) on a leased port of ``FAULT_PORTS`` (see ``tests/faults/ports.py``). The
cluster ``alchemy_faults_<port>`` is created on first use and kept for later runs (creating it takes about
a second, starting it two); a session stops it when it is done. It has trust authentication for local and
127.0.0.1 connections, ``max_prepared_transactions = 20`` (two-phase commit) and no TLS (the fault proxy
reads the protocol in clear).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tests.faults.ports import PortLease, lease_port, port_is_free

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

VERSION = "15"
StopMode = Literal["smart", "fast", "immediate"]
"""``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash (recovery at start)."""

_HBA = """\
# Written by tests/faults/cluster.py: a throwaway cluster for fault tests, loopback only.
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    replication     all             127.0.0.1/32            trust
"""
_SETTINGS = """\
# Written by tests/faults/cluster.py (read after postgresql.conf: these win).
listen_addresses = '127.0.0.1'
max_prepared_transactions = 20
ssl = off
"""


def cluster_problem() -> str | None:
    """Why a private cluster cannot be built on this machine, or None when it can."""
    missing = [tool for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster") if shutil.which(tool) is None]
    if missing:
        return f"the Debian PostgreSQL wrappers are missing ({', '.join(missing)}): install postgresql-common"
    if not Path(f"/usr/lib/postgresql/{VERSION}/bin/postgres").exists():
        return f"the PostgreSQL {VERSION} server binaries are missing: install postgresql-{VERSION}"
    if os.geteuid() != 0:
        return "private clusters need root (the server runs as the postgres user)"
    return None


class PrivateCluster:
    """A PostgreSQL cluster this test session owns: start, stop, restart, SQL and backend control.

    Example::

        with PrivateCluster.leased() as cluster:
            cluster.start()
            name = cluster.create_database()
            url = cluster.url(name)  # postgresql+asyncpg://postgres@127.0.0.1:<port>/<name>
            cluster.restart(mode="immediate")
    """

    def __init__(self, port: int, name: str | None = None, *, prefix: str = "alchemy_faults") -> None:
        self.port = port
        self.name = name or f"{prefix}_{port}"
        self._lease: PortLease | None = None

    def __repr__(self) -> str:
        return f"PrivateCluster({self.name!r}, port={self.port})"

    @classmethod
    @contextlib.contextmanager
    def leased(cls, prefix: str = "alchemy_faults") -> Iterator[PrivateCluster]:
        """A cluster named ``<prefix>_<port>`` on a leased port (created if missing, configured); stopped and
        the port released at exit."""
        lease = lease_port(lambda port: port_is_free(port) or cls(port, prefix=prefix).is_running())
        cluster = cls(lease.port, prefix=prefix)
        cluster._lease = lease
        try:
            cluster.ensure()
            yield cluster
        finally:
            with contextlib.suppress(Exception):
                cluster.stop()
            lease.release()

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def config_dir(self) -> Path:
        return Path(f"/etc/postgresql/{VERSION}/{self.name}")

    def ensure(self) -> None:
        """Create the cluster if it does not exist, and (re)apply its settings and pg_hba.conf."""
        if not self.config_dir.exists():
            _run("pg_createcluster", VERSION, self.name, "--port", str(self.port), "--start-conf", "manual",
                 "--", "--auth=trust")  # fmt: skip
        for path, text in ((self.config_dir / "conf.d" / "faults.conf", _SETTINGS + f"port = {self.port}\n"),
                           (self.config_dir / "pg_hba.conf", _HBA)):  # fmt: skip
            if not path.exists() or path.read_text() != text:
                path.write_text(text)

    def is_running(self) -> bool:
        if not self.config_dir.exists():
            return False
        return _ctl(self.name, "status", check=False).returncode == 0

    def start(self, timeout: float = 30) -> None:
        """Start the server (if it is not running) and wait until it accepts connections."""
        if not self.is_running():
            _ctl(self.name, "start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.execute("select 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server (if it runs); ``immediate`` kills it like a crash."""
        if self.is_running():
            _ctl(self.name, "stop", "-m", mode)

    def restart(self, mode: StopMode = "fast", down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds``, start again and wait until it accepts connections."""
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def drop(self) -> None:
        """Remove the cluster and its data for good (the next :meth:`ensure` creates it afresh)."""
        if self.config_dir.exists():
            _run("pg_dropcluster", "--stop", VERSION, self.name)

    # -- SQL -------------------------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, driver: str = "postgresql+asyncpg", port: int | None = None) -> str:
        """A URL of ``database`` in this cluster; ``port`` points it at a fault proxy instead."""
        return f"{driver}://postgres@127.0.0.1:{port or self.port}/{database}"

    def execute(self, sql: str, params: Sequence[Any] = (), *, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in autocommit (like ``psql -c``); the rows it returned, if any."""
        import psycopg

        with psycopg.connect(self.url(database, driver="postgresql"), autocommit=True, connect_timeout=3) as conn:
            cursor = conn.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def create_database(self, name: str | None = None) -> str:
        import uuid

        name = name or f"f_{uuid.uuid4().hex[:12]}"
        self.execute(f"create database {name}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, first rolling back its prepared transactions (they would block the drop)."""
        for gid in self.prepared_transactions(name):
            self.execute(f"rollback prepared '{gid}'", database=name)
        self.execute(f"drop database if exists {name} with (force)")

    def terminate_backends(self, database: str, states: Sequence[str] | None = None) -> int:
        """``pg_terminate_backend`` every session on ``database`` (only those in ``states``, e.g.
        ``("active", "idle in transaction")``, when given); how many were terminated."""
        sql = "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = %s"
        sql += " and pid <> pg_backend_pid()"
        params: list[Any] = [database]
        if states is not None:
            sql += " and state = any(%s)"
            params.append(list(states))
        return int(self.execute(sql, params)[0][0])

    def prepared_transactions(self, database: str | None = None) -> list[str]:
        """Global ids of the prepared (two-phase) transactions waiting in ``database`` (or anywhere)."""
        if database is None:
            return [gid for (gid,) in self.execute("select gid from pg_prepared_xacts order by prepared")]
        sql = "select gid from pg_prepared_xacts where database = %s order by prepared"
        return [gid for (gid,) in self.execute(sql, [database])]

    def sessions(self, database: str, state: str | None = None) -> int:
        """Server sessions open on ``database`` (in ``state``, e.g. ``"idle in transaction"``, when given)."""
        sql = "select count(*) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()"
        params: list[Any] = [database]
        if state is not None:
            sql += " and state = %s"
            params.append(state)
        return int(self.execute(sql, params)[0][0])


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _ctl(name: str, action: str, *options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("pg_ctlcluster", "--skip-systemctl-redirect", VERSION, name, action, *options, check=check)
