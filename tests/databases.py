"""Throwaway databases on SQLite, PostgreSQL and MariaDB for tests.

Each test that asks for a server database gets a fresh one (``t_<random>``) and it is dropped
afterwards, so runs never see each other's data. Servers come from ``TEST_POSTGRES_URL`` and
``TEST_MARIADB_URL``; when one is unreachable its tests are skipped with the reason, unless
``REQUIRE_DB_SERVERS=1`` (what CI sets), which turns the skip into a failure.

Tests read results back through the plain DBAPI drivers (sqlite3, psycopg, pymysql), not through the
plugin, so a passing test means the row really is in that database.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL, make_url

POSTGRES_URL = make_url(os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
MARIADB_URL = make_url(os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"))
REQUIRE_SERVERS = os.environ.get("REQUIRE_DB_SERVERS") == "1"

ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "mariadb": "mysql+asyncmy"}
SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "mariadb": "mysql+pymysql"}


def _pg_connect(url: URL, database: str | None = None) -> Any:
    import psycopg

    return psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password or "",
        dbname=database or url.database, autocommit=True, connect_timeout=3,
    )  # fmt: skip


def _maria_connect(url: URL, database: str | None = None) -> Any:
    import pymysql

    return pymysql.connect(
        host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
        password=url.password or "", database=database or url.database, autocommit=True, connect_timeout=3,
    )  # fmt: skip


@cache
def server_problem(kind: str) -> str | None:
    """Why the server for ``kind`` cannot be used, or None when it can (checked once per run)."""
    url, connect = (POSTGRES_URL, _pg_connect) if kind == "postgresql" else (MARIADB_URL, _maria_connect)
    try:
        connect(url).close()
    except Exception as exc:
        env = "TEST_POSTGRES_URL" if kind == "postgresql" else "TEST_MARIADB_URL"
        return f"{kind} at {url.render_as_string(hide_password=True)} is unreachable ({exc}); set {env}"
    return None


def require_server(kind: str) -> None:
    """Skip (or, under REQUIRE_DB_SERVERS=1, fail) the test when the ``kind`` server is unusable."""
    if kind != "sqlite" and (problem := server_problem(kind)):
        if REQUIRE_SERVERS:
            pytest.fail(f"REQUIRE_DB_SERVERS=1 but {problem}")
        pytest.skip(problem)


def require_prepared_transactions(db: Database) -> None:
    """Skip (or, under REQUIRE_DB_SERVERS=1, fail) a two-phase test when PostgreSQL cannot prepare."""
    [(setting,)] = db.fetch("show max_prepared_transactions")
    if int(setting) == 0:
        reason = (
            "PostgreSQL has max_prepared_transactions = 0, so two-phase commit cannot run; enable it with "
            "ALTER SYSTEM SET max_prepared_transactions = 20 and a server restart (.ci/run does this)"
        )
        pytest.fail(reason) if REQUIRE_SERVERS else pytest.skip(reason)


@dataclass
class Database:
    """One throwaway database, reachable through the plugin's async and sync drivers and raw DBAPI."""

    kind: str
    name: str
    path: Path | None = None
    _server: URL | None = field(default=None, repr=False)

    def url(self, *, sync: bool = False, password: str | None = None) -> URL:
        """SQLAlchemy URL of this database (async driver unless ``sync``).

        With ``password``, the URL carries it: PostgreSQL (trust auth) accepts any, and on MariaDB a user
        named after the database is created with that password, so the password is really used.
        """
        drivername = (SYNC_DRIVERS if sync else ASYNC_DRIVERS)[self.kind]
        if self.kind == "sqlite":
            return make_url(f"{drivername}:///{self.path}")
        assert self._server is not None
        url = self._server.set(drivername=drivername, database=self.name)
        if password is None:
            return url
        if self.kind == "mariadb":
            self._ensure_user(password)
            url = url.set(username=self.name)
        return url.set(password=password)

    def _ensure_user(self, password: str) -> None:
        connection = self._server_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(f"create user if not exists '{self.name}'@'%%' identified by %s", (password,))
            cursor.execute(f"grant all on {self.name}.* to '{self.name}'@'%'")
        finally:
            connection.close()

    def _server_connection(self, database: str | None = None) -> Any:
        assert self._server is not None, "SQLite has no server"
        return (_pg_connect if self.kind == "postgresql" else _maria_connect)(self._server, database)

    def connect(self) -> Any:
        """A raw DBAPI connection to this database (autocommit on the servers)."""
        if self.kind == "sqlite":
            return sqlite3.connect(str(self.path))
        return self._server_connection(self.name)

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, read directly from the database (not through the plugin)."""
        connection = self.connect()
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            connection.close()

    def snapshot(self) -> dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
        """Every table's schema (columns: name, type, nullability) and rows, read with the raw driver."""
        if self.kind == "sqlite":
            tables = [name for (name,) in self.fetch("select name from sqlite_master where type = 'table'")]
            schema = {t: self.fetch(f"select name, type, \"notnull\" from pragma_table_info('{t}')") for t in tables}
            schema["(objects)"] = self.fetch("select type, name, sql from sqlite_master order by name")
        else:
            where = "table_schema = 'public'" if self.kind == "postgresql" else f"table_schema = '{self.name}'"
            tables = [name for (name,) in self.fetch(f"select table_name from information_schema.tables where {where}")]
            schema = {
                t: self.fetch(
                    "select column_name, data_type, is_nullable from information_schema.columns "
                    f"where {where} and table_name = '{t}' order by ordinal_position"
                )
                for t in tables
            }
        return {t: (schema[t], sorted(self.fetch(f"select * from {t}"), key=repr)) for t in tables} | {
            "(objects)": (schema.get("(objects)", []), [])
        }

    def execute(self, sql: str) -> None:
        """Run one statement directly (and commit it)."""
        connection = self.connect()
        try:
            connection.cursor().execute(sql)
            connection.commit()
        finally:
            connection.close()

    def open_connections(self) -> int:
        """Server-side connections currently open to this database (asked from another database)."""
        if self.kind == "postgresql":
            sql = f"select count(*) from pg_stat_activity where datname = '{self.name}'"
        elif self.kind == "mariadb":
            sql = f"select count(*) from information_schema.processlist where db = '{self.name}'"
        else:
            raise ValueError("SQLite has no server to ask; count pool events instead")
        connection = self._server_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            return int(cursor.fetchone()[0])
        finally:
            connection.close()

    def create(self) -> None:
        if self.kind == "sqlite":
            return
        connection = self._server_connection()
        try:
            connection.cursor().execute(f"create database {self.name}")
        finally:
            connection.close()

    def drop(self) -> None:
        if self.kind == "sqlite":
            return
        force = " with (force)" if self.kind == "postgresql" else ""
        connection = self._server_connection()
        try:
            if self.kind == "postgresql":  # prepared two-phase transactions would block the drop
                cursor = connection.cursor()
                cursor.execute(f"select gid from pg_prepared_xacts where database = '{self.name}'")
                for (gid,) in cursor.fetchall():
                    connection.cursor().execute(f"rollback prepared '{gid}'")
            connection.cursor().execute(f"drop database if exists {self.name}{force}")
            if self.kind == "mariadb":
                connection.cursor().execute(f"drop user if exists '{self.name}'@'%'")
        finally:
            connection.close()


def new_database(kind: str, tmp_path: Path) -> Database:
    """Create a fresh database of ``kind`` ("sqlite", "postgresql" or "mariadb")."""
    require_server(kind)
    name = f"t_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        return Database(kind, name, path=tmp_path / f"{name}.db")
    database = Database(kind, name, _server=POSTGRES_URL if kind == "postgresql" else MARIADB_URL)
    database.create()
    return database


KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]
"""Parametrize a test over every database kind: ``@pytest.mark.parametrize("kind", KINDS)``."""
