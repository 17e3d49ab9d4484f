"""All terminal output: rich tables for people, JSON for machines, one red line for errors.

The only module that imports rich (ruff's banned-api rule enforces it). Tables go to stdout; errors go
to stderr. When stdout is not a terminal, nothing is wrapped or cut: tables take the width they need,
so URLs and messages stay whole on one line in logs and pipes. Titles are plain lines above a table
(a table title would be padded with spaces to the table's width).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from alchemy_cli.inspection import BindFacts, ModelFacts, PoolFacts
    from plugin.checks import CheckReport

__all__ = ("banner", "binds", "checks", "confirm", "echo", "error", "json_document", "line", "note", "rows")


_PIPE_WIDTH = 100_000
"""Console width when not writing to a terminal: wide enough that no table cell is ever cut."""


def _console(*, stderr: bool = False, soft_wrap: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else _PIPE_WIDTH, highlight=False, soft_wrap=soft_wrap)


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``1 table``, ``2 tables`` (``plural_noun`` for irregular nouns)."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"


def _title(console: Console, title: str) -> None:
    console.print(escape(title), soft_wrap=True)


def error(message: str) -> None:
    """One line on stderr: ``Error: <message>`` (the terminal wraps it, rich does not break it)."""
    _console(stderr=True, soft_wrap=True).print(f"[bold red]Error:[/] {escape(message)}")


def line(message: str, *, style: str = "") -> None:
    """One plain line on stdout."""
    _console(soft_wrap=True).print(f"[{style}]{escape(message)}[/]" if style else escape(message))


def json_document(document: Any) -> None:
    """A JSON document on stdout (no colour, no wrapping: for machines)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def binds(app_path: str, facts: Sequence[BindFacts], models: Sequence[ModelFacts] | None) -> None:
    """The ``db binds`` tables: one row per bind, then (with ``--models``) one row per model."""
    table = Table()
    for column in ("bind", "dialect+driver", "url", "mode", "pool", "dependencies", "models", "tables"):
        # A narrow terminal folds a long URL onto more lines rather than cutting off its database name.
        table.add_column(
            column,
            justify="right" if column in ("models", "tables") else "left",
            overflow="fold" if column == "url" else "ellipsis",
        )
    for bind in facts:
        pool = _pool(bind.pool)
        table.add_row(
            escape(bind.key) + (" [bold](default)[/]" if bind.default else ""),
            f"{bind.dialect}+{bind.driver}",
            escape(bind.url),
            "async" if bind.is_async else "sync",
            pool,
            f"{bind.session_dependency}, {bind.engine_dependency}",
            str(bind.models),
            str(bind.tables),
        )
    console = _console()
    _title(console, f"Binds of {app_path}")
    console.print(table)
    _replica_listing(console, facts)
    _migration_locations(console, facts)
    if models is None:
        return
    listing = Table()
    for column in ("model", "module", "bind", "table"):
        listing.add_column(column)
    for model in models:
        where = f"[red]✗ {escape(model.error)}[/]" if model.error else escape(model.table or "-")
        listing.add_row(escape(model.model), escape(model.module), escape(model.bind), where)
    _title(console, "Models")
    console.print(listing)


def _pool(pool: PoolFacts) -> str:
    return pool.kind + (f" {pool.size}+{pool.max_overflow}" if pool.size is not None else "")


def _replica_listing(console: Console, facts: Sequence[BindFacts]) -> None:
    """The ``db binds`` replicas table: each bind's read replicas, and how reads are spread over them."""
    with_replicas = [bind for bind in facts if bind.replicas is not None]
    if not with_replicas:
        return
    table = Table()
    for column in ("bind", "replica", "url", "pool", "selection", "sticky"):
        table.add_column(column, overflow="fold" if column == "url" else "ellipsis")
    for bind in with_replicas:
        replicas = bind.replicas
        assert replicas is not None
        sticky = f"{replicas.sticky_seconds:g} s" if replicas.sticky_seconds else "-"
        selection = f"{replicas.selection.replace('_', ' ')}, cool-down {replicas.cooldown_s:g} s"
        for number, (url, pool) in enumerate(replicas.engines, 1):
            table.add_row(escape(bind.key), str(number), escape(url), _pool(pool), selection, sticky)
    _title(console, "Replicas")
    console.print(table)


def _migration_locations(console: Console, facts: Sequence[BindFacts]) -> None:
    """The ``db binds`` migrations table: where each bind's Alembic scripts live (when configured)."""
    located = [(bind.key, bind.migrations) for bind in facts if bind.migrations is not None]
    if not located:
        return
    table = Table(title="Migrations", title_justify="left")
    for column in ("bind", "scripts", "target", "version table"):
        table.add_column(column)
    for key, where in located:
        assert where is not None
        scripts = escape(where["directory"]) if where["directory"] else f"[red]✗ {escape(where['error'])}[/]"
        schema = where["version_table_schema"]
        table.add_row(
            escape(key),
            scripts,
            escape(where["target"]),
            escape(f"{schema}.{where['version_table']}" if schema else where["version_table"]),
        )
    console.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def checks(app_path: str, report: CheckReport, timeout: float) -> None:
    """The ``db check`` table and a one-line verdict."""
    table = Table()
    for column in ("bind", "status", "connect", "round trip", "server", "schema"):
        table.add_column(column)
    for check in report.binds:
        if check.error:
            schema = f"[red]{escape(check.error)}[/]"
        elif check.missing_tables or check.missing_columns:
            missing = [f"table {t}" for t in check.missing_tables] + [f"column {c}" for c in check.missing_columns]
            schema = f"[red]missing {escape(', '.join(missing))}[/]"
        else:
            schema = f"{plural(check.tables, 'table')} {'matches' if check.tables == 1 else 'match'} the models"
        if check.prepared:
            left = "; ".join(f"{p.xid} (finish with {p.commit} or {p.rollback})" for p in check.prepared)
            schema += f"\n[red]prepared transactions left: {escape(left)}[/]"
        table.add_row(
            escape(check.bind),
            "[green]ok[/]" if check.ok else "[bold red]FAIL[/]",
            _ms(check.connect_ms),
            _ms(check.latency_ms),
            escape(check.server or "-"),
            schema,
        )
    console = _console()
    _title(console, f"Database checks of {app_path} (timeout {timeout:g} s)")
    console.print(table)
    _replica_checks(console, report)
    _migration_states(console, report)
    for problem in report.unknown_bind_keys:
        console.print(f"[bold red]FAIL[/] {escape(problem.describe([c.bind for c in report.binds]))}")
    for conflict in report.bind_conflicts:
        console.print(f"[bold red]FAIL[/] {escape(conflict.message)}")
    failed = sum(not check.ok for check in report.binds) + sum(not check.ok for check in report.replicas)
    failed += len(report.unknown_bind_keys) + len(report.bind_conflicts)
    console.print("[green]all checks passed[/]" if not failed else f"[bold red]{plural(failed, 'check')} failed[/]")


def _lag_cell(seconds: float | None, state: str | None, error: str | None) -> str:
    """``0.0 s (caught up)``, ``not measured for sqlite``; an error in red, on its own line under the lag."""
    lag = escape(state or "-") if seconds is None else f"{seconds:.1f} s ({escape(state or '')})"
    if error is None:
        return lag
    return f"{lag}\n[red]{escape(error)}[/]" if state else f"[red]{escape(error)}[/]"


def _replica_checks(console: Console, report: CheckReport) -> None:
    """The ``db check`` replicas table: one row per read replica of the checked binds."""
    if not report.replicas:
        return
    table = Table()
    for column in ("bind", "replica", "status", "connect", "round trip", "server", "lag"):
        table.add_column(column)
    for check in report.replicas:
        table.add_row(
            escape(check.bind),
            f"{check.replica} {escape(check.url)}",
            "[green]ok[/]" if check.ok else "[bold red]FAIL[/]",
            _ms(check.connect_ms),
            _ms(check.latency_ms),
            escape(check.server or "-"),
            _lag_cell(check.lag_s, check.state, check.error),
        )
    _title(console, "Replicas")
    console.print(table)


def _migration_states(console: Console, report: CheckReport) -> None:
    """The ``db check`` migrations table: one row per bind that has migrations configured."""
    states = [(check.bind, check.migrations) for check in report.binds if check.migrations is not None]
    if not states:
        return
    table = Table(title="Migrations", title_justify="left")
    for column in ("bind", "status", "target", "version table", "state"):
        table.add_column(column)
    for bind, state in states:
        assert state is not None
        table.add_row(
            escape(bind),
            "[green]ok[/]" if state.ok else "[bold red]FAIL[/]",
            escape(state.target),
            escape(state.version_table),
            escape(state.summary()) if state.ok else f"[red]{escape(state.summary())}[/]",
        )
    console.print(table)


def rows(columns: Sequence[str], values: Sequence[Sequence[Any]]) -> None:
    """Query results as a table (``sql()`` in the shell, results of ``db run``)."""
    table = Table(*columns)
    for row in values:
        table.add_row(*(escape("NULL" if value is None else str(value)) for value in row))
    console = _console()
    console.print(table)
    console.print(f"[dim]{plural(len(values), 'row')}[/]")


def echo(statement: str, parameters: Any) -> None:
    """``--echo``: one statement as it runs, dimmed, with its parameters."""
    shown = f"{statement}  [{parameters!r}]" if parameters else statement
    _console(stderr=True, soft_wrap=True).print(f"[dim]{escape(shown)}[/]")


def banner(heading: str, lines: Sequence[tuple[str, str]], notes: Sequence[str], alert: Collection[str] = ()) -> None:
    """The shell's greeting: what is loaded, by bind, then notes (renamed models, how to leave).

    Lines named in ``alert`` (binds on other machines) are printed in bold red.
    """
    console = _console()
    console.print(f"[bold]{escape(heading)}[/]")
    width = max(len(name) for name, _ in lines)
    for name, what in lines:
        style = "bold red" if name in alert else "cyan"
        text = f"[bold red]{escape(what)}[/]" if name in alert else escape(what)
        console.print(f"  [{style}]{escape(name.ljust(width))}[/]  {text}")
    for note in notes:
        console.print(f"  [dim]{escape(note)}[/]")


def note(message: str) -> None:
    """A dim remark on stderr (what was rolled back, and why)."""
    _console(stderr=True, soft_wrap=True).print(f"[dim]{escape(message)}[/]")


def confirm(question: str) -> bool:
    """Ask a yes/no question on the terminal (stderr); anything but yes is no."""
    from rich.prompt import Confirm

    return Confirm.ask(f"[bold yellow]{escape(question)}[/]", default=False, console=_console(stderr=True))
