"""The ``db`` command Litestar loads from the ``litestar.commands`` entry point.

Litestar imports this module for *every* ``litestar`` command, with no error handling, so it imports
nothing but click and does nothing at import time. The commands themselves are a typer app (loaded on
first use); typer >= 0.26 vendors its own click, so its objects cannot be added to Litestar's click
group directly. This real click command takes every argument unparsed and hands it to the typer app,
which then parses, prints help and usage errors, and sets the exit code itself.
"""

from __future__ import annotations

import click


def _run(ctx: click.Context) -> None:
    from alchemy_cli.app import main

    main(ctx)


db = click.Command(
    "db",
    callback=_run,
    help="Your app's databases: list binds, check them, open a shell, run a transaction.",
    short_help="Inspect and use the app's databases (binds, check, shell, run).",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
"""Registered as ``db`` in the ``litestar.commands`` entry-point group (see pyproject.toml)."""
