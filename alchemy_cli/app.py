"""The typer app behind ``litestar db``; :mod:`alchemy_cli.bridge` hands it the command line.

Each command only declares its options and calls ``alchemy_cli.commands.<name>.run``.
"""

from __future__ import annotations

from pathlib import Path
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
    # Plain click errors and help: an error stays one unbroken line (rich boxes wrap it at 80 columns,
    # also when piped), and boolean flags are not shown as `--models <bool>`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON document instead of tables.")]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout", "-t", min=0.1, metavar="SECONDS", help="Seconds a bind may take to complete a new connection."
    ),
]
ReplicaOption = Annotated[
    bool,
    typer.Option(
        "--replica", help="Read from each bind's read replica; every database refuses writes (as --read-only)."
    ),
]
YesOption = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Run destructive SQL (DROP, TRUNCATE, ALTER, DELETE without WHERE...) unasked."),
]


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
        list[str] | None, typer.Option("--bind", "-b", metavar="KEY", help="Check only this bind (repeat for several).")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", "-t", min=0.1, metavar="SECONDS", help="Seconds each bind may take to connect and answer."
        ),
    ] = 5.0,
    max_lag: Annotated[
        float | None,
        typer.Option(
            "--max-lag", min=0, metavar="SECONDS", help="Fail a read replica that is further behind its primary."
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Check every bind at once: connect, time a round trip, name the server, compare tables with the models.

    Read replicas are checked too: reachable, and how far behind their primary (replication lag).
    Exits 0 only when every check passed.
    """
    from alchemy_cli.commands import check as command

    command.run(ctx.obj, binds=bind or [], timeout=timeout, json_output=json_output, max_lag=max_lag)


BindOption = Annotated[
    str | None,
    typer.Option(
        "--bind", "-b", metavar="KEY", help="Make this bind's session the `session` (default: the routed one)."
    ),
]


@cli.command("shell")
def shell(
    ctx: typer.Context,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Roll back everything on every bind when leaving, commits included.")
    ] = False,
    read_only: Annotated[bool, typer.Option("--read-only", help="Have the databases refuse every write.")] = False,
    echo: Annotated[bool, typer.Option("--echo", help="Print each SQL statement as it runs.")] = False,
    bind: BindOption = None,
    command: Annotated[
        str | None, typer.Option("-c", "--command", metavar="CODE", help="Run this code and exit (no terminal needed).")
    ] = None,
    plain: Annotated[bool, typer.Option("--plain", help="A plain asyncio console instead of ptpython.")] = False,
    yes: YesOption = False,
    timeout: TimeoutOption = 10.0,
    replica: ReplicaOption = False,
) -> None:
    """An async Python shell on the app's bind-routed sessions (ptpython, top-level await).

    Preloaded: session (routed), <bind>_session, <bind>_engine, engines, every mapped model,
    select/insert/update/delete/text/func and await sql("...", bind=...). Code piped on stdin runs as a
    script.
    """
    from alchemy_cli.commands import shell as command_module

    command_module.run(
        ctx.obj,
        sandbox=sandbox,
        read_only=read_only,
        echo=echo,
        bind=bind,
        command=command,
        plain=plain,
        yes=yes,
        timeout=timeout,
        replica=replica,
    )


@cli.command("run")
def run(
    ctx: typer.Context,
    code: Annotated[
        str | None, typer.Argument(metavar="CODE", help="Python to run (top-level await; the shell's names).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", metavar="FILE", help="Run this Python file instead.")
    ] = None,
    sql: Annotated[
        str | None, typer.Option("--sql", metavar="SQL", help="Run this SQL instead (on --bind, default bind).")
    ] = None,
    bind: BindOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Roll back at the end, whatever happens.")] = False,
    json_output: JsonOption = False,
    show_traceback: Annotated[bool, typer.Option("--traceback", help="On an error, also print the traceback.")] = False,
    yes: YesOption = False,
    timeout: TimeoutOption = 10.0,
    replica: ReplicaOption = False,
) -> None:
    """Run one transaction and exit: success commits (as a 2xx request would), an error rolls back.

    Prints the value of a trailing expression, or the rows of --sql, and the rows each bind changed.
    Exits 1 when the code raised or the commit failed.
    """
    from alchemy_cli.commands import run as command_module

    command_module.run(
        ctx.obj,
        code=code,
        file=file,
        sql=sql,
        bind=bind,
        dry_run=dry_run,
        json_output=json_output,
        show_traceback=show_traceback,
        yes=yes,
        timeout=timeout,
        replica=replica,
    )


@cli.command("console", context_settings={"ignore_unknown_options": True})
def console(
    ctx: typer.Context,
    bind: Annotated[
        str | None, typer.Option("--bind", "-b", metavar="KEY", help="Open this bind (default: the default bind).")
    ] = None,
    args: Annotated[
        list[str] | None,
        typer.Argument(metavar="ARGS", help="Passed to the client as they are; put them after --."),
    ] = None,
) -> None:
    """Open the database's own client for a bind: psql, mariadb (or mysql) or sqlite3.

    Host, port, user and database come from the bind's URL; the password goes through the environment
    (PGPASSWORD, MYSQL_PWD), never the command line. Exits with the client's exit code.
    Example: litestar db console --bind logs -- -c 'select 1'
    """
    from alchemy_cli.commands import console as command

    command.run(ctx.obj, bind=bind, args=args or [])


def main(ctx: click.Context) -> None:
    """Run the typer app on the arguments Litestar's ``db`` command received."""
    cli(args=ctx.args, prog_name=ctx.command_path, obj=ctx.obj, standalone_mode=True)
