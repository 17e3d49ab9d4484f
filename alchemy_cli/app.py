"""The typer app behind ``litestar db``; :mod:`alchemy_cli.bridge` hands it the command line.

Each command only declares its options and calls ``alchemy_cli.commands.<name>.run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import click

cli = typer.Typer(
    name="db",
    help="Your app's databases, through its SQLAlchemyPlugin: list binds, check them, open a shell, run a transaction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON document instead of tables.")]


@cli.command("binds")
def binds(
    ctx: typer.Context,
    models: Annotated[bool, typer.Option("--models", help="Also list every model with its bind and table.")] = False,
    json_output: JsonOption = False,
) -> None:
    """List every bind: driver, URL (password masked), pool, dependency keys, models and tables."""
    from alchemy_cli.commands import binds as command

    command.run(ctx.obj, models=models, json_output=json_output)


@cli.command("check")
def check(
    ctx: typer.Context,
    bind: Annotated[
        list[str] | None, typer.Option("--bind", "-b", help="Check only this bind (repeat for several).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", min=0.1, help="Seconds each bind may take to connect and answer.")
    ] = 5.0,
    json_output: JsonOption = False,
) -> None:
    """Check every bind at once: connect, time a round trip, name the server, compare tables with the models.

    Exits 0 only when every check passed.
    """
    from alchemy_cli.commands import check as command

    command.run(ctx.obj, binds=bind or [], timeout=timeout, json_output=json_output)


def main(ctx: click.Context) -> None:
    """Run the typer app on the arguments Litestar's ``db`` command received."""
    cli(args=ctx.args, prog_name=ctx.command_path, obj=ctx.obj, standalone_mode=True)
