"""The shell for real projects: the app's own names (``shell_context``), where each bind points (banner
and prompt, other machines in red), and a connect timeout against a server that never answers."""

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

    from tests.cli.conftest import Invocation
    from tests.databases import Database

ROOT = Path(__file__).parents[2]
LITESTAR = Path(sys.executable).with_name("litestar")
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
RED = re.compile(r"\x1b\[[0-9;]*(?<![0-9])(?:31|91|38;5;(?:1|9|160|196))(?:;[0-9;]*)?m")


@pytest.fixture
def customers(new_db: Callable[[str], Database]) -> dict[str, str]:
    db = new_db("sqlite")
    url = create_tables(db, ShopBase)
    db.execute("insert into customers (name, email) values ('ada', 'a@x'), ('bob', 'b@x')")
    return {"default": url}


def test_the_hook_adds_names_to_run_and_shell(
    litestar: Callable[..., Invocation], customers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALCHEMY_TEST_SHELL_CONTEXT", "plain")
    ran = litestar("db", "run", "await directory.names()", binds=customers)
    assert (ran.exit_code, ran.stdout) == (0, "['ada', 'bob']\ncommitted (rows affected: none)\n")

    shell = litestar("db", "shell", "-c", "print(settings, directory.session is session, select)", binds=customers)
    assert shell.exit_code == 0, shell.output
    assert shell.stdout.startswith("{'region': 'eu'} True <function select")  # the shell's own select is kept

    sandboxed = litestar("db", "shell", "--sandbox", "-c", "print(directory.session is session)", binds=customers)
    assert (sandboxed.exit_code, sandboxed.stdout) == (0, "True\n")


def test_an_async_hook_is_awaited(
    litestar: Callable[..., Invocation], customers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALCHEMY_TEST_SHELL_CONTEXT", "async")
    ran = litestar("db", "run", "await directory.names()", binds=customers)
    assert (ran.exit_code, ran.stdout) == (0, "['ada', 'bob']\ncommitted (rows affected: none)\n")


def test_a_broken_hook_is_one_line(
    litestar: Callable[..., Invocation], customers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALCHEMY_TEST_SHELL_CONTEXT", "broken")
    shell = litestar("db", "shell", "-c", "print(1)", binds=customers)
    assert shell.exit_code == 1
    assert shell.stderr == (
        "Error: shell_context (broken_hook) raised RuntimeError: settings file missing; fix the hook\n"
    )
    assert shell.stdout == ""


def on_a_terminal(binds: dict[str, str], *args: str, script: list[tuple[str, str]], env: dict[str, str]) -> str:
    """Run ``litestar db shell ...`` on a 200-column pseudo-terminal; for each (wait for, type) pair, wait
    until the text is on the screen, then type the line. Returns the screen."""
    env = {**os.environ, **env, "ALCHEMY_TEST_BINDS": json.dumps(binds), "PROMPT_TOOLKIT_NO_CPR": "1"}
    command = [str(LITESTAR), "--app", "tests.cli.apps:create_app", "db", "shell", *args]
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    shell = subprocess.Popen(command, cwd=ROOT, env=env, stdin=secondary, stdout=secondary, stderr=secondary,
                             start_new_session=True)  # fmt: skip
    os.close(secondary)
    screen, steps, deadline = "", list(script), time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    screen += os.read(primary, 65536).decode(errors="replace")
                except OSError:  # the shell exited
                    break
            if steps and steps[0][0] in ANSI.sub("", screen):
                os.write(primary, steps.pop(0)[1].encode() + b"\r")
        assert shell.wait(timeout=30) == 0, ANSI.sub("", screen)
    finally:
        if shell.poll() is None:
            shell.kill()
        os.close(primary)
    return screen


@pytest.mark.parametrize("console", ["ptpython", "plain"])
def test_banner_and_prompt_say_where_each_bind_points(
    console: str, customers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Engines connect lazily, so a bind on another machine is listed without being reached.
    binds = {**customers, "reports": "postgresql+asyncpg://app:Pw-not-shown@db.example.com:5432/reports"}
    args = ["--plain"] if console == "plain" else []
    screen = on_a_terminal(
        binds, *args, script=[(" >>>", "await directory.names()"), ("['ada', 'bob']", "exit()")],
        env={"TERM": "xterm-256color", "ALCHEMY_TEST_SHELL_CONTEXT": "async", "ALCHEMY_TEST_MODELS": "shop"},
    )  # fmt: skip
    text = ANSI.sub("", screen).replace("\r\n", "\n")
    sqlite_file = customers["default"].removeprefix("sqlite+aiosqlite:///")
    assert f"default_session  bind default (default): sqlite+aiosqlite at {sqlite_file}; models: Customer" in text
    assert (
        "reports_session  bind reports: postgresql+asyncpg at db.example.com:5432/reports (not this machine); "
        "models: none" in text
    )
    assert "directory        CustomerDirectory (from shell_context)" in text
    prompt = f"tests.cli.apps:create_app default@{Path(sqlite_file).name} reports@db.example.com/reports >>>"
    assert prompt in text
    assert "['ada', 'bob']" in text
    assert "Pw-not-shown" not in screen
    # The remote bind is red in the banner and in the prompt; the local one is not.
    banner_line = next(line for line in screen.splitlines() if "reports_session" in line)
    assert RED.search(banner_line)
    prompt_line = next(line for line in screen.splitlines() if "reports@db.example.com" in line)
    before_remote = prompt_line[: prompt_line.index("reports@db.example.com")]
    assert RED.search(before_remote[before_remote.rindex("default@") :])
    default_line = next(line for line in screen.splitlines() if "default_session" in line)
    assert not RED.search(default_line)


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "mysql+asyncmy"])
@pytest.mark.parametrize("command", [("run", "--sql", "select 1"), ("shell", "-c", "await sql('select 1')")])
def test_a_silent_server_times_out(
    driver: str, command: tuple[str, ...], silent_port: int, litestar: Callable[..., Invocation]
) -> None:
    binds = {"default": f"{driver}://app:Pw-silent@127.0.0.1:{silent_port}/app"}
    started = time.monotonic()
    result = litestar("db", *command, "--timeout", "1", binds=binds)
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    message = (
        f"bind 'default': 127.0.0.1:{silent_port} did not complete a connection within 1 s (connect timed out); "
        "check that the server is up and answering, or give it longer with --timeout"
    )
    if command[0] == "run":
        assert result.stderr == f"Error: ConnectTimeoutError: {message} (rolled back)\n"
    else:
        assert result.stderr.endswith(f"ConnectTimeoutError: {message}\n")
    assert "Pw-silent" not in result.output
    assert elapsed < 30  # not a benchmark: without the timeout this took 61 s (asyncpg) and minutes (asyncmy)
