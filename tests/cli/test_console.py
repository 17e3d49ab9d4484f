"""``litestar db console``: the database's own client, with the password kept off its command line.

The client inherits the terminal, so these tests run the installed ``litestar`` executable in a
subprocess (as a user would) and read what the client printed and its exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.cli.apps import ShopBase
from tests.cli.helpers import create_tables

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.databases import Database

ROOT = Path(__file__).parents[2]
LITESTAR = Path(sys.executable).with_name("litestar")
PASSWORD = "Console-Pw_7f3a"


def console(binds: dict[str, str], *args: str, path: str | None = None, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "ALCHEMY_TEST_BINDS": json.dumps(binds), "ALCHEMY_TEST_MODELS": "shop"}
    if path is not None:
        env["PATH"] = path
    command = [str(LITESTAR), "--app", "tests.cli.apps:create_app", "db", "console", *args]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )


def finish(process: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str, str]:
    out, err = process.communicate(stdin, timeout=60)
    return process.returncode, out, err


def server_url(db: Database) -> str:
    create_tables(db, ShopBase)
    return db.url(password=PASSWORD).render_as_string(hide_password=False)


def test_sqlite_runs_sqlite3_on_the_file_and_passes_arguments(new_db: Callable[[str], Database]) -> None:
    db = new_db("sqlite")
    url = create_tables(db, ShopBase)
    db.execute("insert into customers (name, email) values ('ada', 'ada@example.com')")

    code, out, err = finish(console({"default": url}, "--", "-bail", "select name from customers"))
    assert (code, out, err) == (0, "ada\n", "")

    code, out, err = finish(console({"default": url}, "--", "-bail", "select nosuch from customers"))
    assert code == 1  # sqlite3's own exit code
    assert "no such column: nosuch" in err


@pytest.mark.postgresql
def test_postgresql_runs_psql_with_the_url_parts(new_db: Callable[[str], Database]) -> None:
    db = new_db("postgresql")
    url = server_url(db)

    code, out, err = finish(console({"default": url}, "--", "-At", "-c", "select current_database(), 1"))
    assert (code, out, err) == (0, f"{db.name}|1\n", "")

    code, _, err = finish(console({"default": url}, "--", "-c", "select nosuch"))
    assert code == 1  # psql's exit code for a failed -c command
    assert 'column "nosuch" does not exist' in err
    assert PASSWORD not in err


@pytest.mark.mariadb
def test_mariadb_runs_the_client_with_the_password_from_the_environment(new_db: Callable[[str], Database]) -> None:
    db = new_db("mariadb")
    url = server_url(db)  # a user with a real password: a wrong or missing one would be refused

    code, out, err = finish(console({"default": url}, "--", "-N", "-B", "-e", "select current_user(), database()"))
    assert (code, out, err) == (0, f"{db.name}@%\t{db.name}\n", "")

    code, _, err = finish(console({"default": url}, "--", "-e", "select nosuch"))
    assert code == 1
    assert "Unknown column 'nosuch'" in err
    assert PASSWORD not in err


def _client_of(parent: int, names: tuple[str, ...], deadline: float) -> int:
    """The pid of the client started (directly) by process ``parent``."""
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the closing parenthesis.
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == parent and comm in names:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no {' or '.join(names)} started by {parent}")


@pytest.mark.postgresql
@pytest.mark.mariadb
@pytest.mark.parametrize(("kind", "names", "variable"), [
    ("postgresql", ("psql",), "PGPASSWORD"),
    ("mariadb", ("mariadb", "mysql"), "MYSQL_PWD"),
])  # fmt: skip
def test_the_password_is_in_no_command_line(
    kind: str, names: tuple[str, ...], variable: str, new_db: Callable[[str], Database]
) -> None:
    url = server_url(new_db(kind))
    # The client reads SQL from stdin, so it waits while its /proc entry is read.
    process = console({"default": url}, stdin=subprocess.PIPE)
    try:
        client = _client_of(process.pid, names, time.monotonic() + 30)
        cmdline = Path(f"/proc/{client}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{client}/environ").read_bytes().split(b"\0")
        parent_cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    finally:
        code, out, err = finish(process, "select 41 + 1;\n")
    assert code == 0, err
    assert "42" in out
    assert not any(PASSWORD.encode() in part for part in cmdline)
    assert PASSWORD.encode() not in parent_cmdline
    assert f"{variable}={PASSWORD}".encode() in environ
    assert PASSWORD not in out + err


def test_a_missing_client_is_one_line(new_db: Callable[[str], Database], tmp_path: Path) -> None:
    url = create_tables(new_db("sqlite"), ShopBase)
    code, out, err = finish(console({"default": url}, path=str(tmp_path)))
    assert (code, out) == (1, "")
    assert (
        err
        == "Error: sqlite3 is not installed (not on PATH); install sqlite3 (apt install sqlite3; brew install sqlite)\n"
    )

    pg = "postgresql+asyncpg://app:pw@127.0.0.1:1/app"
    code, _, err = finish(console({"default": pg}, path=str(tmp_path)))
    assert code == 1
    assert err == (
        "Error: psql is not installed (not on PATH); install postgresql-client (apt install postgresql-client; "
        "brew install libpq)\n"
    )
    code, _, err = finish(console({"default": "mysql+asyncmy://app:pw@127.0.0.1:1/app"}, path=str(tmp_path)))
    assert (code, err.count("\n")) == (1, 1)
    assert err.startswith("Error: mariadb or mysql is not installed (not on PATH); install mariadb-client")


def test_an_in_memory_database_and_an_unknown_bind(tmp_path: Path) -> None:
    code, _, err = finish(console({"default": "sqlite+aiosqlite://"}))
    assert code == 1
    assert err == (
        "Error: bind 'default' is an in-memory SQLite database, which exists only inside the app's process; "
        "db console can open SQLite files only\n"
    )
    code, _, err = finish(console({"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}, "--bind", "nosuch"))
    assert code == 2
    assert "Error: Invalid value for '--bind': bind 'nosuch' is not configured (configured: 'default')\n" in err
