"""The interactive shell, driven end to end under a pseudo-terminal: errors are short and say how to go on.

``litestar db shell --sandbox`` runs in a child process on a pty (ptpython, as a user would see it); each
line is typed after the prompt appears. Escape sequences are stripped before the assertions.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.cli.apps import ShopBase
from tests.cli.helpers import create_tables

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.databases import Database

ROOT = Path(__file__).resolve().parents[2]


def type_into_shell(binds: dict[str, str], lines: list[str], tmp_path: Path, timeout: float = 30) -> tuple[str, int]:
    """Start ``db shell --sandbox`` on a pty, type ``lines`` one prompt at a time; return the screen text."""
    env = dict(
        os.environ,
        PROMPT_TOOLKIT_NO_CPR="1",
        TERM="xterm",
        LITESTAR_APP="tests.cli.apps:create_app",
        ALCHEMY_TEST_BINDS=json.dumps(binds),
        ALCHEMY_TEST_MODELS="shop",
        XDG_STATE_HOME=str(tmp_path / "state"),
    )
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    command = [sys.executable, "-m", "litestar", "db", "shell", "--sandbox"]
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout

    def read(until: bytes | None, start: int) -> None:
        nonlocal screen
        while time.monotonic() < deadline:
            if until is not None and until in screen[start:]:
                return
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    return
            elif until is None and process.poll() is not None:
                return
        raise TimeoutError(screen[-1500:].decode(errors="replace"))

    try:
        for line in lines:
            start = len(screen)
            read(b">>>", start)
            time.sleep(0.2)  # let ptpython finish drawing the prompt before typing
            os.write(master, line.encode() + b"\r")
        read(None, len(screen))
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    text = re.sub(rb"\x1b\[[0-9;?]*[ -/]*[@-~]", b"", screen).decode(errors="replace").replace("\r", "")
    return text, code


@pytest.mark.postgresql
def test_an_aborted_postgresql_transaction_is_explained_and_recovered(
    new_db: Callable[[str], Database], tmp_path: Path
) -> None:
    shop = new_db("postgresql")
    binds = {"default": create_tables(shop, ShopBase)}

    screen, code = type_into_shell(
        binds,
        ['await sql("select 1/0")', 'await sql("select 1")', "await session.rollback()", 'await sql("select 42")',
         "last_traceback()", "exit()"],
        tmp_path,
    )  # fmt: skip

    assert code == 0, screen
    first, rest = screen.split("current transaction is aborted", 1)
    assert "division by zero" in first
    assert 'File "<stdin>", line 1, in <module>' in first
    assert "site-packages" not in first  # no frames of SQLAlchemy or asyncpg
    assert "The transaction is aborted: PostgreSQL aborts the transaction at an error" in first
    assert "Run `await session.rollback()`" in first
    assert "(last_traceback() shows the full traceback)" in first
    assert "The transaction is aborted: PostgreSQL aborted the transaction at an earlier error" in rest
    assert re.search(r"│ 42 +│", rest)
    assert "sqlalchemy/engine/base.py" in rest.split("last_traceback()")[-1]  # the full traceback, on request
    assert "rolled back on every bind" in rest


def test_a_pending_rollback_is_explained(new_db: Callable[[str], Database], tmp_path: Path) -> None:
    shop = new_db("sqlite")
    binds = {"default": create_tables(shop, ShopBase)}
    shop.execute("insert into customers (id, name, email) values (1, 'ada', 'a')")

    screen, code = type_into_shell(
        binds,
        ["session.add(Customer(id=1, name='bo', email='b'))", "await session.flush()",
         "await session.scalar(select(func.count(Customer.id)))", "exit()"],
        tmp_path,
    )  # fmt: skip

    assert code == 0, screen
    flush, after = screen.split("PendingRollbackError", 1)
    assert "IntegrityError" in flush
    assert "site-packages" not in flush
    assert "The transaction is aborted: the session's transaction was rolled back by an earlier error" in after
    assert shop.fetch("select name from customers") == [("ada",)]
