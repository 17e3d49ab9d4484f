"""What a load run stands on: two fresh PostgreSQL databases and the load app served by uvicorn.

The databases live on the machine's test server (``TEST_POSTGRES_URL``) or, for fault runs, on a private
cluster the suite owns (``tests/faults/cluster.py``), which it may restart and terminate backends on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).parents[1]


def shared_server_url() -> Any:
    from sqlalchemy.engine import make_url

    return make_url(os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))


class Databases:
    """Two fresh PostgreSQL databases (orders and logs), with tables and the taken order; dropped at exit."""

    def __init__(self, server: Any = None) -> None:
        from sqlalchemy import create_engine, insert

        from bench.load_app import TAKEN, LogsBase, Order, OrdersBase

        self.server = server if server is not None else shared_server_url()
        tag = uuid.uuid4().hex[:10]
        self.names = {"default": f"load_{tag}_orders", "logs": f"load_{tag}_logs"}
        with self._admin() as admin:
            for name in self.names.values():
                admin.execute(f"create database {name}")
        for key, base in (("default", OrdersBase), ("logs", LogsBase)):
            engine = create_engine(self.url(key, "postgresql+psycopg"))
            base.metadata.create_all(engine)
            if key == "default":
                with engine.begin() as connection:
                    connection.execute(insert(Order).values(rid="seed", ref=TAKEN))
            engine.dispose()

    def _admin(self, database: str | None = None) -> Any:
        import psycopg

        return psycopg.connect(
            host=self.server.host, port=self.server.port or 5432, user=self.server.username,
            password=self.server.password or "", dbname=database or self.server.database, autocommit=True,
            connect_timeout=5,
        )  # fmt: skip

    def url(self, key: str, driver: str = "postgresql+asyncpg") -> str:
        url = self.server.set(drivername=driver, database=self.names[key])
        return str(url.render_as_string(hide_password=False))

    def rids(self, key: str) -> set[str]:
        """The request ids that have a row in the orders (``default``) or audit (``logs``) database."""
        import psycopg

        table = "orders" if key == "default" else "audit_log"
        with psycopg.connect(self.url(key, "postgresql"), autocommit=True) as connection:
            return {rid for (rid,) in connection.execute(f"select rid from {table}")}

    def _count(self, query: str) -> int:
        with self._admin() as admin:
            row = admin.execute(query, (list(self.names.values()),)).fetchone()
            return int(row[0]) if row else 0

    def idle_in_transaction(self) -> int:
        """Server sessions on the two databases holding a transaction nobody will finish (leaked)."""
        return self._count(
            "select count(*) from pg_stat_activity where datname = any(%s) and state like 'idle in transaction%%'"
        )

    def prepared(self) -> int:
        """Prepared (two-phase) transactions waiting in the two databases: each holds its locks until resolved."""
        return self._count("select count(*) from pg_prepared_xacts where database = any(%s)")

    def drop(self) -> None:
        with self._admin() as admin:
            for name in self.names.values():
                prepared = admin.execute("select gid from pg_prepared_xacts where database = %s", (name,))
                for (gid,) in prepared.fetchall():  # they would block the drop
                    with self._admin(name) as connection:
                        connection.execute(f"rollback prepared '{gid}'")
                admin.execute(f"drop database if exists {name} with (force)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``uvicorn bench.load_app:create_app`` in a child process, with its memory sampled from /proc."""

    def __init__(self, plugin: str, databases: Databases, *, two_phase: bool = False) -> None:
        self.port = _free_port()
        env = {**os.environ, "LOAD_PLUGIN": plugin, "LOAD_DEFAULT_URL": databases.url("default"),
               "LOAD_LOGS_URL": databases.url("logs"), "LOAD_TWO_PHASE": "1" if two_phase else "0"}  # fmt: skip
        # uvicorn closes idle keep-alive connections after 5 s; a busy client that reuses one at that moment
        # gets a ReadError (measured: 3 and 10 per 10,000 requests). That is transport noise, not the app, so
        # the suite keeps connections open for the whole run.
        command = [sys.executable, "-m", "uvicorn", "bench.load_app:create_app", "--factory", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "critical", "--no-access-log", "--timeout-keep-alive",
                   "300"]  # fmt: skip
        self.stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115  (read and closed when the server stops)
        self.stderr_text = ""
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=self.stderr)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.rss: list[tuple[float, int]] = []
        self.shutdown_seconds = 0.0
        self.killed = False
        """The server did not exit within 20 s of SIGINT and was killed."""

    async def ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"{self.base_url}/stats")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the load app did not start on port {self.port}")
                await asyncio.sleep(0.1)

    async def sample_memory(self, stop: asyncio.Event) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not stop.is_set():
            try:
                statm = Path(f"/proc/{self.process.pid}/statm").read_text()
            except OSError:
                return
            self.rss.append((time.monotonic(), int(statm.split()[1]) * page))
            await asyncio.sleep(0.1)

    async def checked_out(self, settle: float = 10.0) -> int:
        """Connections checked out of the pools, once abandoned handlers have had time to finish."""
        deadline = time.monotonic() + settle
        async with httpx.AsyncClient() as client:
            while True:
                out = sum((await client.get(f"{self.base_url}/stats")).json()["checked_out"].values())
                if out == 0 or time.monotonic() > deadline:
                    return int(out)
                await asyncio.sleep(0.2)

    def log(self) -> tuple[Counter[str], list[str]]:
        """The server's stderr, once it has stopped: log lines and Python warnings counted by kind, and the distinct
        ERROR and warning lines (first 10), tracebacks left out."""
        counts: Counter[str] = Counter()
        samples: list[str] = []
        for line in self.stderr_text.splitlines():
            level = line.split(" ", 1)[0]
            kind = level if level in ("ERROR", "WARNING") else "python warning" if "Warning: " in line else None
            if kind is None:
                continue
            counts[kind] += 1
            if kind != "WARNING" and line not in samples and len(samples) < 10:
                samples.append(line)
        return counts, samples

    def stop(self) -> None:
        """SIGINT: uvicorn shuts down gracefully, so the app's lifespan disposes the engines."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.process.kill()
            self.process.wait()
        self.shutdown_seconds = time.monotonic() - started
        if not self.stderr.closed:
            self.stderr.seek(0)
            self.stderr_text = self.stderr.read()
            self.stderr.close()
