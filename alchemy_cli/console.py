"""The database's own client for a bind (``litestar db console``): psql, mariadb/mysql or sqlite3.

Host, port, user and database come from the bind's URL. The password never goes on the command line
(where ``ps`` and ``/proc/<pid>/cmdline`` show it to every user of the machine): it goes through the
client's environment variable, ``PGPASSWORD`` or ``MYSQL_PWD``, which only the user and root can read.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plugin import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import URL

__all__ = ("ClientCommand", "client_command", "run_client")


@dataclass(frozen=True)
class _Client:
    programs: tuple[str, ...]
    """Executable names, tried in order."""
    package: str
    """What provides them, for the message when none is installed."""


_CLIENTS = {
    "postgresql": _Client(("psql",), "postgresql-client (apt install postgresql-client; brew install libpq)"),
    "mysql": _Client(("mariadb", "mysql"), "mariadb-client (apt install mariadb-client; or mysql-client for MySQL)"),
    "sqlite": _Client(("sqlite3",), "sqlite3 (apt install sqlite3; brew install sqlite)"),
}


@dataclass(frozen=True)
class ClientCommand:
    """What to start: the argument vector (no password in it) and extra environment variables."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _find(key: str, backend: str) -> str:
    client = _CLIENTS.get(backend)
    if client is None:
        raise ConfigurationError(
            f"bind {key!r} is a {backend} database; db console knows psql, mariadb/mysql and sqlite3 only"
        )
    for program in client.programs:
        if found := shutil.which(program):
            return found
    names = " or ".join(client.programs)
    raise ConfigurationError(f"{names} is not installed (not on PATH); install {client.package}")


def client_command(key: str, url: URL, args: Sequence[str]) -> ClientCommand:
    """The client command line for bind ``key`` at ``url``, followed by the user's ``args``."""
    backend = url.get_backend_name()
    backend = "mysql" if backend == "mariadb" else backend
    program = _find(key, backend)
    password = url.password or url.query.get("password")
    password = password if isinstance(password, str) or password is None else password[0]
    argv = [program]
    env: dict[str, str] = {}
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise ConfigurationError(
                f"bind {key!r} is an in-memory SQLite database, which exists only inside the app's process; "
                "db console can open SQLite files only"
            )
        return ClientCommand([program, database, *args])
    if backend == "postgresql":
        for option, value in (("--host", url.host), ("--port", url.port), ("--username", url.username)):
            if value is not None:
                argv.append(f"{option}={value}")
        if url.database:
            argv.append(f"--dbname={url.database}")
        if password:
            env["PGPASSWORD"] = str(password)
    else:
        for option, value in (("--host", url.host), ("--port", url.port), ("--user", url.username)):
            if value is not None:
                argv.append(f"{option}={value}")
        if url.database:
            argv.append(f"--database={url.database}")
        if password:
            env["MYSQL_PWD"] = str(password)
    return ClientCommand([*argv, *args], env)


def run_client(command: ClientCommand) -> int:
    """Run the client in the foreground and return its exit code.

    Ctrl-C belongs to the client (psql cancels the running query with it), so this process ignores
    SIGINT while the client runs.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        completed = subprocess.run(command.argv, env={**os.environ, **command.env}, check=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    # A client killed by a signal: report it as a shell would (128 + the signal number).
    return completed.returncode if completed.returncode >= 0 else 128 - completed.returncode
