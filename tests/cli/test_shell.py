"""``litestar db shell`` from the command line: modes, scripts without a terminal, a real terminal."""

from __future__ import annotations

import fcntl
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

from tests.cli.apps import LogsBase, ShopBase
from tests.cli.helpers import create_tables, flat
from tests.databases import KINDS

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation
    from tests.databases import Database

ROOT = Path(__file__).parents[2]


def two_binds(new_db: Callable[[str], Database], kind: str) -> tuple[dict[str, str], Database, Database]:
    shop, logs = new_db(kind), new_db(kind)
    return {"default": create_tables(shop, ShopBase), "logs": create_tables(logs, LogsBase)}, shop, logs


def count(db: Database, table: str) -> int:
    [(n,)] = db.fetch(f"select count(*) from {table}")
    return int(n)


@pytest.mark.parametrize("kind", KINDS[:2])
def test_sandbox_rolls_back_commits_on_every_bind(
    kind: str, litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    binds, shop, logs = two_binds(new_db, kind)
    code = "\n".join(
        [
            "session.add(Customer(name='ada', email='ada@example.com'))",
            "session.add(AuditLog(message='ada signed up'))",
            "await session.commit()",  # in a sandbox this releases a savepoint
            "logs_session.add(AuditLog(message='second'))",
            "await logs_session.commit()",
            "customers = await session.scalar(select(func.count()).select_from(Customer))",
            "entries = await logs_session.scalar(select(func.count()).select_from(AuditLog))",
            "print('inside the sandbox:', customers, entries)",
        ]
    )
    result = litestar("db", "shell", "--sandbox", "-c", code, binds=binds, models="shop,logs")

    assert result.exit_code == 0, result.output
    assert "inside the sandbox: 1 2" in result.stdout
    assert "sandbox closed: everything done through its sessions was rolled back on every bind" in result.stderr
    assert count(shop, "customers") == 0
    assert count(logs, "audit_log") == 0
    if kind == "postgresql":  # the shell disposed its engines: nothing is left connected
        assert shop.open_connections() == logs.open_connections() == 0

    # engines would write around the sandbox, so it does not preload them
    escape = litestar("db", "shell", "--sandbox", "-c", "default_engine", binds=binds, models="shop,logs")
    assert escape.exit_code == 1
    assert "NameError: name 'default_engine' is not defined\n" in escape.stderr


READ_ONLY_ERRORS = {
    "sqlite": "attempt to write a readonly database",
    "postgresql": "cannot execute INSERT in a read-only transaction",
    "mariadb": "Cannot execute statement in a READ ONLY transaction",
}


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_writes_fail_with_the_database_error(
    kind: str, litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    binds, shop, _ = two_binds(new_db, kind)
    code = "session.add(Customer(name='ada', email='ada@example.com'))\nawait session.commit()"
    reads = litestar(
        "db",
        "shell",
        "--read-only",
        "-c",
        "print(await session.scalar(select(func.count(Customer.id))))",
        binds=binds,
        models="shop,logs",
    )
    writes = litestar("db", "shell", "--read-only", "-c", code, binds=binds, models="shop,logs")

    assert (reads.exit_code, reads.stdout.strip()) == (0, "0")
    assert writes.exit_code == 1
    assert READ_ONLY_ERRORS[kind] in writes.stderr
    assert writes.stderr.startswith('Traceback (most recent call last):\n  File "<db shell>", line 2, in <module>')
    assert count(shop, "customers") == 0


def test_command_and_piped_stdin_without_a_terminal(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    binds, _, _ = two_binds(new_db, "sqlite")
    printed = litestar("db", "shell", "-c", "print(1)", binds=binds, models="shop,logs")
    assert (printed.exit_code, printed.stdout) == (0, "1\n")

    script = "n = await session.scalar(select(func.count()).select_from(Customer))\nprint('customers:', n)\n"
    piped = litestar("db", "shell", input=script, binds=binds, models="shop,logs")
    assert (piped.exit_code, piped.stdout) == (0, "customers: 0\n")

    failing = litestar("db", "shell", "-c", "x = 1\nraise ValueError('bad input')", binds=binds, models="shop,logs")
    assert failing.exit_code == 1
    assert failing.stderr == (
        "Traceback (most recent call last):\n"
        '  File "<db shell>", line 2, in <module>\n'
        "    raise ValueError('bad input')\n"
        "ValueError: bad input\n"
    )


def test_bind_echo_and_option_errors(litestar: Callable[..., Invocation], new_db: Callable[[str], Database]) -> None:
    binds, _, _ = two_binds(new_db, "sqlite")
    on_logs = litestar(
        "db",
        "shell",
        "--bind",
        "logs",
        "--echo",
        "-c",
        "print(await session.scalar(text('select count(*) from audit_log')))",
        binds=binds,
        models="shop,logs",
    )
    assert (on_logs.exit_code, on_logs.stdout) == (0, "0\n")
    assert "select count(*) from audit_log" in on_logs.stderr  # --echo

    both = litestar("db", "shell", "--sandbox", "--read-only", "-c", "1", binds=binds, models="shop,logs")
    assert both.exit_code == 2
    assert "--sandbox and --read-only cannot be combined; pick one" in flat(both.stderr)

    unknown = litestar("db", "shell", "--bind", "nope", "-c", "1", binds=binds, models="shop,logs")
    assert unknown.exit_code == 2
    assert "bind 'nope' is not configured (configured: 'default', 'logs')" in flat(unknown.stderr)


ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][A-Z0-9]|[=>])")


def test_real_shell_in_a_terminal(tmp_path: Path) -> None:
    """End to end: the installed `litestar` runs `db shell` on the example, in a pseudo-terminal."""
    litestar = str(Path(sys.executable).with_name("litestar"))
    env = {**os.environ, "EXAMPLE_DATA_DIR": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
           "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color", "LITESTAR_APP": "examples.app:app"}  # fmt: skip
    seed = [litestar, "db", "run", "--file", "examples/seed.py"]
    assert subprocess.run(seed, cwd=ROOT, env=env, capture_output=True, check=False, timeout=60).returncode == 0

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    shell = subprocess.Popen(
        [litestar, "db", "shell"], cwd=ROOT, env=env, stdin=secondary, stdout=secondary, stderr=secondary,
        start_new_session=True,
    )  # fmt: skip
    os.close(secondary)
    screen = ""

    def read_until(text: str, timeout: float = 30) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while text not in ANSI.sub("", screen):
            assert time.monotonic() < deadline, f"{text!r} never appeared on the screen:\n{ANSI.sub('', screen)}"
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    screen += os.read(primary, 65536).decode(errors="replace")
                except OSError:  # the shell exited
                    break

    try:
        read_until("examples.app:app app@app.db logs@logs.db >>>")
        assert "litestar db shell · examples.app:app" in ANSI.sub("", screen)
        os.write(primary, b"await sql('select title from notes order by id')\r")
        read_until("Read SQLAlchemy 2.1 notes")
        os.write(primary, b"exit()\r")
        assert shell.wait(timeout=30) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
        os.close(primary)
