"""Destructive SQL needs a yes: asked on a terminal, refused without one, let through by ``--yes``."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from alchemy_cli.destructive import destructive_statements
from tests.cli.apps import ShopBase
from tests.cli.helpers import create_tables, flat

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation
    from tests.databases import Database

ROOT = Path(__file__).parents[2]
LITESTAR = Path(sys.executable).with_name("litestar")


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("delete from notes", ["DELETE without WHERE: delete from notes"]),
        ("DELETE FROM notes WHERE id = 1", []),
        ("update notes set title = 'x'", ["UPDATE without WHERE: update notes set title = 'x'"]),
        ("update notes set title = (select t from x where x.id = 1)", [
            "UPDATE without WHERE: update notes set title = (select t from x where x.id = 1)"
        ]),
        ("update notes set title = 'x' where id in (select id from y)", []),
        ("drop table notes", ["DROP: drop table notes"]),
        ("truncate notes", ["TRUNCATE: truncate notes"]),
        ("alter table notes add column x int", ["ALTER: alter table notes add column x int"]),
        ("rename table a to b", ["RENAME: rename table a to b"]),
        ("-- clean up\n/* really */ DROP TABLE notes;", ["DROP: -- clean up /* really */ DROP TABLE notes"]),
        ("with old as (select 1) delete from n", ["DELETE without WHERE: with old as (select 1) delete from n"]),
        ("with x as (select 1) delete from notes where id in (select * from x)", []),
        ("select 'drop table notes', 'delete from x'", []),
        ("insert into notes (title) values ('truncate')", []),
        ("select 1; drop table a; delete from b where c", ["DROP: drop table a"]),
    ],
)  # fmt: skip
def test_destructive_statements_are_found_by_parsing(sql: str, found: list[str]) -> None:
    assert destructive_statements(sql) == found


def customers(db: Database) -> int:
    return int(db.fetch("select count(*) from customers")[0][0])


def seeded(new_db: Callable[[str], Database]) -> tuple[Database, dict[str, str]]:
    db = new_db("sqlite")
    url = create_tables(db, ShopBase)
    db.execute("insert into customers (name, email) values ('ada', 'a@x'), ('bob', 'b@x')")
    return db, {"default": url}


def on_a_terminal(binds: dict[str, str], *args: str, answer: str) -> tuple[int, str]:
    """Run ``litestar db ...`` on a pseudo-terminal, answer the question, return exit code and screen."""
    env = {**os.environ, "ALCHEMY_TEST_BINDS": json.dumps(binds), "ALCHEMY_TEST_MODELS": "shop", "TERM": "dumb"}
    command = [str(LITESTAR), "--app", "tests.cli.apps:create_app", "db", *args]
    master, slave = pty.openpty()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    screen, answered, deadline = b"", False, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the other end closed: the command ended
                    break
                if not chunk:
                    break
                screen += chunk
            if not answered and b"Run it?" in screen:
                os.write(master, answer.encode() + b"\n")
                answered = True
    finally:
        os.close(master)
        code = process.wait(timeout=30)
    assert answered, screen.decode()
    return code, screen.decode().replace("\r\n", "\n")


@pytest.mark.parametrize("command", [
    ("run", "--sql", "delete from customers"),
    ("run", "await sql('delete from customers')"),
    ("shell", "-c", "await sql('delete from customers'); await session.commit()"),
])  # fmt: skip
def test_asked_on_a_terminal(command: tuple[str, ...], new_db: Callable[[str], Database]) -> None:
    db, binds = seeded(new_db)

    code, screen = on_a_terminal(binds, *command, answer="n")
    assert code == 1, screen
    assert "Destructive SQL on bind 'default': DELETE without WHERE: delete from customers. Run it?" in flat(screen)
    assert "not confirmed, so not run: DELETE without WHERE: delete from customers" in flat(screen)
    assert customers(db) == 2

    code, screen = on_a_terminal(binds, *command, answer="y")
    assert code == 0, screen
    assert customers(db) == 0


def test_refused_without_a_terminal_and_run_with_yes(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    db, binds = seeded(new_db)

    refused = litestar("db", "run", "--sql", "drop table customers", binds=binds)
    assert refused.exit_code == 1
    assert refused.stderr == (
        "Error: refused destructive SQL on bind 'default' (DROP: drop table customers); nobody can confirm it "
        "without a terminal, so pass --yes to run it\n"
    )
    assert customers(db) == 2

    in_code = litestar("db", "run", "await sql('truncate customers')", binds=binds)
    assert in_code.exit_code == 1
    assert "refused destructive SQL on bind 'default' (TRUNCATE: truncate customers)" in in_code.stderr
    in_shell = litestar("db", "shell", "-c", "await sql('delete from customers')", binds=binds)
    assert in_shell.exit_code == 1
    assert "DestructiveStatementError: refused destructive SQL" in in_shell.stderr
    assert customers(db) == 2

    dry = litestar("db", "run", "--dry-run", "--sql", "delete from customers", binds=binds)
    assert dry.exit_code == 0
    assert dry.stdout == "rolled back: --dry-run (rows it would change: default 2)\n"
    assert customers(db) == 2

    harmless = litestar("db", "run", "--sql", "delete from customers where name = 'bob'", binds=binds)
    assert harmless.exit_code == 0
    assert customers(db) == 1

    confirmed = litestar("db", "run", "--yes", "--sql", "delete from customers", binds=binds)
    assert (confirmed.exit_code, confirmed.stdout) == (0, "committed (rows affected: default 1)\n")
    assert customers(db) == 0
    shell_yes = litestar("db", "shell", "--yes", "-c", "await sql('drop table customers')", binds=binds)
    assert shell_yes.exit_code == 0, shell_yes.output
    assert db.fetch("select name from sqlite_master where name = 'customers'") == []
