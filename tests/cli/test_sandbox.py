"""`db shell --sandbox` and `db run --dry-run` cannot write: every database is left exactly as it was.

Each test fills two binds through the raw drivers, runs every escape we know of inside the sandbox (SQL
transaction control, DDL, TRUNCATE, implicit-commit statements, the code's own commit, writes through
the engine and through the held connection), and compares every table (schema and rows) before and after,
read back with the raw drivers. Refused statements must say why.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.cli.apps import LogsBase, ShopBase
from tests.cli.helpers import create_tables
from tests.databases import KINDS

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation
    from tests.databases import Database

ENDS = "it would end the sandbox's transaction"
IMPLICIT = "MariaDB/MySQL commit the open transaction before"
OUTSIDE = "this connection of the engine is outside the sandbox"

# (code, what a refusal says, or None when the database runs it inside the transaction)
EVERYWHERE = [
    ('await sql("COMMIT")', ENDS),
    ('await sql("ROLLBACK")', ENDS),
    ('await sql("BEGIN")', "transaction control belongs to the sandbox"),
    ('await sql("SET autocommit = 1")', "switching autocommit would commit"),
    ("await (await session.connection()).commit()", "the sandbox's transaction is ended only by leaving"),
    (
        "async with (await session.connection()).engine.begin() as c:\n"
        "        await c.execute(text(\"insert into customers (name, email) values ('engine', 'e')\"))",
        OUTSIDE,
    ),
]
DDL = {
    "mariadb": [
        ("await sql(\"XA START 'x'\")", "XA transactions would run outside"),
        ('await sql("TRUNCATE TABLE customers")', IMPLICIT),
        ('await sql("CREATE TABLE escaped (id int)")', IMPLICIT),
        ('await sql("ALTER TABLE customers ADD COLUMN extra int")', IMPLICIT),
        ('await sql("RENAME TABLE customers TO renamed")', IMPLICIT),
        ('await sql("LOCK TABLES customers WRITE")', IMPLICIT),
        ("await sql(\"CREATE USER 'sandbox_escape'@'%'\")", IMPLICIT),
        ("await sql(\"GRANT SELECT ON customers TO 'sandbox_escape'@'%'\")", IMPLICIT),
        ('await sql("ANALYZE TABLE customers")', IMPLICIT),
        ('await sql("CREATE TEMPORARY TABLE scratch (id int)")', "a temporary table is not rolled back"),
        ('await sql("/*!40000 DROP TABLE customers */")', "MariaDB/MySQL run the contents of /*! ... */ comments"),
        ('await sql("DROP TABLE audit_log", bind="logs")', IMPLICIT),
    ],
    # transactional DDL: it runs, inside the sandbox, and is rolled back with it
    "postgresql": [
        ('await sql("TRUNCATE TABLE customers")', None),
        ('await sql("CREATE TABLE escaped (id int)")', None),
        ('await sql("ALTER TABLE customers ADD COLUMN extra int")', None),
        ('await sql("DROP TABLE audit_log", bind="logs")', None),
    ],
    "sqlite": [
        ('await sql("PRAGMA query_only = 1")', "PRAGMA query_only"),
        ('await sql("DELETE FROM customers")', None),
        ('await sql("CREATE TABLE escaped (id int)")', None),
        ('await sql("ALTER TABLE customers ADD COLUMN extra int")', None),
        ('await sql("DROP TABLE audit_log", bind="logs")', None),
    ],
}


def attempts_script(kind: str) -> tuple[str, list[str]]:
    """Code that writes on both binds, "commits", then tries every escape; and the reasons it must print."""
    lines = [
        "session.add(Customer(name='new', email='n'))",
        "session.add(AuditLog(message='new'))",
        "await session.commit()",  # releases a savepoint
        "await sql('update customers set name = \\'changed\\'')",
    ]
    reasons = []
    for code, reason in EVERYWHERE + DDL[kind]:
        lines += ["try:", f"    {code}", "except Exception as exc:", "    print('refused:', exc)"]
        if reason is not None:
            reasons.append(reason)
    lines.append("print('still inside:', await session.scalar(select(func.count(Customer.id))))")
    return "\n".join(lines), reasons


@pytest.fixture(params=KINDS)
def filled(
    request: pytest.FixtureRequest, new_db: Callable[[str], Database]
) -> tuple[str, dict[str, str], list[Database]]:
    shop, logs = new_db(request.param), new_db(request.param)
    binds = {"default": create_tables(shop, ShopBase), "logs": create_tables(logs, LogsBase)}
    shop.execute("insert into customers (name, email) values ('ada', 'ada@example.com')")
    logs.execute("insert into audit_log (message) values ('before')")
    return request.param, binds, [shop, logs]


def users_named_sandbox_escape(db: Database) -> list[tuple[object, ...]]:
    return db.fetch("select user from mysql.user where user = 'sandbox_escape'") if db.kind == "mariadb" else []


@pytest.mark.parametrize("command", ["shell", "run"])
def test_nothing_escapes(
    litestar: Callable[..., Invocation], filled: tuple[str, dict[str, str], list[Database]], command: str
) -> None:
    kind, binds, databases = filled
    before = [db.snapshot() for db in databases]
    code, reasons = attempts_script(kind)
    args = ("shell", "--sandbox", "-c", code) if command == "shell" else ("run", "--dry-run", code)

    result = litestar("db", *args, binds=binds, models="shop,logs")

    assert result.exit_code == 0, result.output
    refusals = [line for line in result.stdout.splitlines() if line.startswith("refused:")]
    assert len(refusals) == len(reasons), result.stdout
    for line, reason in zip(refusals, reasons, strict=True):
        assert "in the sandbox: " + reason in line, line
    if kind == "mariadb":  # nothing but the two rows reached the tables
        assert "still inside: 2" in result.stdout
    assert [db.snapshot() for db in databases] == before
    assert users_named_sandbox_escape(databases[0]) == []
    if command == "shell":
        assert "sandbox closed: everything done through its sessions was rolled back on every bind" in result.stderr
    else:
        # the code's own rows, plus those its UPDATE, DELETE or TRUNCATE changed inside the sandbox
        assert re.search(r"rolled back: --dry-run \(rows it would change: default \d+, logs 1\)\n$", result.stdout)


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_statement_fails_the_dry_run_with_its_reason(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database], kind: str
) -> None:
    shop = new_db(kind)
    binds = {"default": create_tables(shop, ShopBase)}
    code = "session.add(Customer(name='x', email='x'))\nawait session.flush()\nawait sql('COMMIT')"

    result = litestar("db", "run", "--dry-run", code, binds=binds)

    assert result.exit_code == 1
    assert result.stderr == (
        "Error: StatementRefusedError: bind 'default': refused 'COMMIT' in the sandbox: it would end the sandbox's "
        "transaction and make what was done in it permanent (rolled back)\n"
    )
    assert shop.fetch("select count(*) from customers") == [(0,)]


@pytest.mark.parametrize("kind", KINDS)
def test_dry_run_fails_where_the_real_run_fails_and_counts_rows_per_bind(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database], kind: str
) -> None:
    shop, logs = new_db(kind), new_db(kind)
    binds = {"default": create_tables(shop, ShopBase), "logs": create_tables(logs, LogsBase)}
    shop.execute("insert into customers (id, name, email) values (7, 'ada', 'a')")
    clash = "session.add(Customer(id=7, name='bo', email='b'))"  # not flushed by the code itself
    clash_then_exit = clash + "\nexit()"
    fine = "session.add(Customer(id=8, name='bo', email='b'))\nsession.add(AuditLog(message='m'))"

    dry_clash = litestar("db", "run", "--dry-run", clash, binds=binds, models="shop,logs")
    dry_exit = litestar("db", "run", "--dry-run", clash_then_exit, binds=binds, models="shop,logs")
    real_clash = litestar("db", "run", clash, binds=binds, models="shop,logs")
    dry_fine = litestar("db", "run", "--dry-run", "--json", fine, binds=binds, models="shop,logs")

    assert dry_clash.exit_code == dry_exit.exit_code == real_clash.exit_code == 1
    assert dry_clash.stderr.startswith("Error: IntegrityError")
    assert dry_fine.exit_code == 0, dry_fine.output
    document = dry_fine.json()
    assert (document["committed"], document["rolled_back_because"]) == (False, "--dry-run")
    assert document["rows_affected"] == document["rows_rolled_back"] == {"default": 1, "logs": 1}
    assert shop.fetch("select id from customers") == [(7,)]
    assert logs.fetch("select count(*) from audit_log") == [(0,)]


@pytest.mark.parametrize("kind", KINDS)
def test_sync_config_dry_run_keeps_the_code_s_commit_in_the_sandbox(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database], kind: str
) -> None:
    shop = new_db(kind)
    binds = {"default": create_tables(shop, ShopBase).replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")}
    binds["default"] = binds["default"].replace("+asyncmy", "+pymysql")
    code = (
        "session.add(Customer(name='x', email='x'))\nsession.commit()\n"
        "try:\n    sql_result = session.execute(text('COMMIT'))\nexcept Exception as exc:\n    print('refused:', exc)"
    )

    result = litestar("db", "run", "--dry-run", code, binds=binds, sync=True)

    assert result.exit_code == 0, result.output
    assert "refused 'COMMIT' in the sandbox" in result.stdout
    assert result.stdout.endswith("rolled back: --dry-run (rows it would change: default 1)\n")
    assert shop.fetch("select count(*) from customers") == [(0,)]


@pytest.mark.parametrize("policy", ["autocommit", "manual"])
def test_run_reports_what_the_code_committed_itself(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database], monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    shop = new_db("sqlite")
    binds = {"default": create_tables(shop, ShopBase)}
    monkeypatch.setenv("ALCHEMY_TEST_POLICY", policy)
    code = (
        "session.add(Customer(name='a', email='a'))\nawait session.commit()\nsession.add(Customer(name='b', email='b'))"
    )

    result = litestar("db", "run", "--json", code + "\nawait session.flush()", binds=binds)

    document = result.json()
    assert document["rows_committed_by_code"] == {"default": 1}
    if policy == "manual":
        assert (document["committed"], document["rows_rolled_back"]) == (False, {"default": 1})
        assert shop.fetch("select name from customers") == [("a",)]
    else:
        assert (document["committed"], document["rows_committed"]) == (True, {"default": 1})
        assert sorted(shop.fetch("select name from customers")) == [("a",), ("b",)]


@pytest.mark.postgresql
def test_rolled_back_is_said_only_when_it_happened(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    """A held connection killed behind SQLAlchemy's back cannot be rolled back by the sandbox: it says so.

    (Killed while SQLAlchemy watches, the loss is known, and the server's own rollback is reported.)
    """
    shop = new_db("postgresql")
    binds = {"default": create_tables(shop, ShopBase)}
    url = shop.url(sync=True).set(drivername="postgresql")
    kill_from_outside = (
        "import psycopg\n"
        "pid = await session.scalar(text('select pg_backend_pid()'))\n"
        "await session.commit()\n"  # the session is done: only the sandbox itself uses the connection again
        f"with psycopg.connect({url.render_as_string(hide_password=False)!r}, autocommit=True) as other:\n"
        "    other.execute('select pg_terminate_backend(%s)', (pid,))\n"
    )
    killed_inside = "await sql('select pg_terminate_backend(pg_backend_pid())')"

    outside = litestar("db", "shell", "--sandbox", "-c", kill_from_outside, binds=binds)
    inside = litestar("db", "shell", "--sandbox", "-c", killed_inside, binds=binds)
    dry_run = litestar("db", "run", "--dry-run", kill_from_outside, binds=binds)

    assert outside.exit_code == dry_run.exit_code == 1
    assert "Error: the sandbox could not roll back bind 'default'" in outside.stderr
    assert "rolled back on every bind" not in outside.output
    assert "Error: the sandbox could not roll back bind 'default'" in dry_run.stderr
    assert "rolled back: --dry-run" not in dry_run.output
    assert inside.exit_code == 1
    assert "rolled back on every bind (on 'default' by the server, when the connection was lost)" in inside.stderr
