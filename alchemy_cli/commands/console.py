"""``litestar db console``: the database's own client (psql, mariadb, sqlite3) for one bind."""

from __future__ import annotations

import typer

from alchemy_cli.console import client_command, run_client
from alchemy_cli.loader import load_target, reported_errors, require_binds


def run(obj: object, *, bind: str | None, args: list[str]) -> None:
    target = load_target(obj)
    require_binds(target, [bind] if bind else [])
    key = bind or target.plugin.config.default_bind
    with reported_errors():
        command = client_command(key, target.plugin.config.bind_configs[key].resolved_url, args)
    raise typer.Exit(run_client(command))
