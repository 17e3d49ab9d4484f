"""``litestar db`` next to advanced-alchemy, whose ``litestar database`` group also answers to ``db``.

Litestar adds entry-point commands (ours: ``db``) when its CLI starts, and later lets each plugin on the
app add its own in ``on_cli_init``. advanced-alchemy adds its ``database`` group there with the alias
``db``, and the root group then resolves ``db`` to that alias before it looks at its commands: ``litestar
db binds`` would answer "No such command 'binds'".

When our plugin is on the app (its ``on_cli_init`` calls :func:`keep_db`), the name ``db`` means our
command, whatever order the plugins were registered in; advanced-alchemy's group stays reachable as
``litestar database ...``. Only click's public ``get_command`` is involved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click

__all__ = ("keep_db",)


def keep_db(cli: click.Group) -> None:
    """Make ``cli`` resolve ``db`` to this package's command, even after another plugin claims the alias."""
    from alchemy_cli.bridge import db

    if cli.commands.get("db") is not db or "get_command" in vars(cli):
        return  # our entry point is not loaded into this group, or this group is already set up
    resolve = cli.get_command

    def get_command(ctx: click.Context, name: str) -> click.Command | None:
        # Looked up when the command line is resolved, after every plugin's on_cli_init has run.
        return db if name == "db" else resolve(ctx, name)

    vars(cli)["get_command"] = get_command  # an instance attribute: other groups keep click's lookup
