"""``litestar db check``: every bind checked at once, each failure named, exit 0 only when all pass."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.cli.apps import LogsBase, MetricsBase, ShopBase
from tests.cli.helpers import create_tables, flat

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation
    from tests.databases import Database

PASSWORD = "n3ver-printed"


def rows(result: Invocation) -> dict[str, str]:
    """Table rows by bind key, cells joined by single spaces."""
    found = {}
    for line in result.stdout.splitlines():
        cells = " ".join(line.replace("│", " ").split())
        if line.startswith("│") and cells:
            found[cells.split(" ")[0]] = cells
    return found


@pytest.mark.postgresql
@pytest.mark.mariadb
def test_healthy_binds_on_three_servers(litestar: Callable[..., Invocation], new_db: Callable[[str], Database]) -> None:
    binds = {
        "default": create_tables(new_db("sqlite"), ShopBase),
        "logs": create_tables(new_db("postgresql"), LogsBase),
        "metrics": create_tables(new_db("mariadb"), MetricsBase),
    }
    result = litestar("db", "check", binds=binds, models="shop,logs,metrics")
    document = litestar("db", "check", "--json", binds=binds, models="shop,logs,metrics").json()

    assert result.exit_code == 0, result.output
    table = rows(result)
    assert " ok " in table["default"]
    assert "SQLite 3." in table["default"]
    assert "PostgreSQL 15." in table["logs"]
    assert "MariaDB 10." in table["metrics"]
    assert all(row.endswith("1 table matches the models") for row in table.values())
    assert result.stdout.strip().endswith("all checks passed")
    assert document["ok"] is True
    assert [(b["bind"], b["ok"], b["tables"], b["error"]) for b in document["binds"]] == [
        ("default", True, 1, None),
        ("logs", True, 1, None),
        ("metrics", True, 1, None),
    ]
    assert all(b["latency_ms"] > 0 and b["connect_ms"] > 0 for b in document["binds"])
    assert document["unknown_bind_keys"] == []


@pytest.mark.postgresql
def test_each_failure_is_named_per_bind(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database], refused_port: int, silent_port: int
) -> None:
    shop = new_db("sqlite")
    shop.execute("create table customers (id integer primary key, name varchar(40))")  # no email column
    binds = {
        "default": str(shop.url()),
        "logs": new_db("postgresql").url(password=PASSWORD).render_as_string(hide_password=False),  # no tables
        "stopped": f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:{refused_port}/app",
        "hung": f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:{silent_port}/app",
    }
    started = time.monotonic()
    result = litestar("db", "check", "--timeout", "1", binds=binds, models="shop,logs,archive")
    elapsed = time.monotonic() - started
    document = litestar("db", "check", "--timeout", "1", "--json", binds=binds, models="shop,logs,archive").json()

    assert result.exit_code == 1
    assert elapsed < 1 + 1
    table = rows(result)
    assert "FAIL" in table["default"]
    assert table["default"].endswith("missing column customers.email")
    assert table["logs"].endswith("missing table audit_log")
    assert "FAIL" in table["stopped"]
    assert "Connect call failed" in table["stopped"]
    assert table["hung"].endswith("no answer within 1 s (timed out)")
    assert (
        "FAIL model 'ArchivedOrder' has __bind_key__ = 'archive', which is not a configured bind "
        "(configured: 'default', 'logs', 'stopped', 'hung'); add 'archive' to binds= or fix the model" in result.stdout
    )
    assert result.stdout.strip().endswith("5 checks failed")
    assert document["ok"] is False
    by_bind = {b["bind"]: b for b in document["binds"]}
    assert by_bind["default"]["missing_columns"] == ["customers.email"]
    assert by_bind["logs"]["missing_tables"] == ["audit_log"]
    assert by_bind["hung"]["error"] == "no answer within 1 s (timed out)"
    assert by_bind["stopped"]["url"] == f"postgresql+asyncpg://app:***@127.0.0.1:{refused_port}/app"
    assert document["unknown_bind_keys"] == [{"kind": "model", "name": "ArchivedOrder", "bind": "archive"}]
    assert PASSWORD not in result.output + str(document)


@pytest.mark.parametrize(
    ("driver", "sync"),
    [("postgresql+asyncpg", False), ("mysql+asyncmy", False), ("postgresql+psycopg", True), ("mysql+pymysql", True)],
)
def test_silent_servers_are_checked_concurrently(
    driver: str, sync: bool, litestar: Callable[..., Invocation], silent_port: int, tmp_path: object
) -> None:
    """Four hung servers end in about one timeout, not four, and the healthy bind is still reported."""
    healthy = f"sqlite:///{tmp_path}/ok.db" if sync else f"sqlite+aiosqlite:///{tmp_path}/ok.db"
    binds = {
        "default": healthy,
        **{f"hung{n}": f"{driver}://app:{PASSWORD}@127.0.0.1:{silent_port}/app" for n in range(4)},
    }
    started = time.monotonic()
    result = litestar("db", "check", "--timeout", "1", binds=binds, models="", sync=sync)
    elapsed = time.monotonic() - started

    assert result.exit_code == 1
    assert elapsed < 1 + 1
    table = rows(result)
    assert " ok " in table["default"]
    assert all(table[f"hung{n}"].endswith("no answer within 1 s (timed out)") for n in range(4))
    assert PASSWORD not in result.output


def test_bind_option_selects_binds(litestar: Callable[..., Invocation], tmp_path: object, refused_port: int) -> None:
    binds = {
        "default": f"sqlite+aiosqlite:///{tmp_path}/a.db",
        "broken": f"postgresql+asyncpg://app@127.0.0.1:{refused_port}/app",
    }
    only_default = litestar("db", "check", "--bind", "default", binds=binds, models="")
    both = litestar("db", "check", "-b", "default", "-b", "broken", binds=binds, models="")

    assert only_default.exit_code == 0
    assert set(rows(only_default)) == {"default"}
    assert both.exit_code == 1
    assert set(rows(both)) == {"default", "broken"}


@pytest.mark.postgresql
def test_missing_column_on_postgresql(litestar: Callable[..., Invocation], new_db: Callable[[str], Database]) -> None:
    db = new_db("postgresql")
    db.execute("create table customers (id serial primary key, email varchar(80))")  # no name column
    result = litestar("db", "check", binds={"default": str(db.url())}, models="shop")
    assert result.exit_code == 1
    assert rows(result)["default"].endswith("missing column customers.name")


def test_healthy_sqlite_passes(litestar: Callable[..., Invocation], new_db: Callable[[str], Database]) -> None:
    result = litestar("db", "check", binds={"default": create_tables(new_db("sqlite"), ShopBase)})
    assert result.exit_code == 0
    assert result.stdout.strip().endswith("all checks passed")


@pytest.mark.postgresql
@pytest.mark.mariadb
def test_prepared_transactions_left_behind_fail_the_check_with_their_statements(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    import plugin.twophase

    monkeypatch.setattr(plugin.twophase, "STALE_AFTER", 0.5)
    pg, maria = new_db("postgresql"), new_db("mariadb")
    binds = {"default": create_tables(pg, ShopBase), "logs": create_tables(maria, LogsBase)}
    # A transaction prepared and then abandoned on each server (its connection closed).
    # xids are global to a server: name them after this test's own databases
    pg_xid, maria_xid = f"left_{pg.name}", f"left_{maria.name}"
    pg.execute("create table held (n int)")
    maria.execute("create table held (n int)")
    connection = pg.connect()
    connection.autocommit = False
    connection.cursor().execute("insert into held values (1)")
    connection.cursor().execute(f"prepare transaction '{pg_xid}'")
    connection.close()
    connection = maria.connect()
    for statement in (f"xa start '{maria_xid}'", "insert into held values (1)", f"xa end '{maria_xid}'"):
        connection.cursor().execute(statement)
    connection.cursor().execute(f"xa prepare '{maria_xid}'")
    connection.close()
    try:
        time.sleep(0.6)
        result = litestar("db", "check", binds=binds, models="shop,logs")
        document = litestar("db", "check", "--json", binds=binds, models="shop,logs").json()
    finally:
        pg.execute(f"rollback prepared '{pg_xid}'")
        maria.execute(f"xa rollback '{maria_xid}'")

    assert result.exit_code == 1
    text = flat(result.stdout)
    assert (
        f"prepared transactions left: {pg_xid} (finish with COMMIT PREPARED '{pg_xid}' or ROLLBACK PREPARED '{pg_xid}')"
    ) in text
    assert f"{maria_xid} (finish with XA COMMIT '{maria_xid}' or XA ROLLBACK '{maria_xid}')" in text
    default, logs = document["binds"]
    assert (default["ok"], logs["ok"]) == (False, False)
    assert default["prepared_transactions"] == [
        {"xid": pg_xid, "commit": f"COMMIT PREPARED '{pg_xid}'", "rollback": f"ROLLBACK PREPARED '{pg_xid}'"}
    ]
    assert {"xid": maria_xid, "commit": f"XA COMMIT '{maria_xid}'", "rollback": f"XA ROLLBACK '{maria_xid}'"} in logs[
        "prepared_transactions"
    ]
