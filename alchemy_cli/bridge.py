"""The ``db`` command Litestar loads from the ``litestar.commands`` entry point.

Litestar imports this module for *every* ``litestar`` command, with no error handling, so it imports
nothing but click and does nothing at import time but chain an excepthook (below). The commands
themselves are a typer app (loaded on first use); typer >= 0.26 vendors its own click, so its objects
cannot be added to Litestar's click group directly. This real click command takes every argument
unparsed and hands it to the typer app, which then parses, prints help and usage errors, and sets the
exit code itself.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], object]


def _plugin_errors_in_one_line(previous: ExceptHook) -> ExceptHook:
    """An excepthook that prints the plugin's own errors (say, a bad bind URL found while Litestar loads
    the app, before any ``db`` code runs) as one line instead of a traceback: the traceback would quote
    the app's source, where the URL and its password may be written literally."""

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if any(c.__module__ == "plugin.exceptions" and c.__name__ == "AlchemyError" for c in kind.__mro__):
            sys.stderr.write(f"Error: {' '.join(str(exc).split())}\n")
            return
        previous(kind, exc, tb)

    return hook


sys.excepthook = _plugin_errors_in_one_line(sys.excepthook)


def _run(ctx: click.Context) -> None:
    from alchemy_cli.app import main

    main(ctx)


class _Unparsed(click.Command):
    """Keeps every argument as typed, ``--`` included (click would drop the first ``--``, and with it the
    line between ``db console``'s own options and the client's)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.args = list(args)
        return ctx.args


db = _Unparsed(
    "db",
    callback=_run,
    help="Your app's databases: list binds, check them, open a shell, run a transaction.",
    short_help="Inspect and use the app's databases (binds, check, shell, run).",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
"""Registered as ``db`` in the ``litestar.commands`` entry-point group (see pyproject.toml)."""
