"""``litestar db run``: one transaction under the request policy, judged by the rows in the databases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.cli.apps import LogsBase, ShopBase
from tests.cli.helpers import create_tables, flat
from tests.databases import KINDS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.cli.conftest import Invocation
    from tests.databases import Database

ADD_ADA = "session.add(Customer(name='ada', email='ada@example.com'))"


@pytest.fixture(params=KINDS[:2])
def databases(
    request: pytest.FixtureRequest, new_db: Callable[[str], Database]
) -> tuple[dict[str, str], Database, Database]:
    shop, logs = new_db(request.param), new_db(request.param)
    return {"default": create_tables(shop, ShopBase), "logs": create_tables(logs, LogsBase)}, shop, logs


def names(db: Database) -> list[str]:
    return [name for (name,) in db.fetch("select name from customers order by id")]


def test_success_commits(
    litestar: Callable[..., Invocation], databases: tuple[dict[str, str], Database, Database]
) -> None:
    binds, shop, logs = databases
    code = f"{ADD_ADA}\nsession.add(AuditLog(message='ada signed up'))"
    result = litestar("db", "run", code, binds=binds, models="shop,logs")

    assert result.exit_code == 0, result.output
    assert result.stdout == "committed (rows affected: default 1, logs 1)\n"
    assert names(shop) == ["ada"]
    assert logs.fetch("select message from audit_log") == [("ada signed up",)]


def test_an_exception_rolls_back_and_exits_1(
    litestar: Callable[..., Invocation], databases: tuple[dict[str, str], Database, Database]
) -> None:
    binds, shop, _ = databases
    code = f"{ADD_ADA}\nawait session.flush()\nraise RuntimeError('changed my mind')"
    result = litestar("db", "run", code, binds=binds, models="shop,logs")
    with_traceback = litestar("db", "run", "--traceback", code, binds=binds, models="shop,logs")

    assert result.exit_code == 1
    assert result.stderr == "Error: RuntimeError: changed my mind (rolled back)\n"
    assert "Traceback" not in result.output
    assert with_traceback.exit_code == 1
    assert '  File "<db run>", line 3, in <module>' in with_traceback.stderr
    assert names(shop) == []


def test_dry_run_rolls_back_and_says_so(
    litestar: Callable[..., Invocation], databases: tuple[dict[str, str], Database, Database]
) -> None:
    binds, shop, _ = databases
    result = litestar("db", "run", "--dry-run", f"{ADD_ADA}\nawait session.flush()", binds=binds, models="shop,logs")

    assert result.exit_code == 0
    assert result.stdout == "rolled back: --dry-run (rows it would change: default 1)\n"
    assert names(shop) == []


def test_sql_on_the_logs_bind_and_json(
    litestar: Callable[..., Invocation], databases: tuple[dict[str, str], Database, Database]
) -> None:
    binds, shop, logs = databases
    insert = litestar("db", "run", "--sql", "insert into audit_log (message) values ('by sql')", "--bind", "logs",
                      "--json", binds=binds, models="shop,logs")  # fmt: skip
    query = litestar("db", "run", "--sql", "select id, message from audit_log", "--bind", "logs", "--json",
                     binds=binds, models="shop,logs")  # fmt: skip

    assert insert.exit_code == 0, insert.output
    assert insert.json() == {
        "ok": True,
        "committed": True,
        "dry_run": False,
        "rolled_back_because": None,
        "rows_affected": {"logs": 1},
        "rows_committed": {"logs": 1},
        "rows_committed_by_code": {},
        "rows_rolled_back": {},
        "discarded_unflushed": [],
        "result": None,
        "error": None,
    }
    assert query.json()["result"] == {"columns": ["id", "message"], "rows": [[1, "by sql"]]}
    assert logs.fetch("select message from audit_log") == [("by sql",)]
    assert names(shop) == []


def test_the_value_of_a_trailing_expression_is_printed(
    litestar: Callable[..., Invocation], databases: tuple[dict[str, str], Database, Database]
) -> None:
    binds, _, _ = databases
    litestar("db", "run", ADD_ADA, binds=binds, models="shop,logs")
    rows = litestar("db", "run", "await session.execute(select(Customer.name, Customer.email))", binds=binds,
                    models="shop,logs")  # fmt: skip
    scalar = litestar("db", "run", "--json", "await session.scalar(select(func.count(Customer.id)))", binds=binds,
                      models="shop,logs")  # fmt: skip

    assert rows.exit_code == 0
    assert "ada ada@example.com" in flat(rows.stdout)
    assert "1 row" in rows.stdout
    assert scalar.json()["result"] == {"repr": "1"}


def test_a_failed_commit_is_one_line_and_exit_1(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    shop = new_db("sqlite")
    shop.execute("create table customers (id integer primary key, name varchar(40) unique, email varchar(80))")
    binds = {"default": str(shop.url())}
    assert litestar("db", "run", ADD_ADA, binds=binds).exit_code == 0
    again = litestar("db", "run", ADD_ADA, binds=binds)

    assert again.exit_code == 1
    assert again.stderr.startswith("Error: flush failed on bind 'default': IntegrityError: UNIQUE constraint failed")
    assert again.stderr.count("\n") == 1  # one line: the plugin's ERROR log is not printed as well
    assert names(shop) == ["ada"]


def test_file_and_usage_errors(
    litestar: Callable[..., Invocation], tmp_path: Path, new_db: Callable[[str], Database]
) -> None:
    shop = new_db("sqlite")
    binds = {"default": create_tables(shop, ShopBase)}
    script = tmp_path / "job.py"
    script.write_text(f"{ADD_ADA}\nawait session.flush()\nawait session.scalar(select(func.count(Customer.id)))\n")

    from_file = litestar("db", "run", "--file", str(script), binds=binds)
    neither = litestar("db", "run", binds=binds)
    both = litestar("db", "run", "1", "--sql", "select 1", binds=binds)
    missing = litestar("db", "run", "--file", str(tmp_path / "nope.py"), binds=binds)

    assert (from_file.exit_code, from_file.stdout) == (0, "1\ncommitted (rows affected: default 1)\n")
    assert names(shop) == ["ada"]
    assert neither.exit_code == both.exit_code == missing.exit_code == 2
    assert "give exactly one of CODE, --file or --sql" in flat(neither.stderr)
    assert "give exactly one of CODE, --file or --sql" in flat(both.stderr)
    assert f"cannot read {tmp_path / 'nope.py'}: No such file or directory" in flat(missing.stderr)


def test_manual_policy_never_commits(
    litestar: Callable[..., Invocation], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same policy object as requests: in manual mode `db run` commits only what the code commits."""
    import sqlite3

    path = tmp_path / "manual.db"
    sqlite3.connect(path).execute("create table customers (id integer primary key, name text, email text)").close()
    monkeypatch.setenv("ALCHEMY_TEST_POLICY", "manual")
    left_open = litestar("db", "run", ADD_ADA, binds={"default": f"sqlite+aiosqlite:///{path}"})
    by_hand = litestar(
        "db", "run", f"{ADD_ADA}\nawait session.commit()", binds={"default": f"sqlite+aiosqlite:///{path}"}
    )

    assert left_open.stdout == (
        "rolled back: the transaction policy is manual (rows rolled back: none; unflushed changes discarded in "
        "session)\n"
    )
    assert by_hand.exit_code == 0
    assert by_hand.stdout == "committed by the code itself (rows: default 1)\n"
    assert sqlite3.connect(path).execute("select count(*) from customers").fetchone() == (1,)


def test_exit_means_what_it_means_in_python(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    shop = new_db("sqlite")
    binds = {"default": create_tables(shop, ShopBase)}
    ends_early = litestar("db", "run", f"{ADD_ADA}\nexit()\nraise RuntimeError('never reached')", binds=binds)
    fails = litestar("db", "run", "session.add(Customer(name='bo', email='b'))\nawait session.flush()\nexit(3)",
                     binds=binds)  # fmt: skip
    says_why = litestar("db", "shell", "-c", "raise SystemExit('no customers to import')", binds=binds)

    assert (ends_early.exit_code, ends_early.stdout) == (0, "committed (rows affected: default 1)\n")
    assert (fails.exit_code, fails.stderr) == (3, "Error: the code called exit(3) (rolled back)\n")
    assert (says_why.exit_code, says_why.stderr) == (1, "no customers to import\n")
    assert names(shop) == ["ada"]


@pytest.mark.postgresql
def test_tracebacks_never_show_a_bind_password(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    password = "in-a-traceback-0"
    binds = {"default": new_db("postgresql").url(password=password).render_as_string(hide_password=False)}
    leak = "raise RuntimeError(default_engine.url.render_as_string(hide_password=False))"
    run = litestar("db", "run", "--traceback", leak, binds=binds, models="")
    shell = litestar("db", "shell", "-c", leak, binds=binds, models="")

    assert run.exit_code == shell.exit_code == 1
    assert "RuntimeError: postgresql+asyncpg://postgres:***@" in shell.stderr
    assert password not in run.output + shell.output
