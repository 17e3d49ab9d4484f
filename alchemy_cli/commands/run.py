"""``litestar db run``: one transaction under the request policy, then exit.

Python (an argument or ``--file``, top-level ``await``, the shell's names) or SQL (``--sql``). Success
commits when the app's transaction policy says a 2xx would; an exception rolls everything back and
exits 1. ``--dry-run`` runs inside the plugin's sandbox (:mod:`plugin.sandbox`): the code's own commits
release savepoints, the sessions are flushed at the end (so a constraint the real run would violate
fails the dry run), and everything is rolled back. The value of a trailing expression (or the rows of
``--sql``) is printed, then what became of the rows: committed by the code itself, committed by the
plugin, rolled back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from sqlalchemy import text
from sqlalchemy.engine import CursorResult, Result, Row
from sqlalchemy.ext.asyncio import AsyncSession

from alchemy_cli import render
from alchemy_cli.destructive import Confirmation
from alchemy_cli.execution import execute, exit_status, user_traceback
from alchemy_cli.ledger import Ledger
from alchemy_cli.loader import engines_started, load_target, reported_errors, require_binds
from alchemy_cli.namespace import add_app_names
from alchemy_cli.workspace import Mode, Workspace, open_workspace
from plugin.exceptions import SandboxError, describe_error
from plugin.sessions import is_started
from plugin.transactions import SUCCESS_STATUS, settle_all

if TYPE_CHECKING:
    from pathlib import Path

    from alchemy_cli.loader import Target


@dataclass
class Outcome:
    """What ``db run`` did; printed as lines or as the ``--json`` document."""

    ok: bool = True
    exit_code: int = 0
    committed: bool = False
    """The plugin committed the unit of work at the end (the transaction policy said so)."""
    why_not: str | None = None
    """Why the plugin did not commit: ``--dry-run``, the manual policy, or the error."""
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    value: str | None = None
    rows_affected: dict[str, int] = field(default_factory=dict)
    """Rows changed per bind, whatever became of them (in a dry run: what the real run would change)."""
    rows_committed: dict[str, int] = field(default_factory=dict)
    rows_committed_by_code: dict[str, int] = field(default_factory=dict)
    rows_rolled_back: dict[str, int] = field(default_factory=dict)
    discarded_unflushed: list[str] = field(default_factory=list)
    """Sessions whose changes were never flushed and were thrown away (nothing to count in rows)."""
    error: str | None = None
    traceback: str | None = None


def run(
    obj: object,
    *,
    code: str | None,
    file: Path | None,
    sql: str | None,
    bind: str | None,
    dry_run: bool,
    json_output: bool,
    show_traceback: bool,
    yes: bool = False,
    timeout: float = 10.0,
    replica: bool = False,
) -> None:
    if replica and dry_run:
        raise typer.BadParameter("--replica and --dry-run cannot be combined; pick one", param_hint="'--replica'")
    if sum(source is not None for source in (code, file, sql)) != 1:
        raise typer.BadParameter("give exactly one of CODE, --file or --sql", param_hint="CODE")
    filename = str(file) if file is not None else "<db run>"
    if file is not None:
        try:
            code = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="'--file'") from None
        except UnicodeDecodeError:
            code = "\0"  # reported below, with the other files that cannot be Python source
        if "\0" in code:
            raise typer.BadParameter(
                f"{file} is not a Python source file (it is not UTF-8 text; a binary file?)", param_hint="'--file'"
            )
    target = load_target(obj)
    require_binds(target, [bind] if bind else [])
    # --dry-run rolls everything back, so it never needs a yes.
    confirmation = Confirmation(assume_yes=yes or dry_run)
    with reported_errors():
        if sql is not None:
            confirmation.check(sql, bind or target.plugin.config.default_bind)
        outcome = asyncio.run(
            _run(
                target,
                code=code,
                sql=sql,
                bind=bind,
                dry_run=dry_run,
                filename=filename,
                confirmation=confirmation,
                timeout=timeout,
                replica=replica,
            )
        )
    if outcome.error is not None:
        outcome.error = target.redact(outcome.error)
    if outcome.traceback is not None:
        outcome.traceback = target.redact(outcome.traceback)
    if json_output:
        render.json_document(_as_json(outcome, dry_run))
    else:
        _print(outcome, show_traceback)
    raise typer.Exit(outcome.exit_code)


async def _run(
    target: Target,
    *,
    code: str | None,
    sql: str | None,
    bind: str | None,
    dry_run: bool,
    filename: str,
    confirmation: Confirmation,
    timeout: float,
    replica: bool = False,
) -> Outcome:
    plugin = target.plugin
    outcome = Outcome()
    mode: Mode = "sandbox" if dry_run else "read-only" if replica else "normal"
    async with engines_started(plugin, connect_timeout=timeout):
        ledger = Ledger()
        try:
            async with open_workspace(target, mode=mode, bind=bind, replica=replica) as workspace:
                workspace.confirmation = confirmation
                ledger = workspace.ledger
                await _unit_of_work(workspace, outcome, code=code, sql=sql, dry_run=dry_run, filename=filename)
            if dry_run:  # reached only once the sandbox was rolled back on every bind
                ledger.roll_back_everything()
        except SandboxError as exc:  # the sandbox could not be opened, or not rolled back everywhere
            _failed(outcome, f"{outcome.error}; {exc}" if outcome.error else str(exc))
        keys = plugin.router.keys
        for name, counts in (
            ("rows_affected", ledger.written),
            ("rows_committed", ledger.committed),
            ("rows_committed_by_code", ledger.committed_by_code),
            ("rows_rolled_back", ledger.rolled_back),
        ):
            setattr(outcome, name, {key: counts[key] for key in keys if counts[key]})
        return outcome


async def _unit_of_work(
    workspace: Workspace, outcome: Outcome, *, code: str | None, sql: str | None, dry_run: bool, filename: str
) -> None:
    """Run the code, then settle it under the policy; errors roll back and are recorded in ``outcome``."""
    plugin = workspace.target.plugin
    sessions = list(workspace.sessions.values())
    try:
        if sql is not None:
            value = await _execute_sql(workspace.session, sql)
        else:
            namespace, _ = workspace.namespace()
            await add_app_names(workspace.target, namespace)
            value = await execute(code or "", namespace, filename, keep_result=True)
        _keep_result(outcome, value)  # read rows before the commit expires or closes them
    except SystemExit as leave:  # exit() and exit(0) end the code normally; anything else fails it
        exit_code, message = exit_status(leave)
        if exit_code != 0:
            await settle_all(sessions, commit=False)
            _failed(outcome, f"{message or f'the code called exit({exit_code})'} (rolled back)", exit_code)
            return
    except Exception as exc:  # the user's code or SQL failed: roll back and report
        await settle_all(sessions, commit=False)
        outcome.traceback = user_traceback(exc, filename)
        _failed(outcome, f"{describe_error(exc)} (rolled back)")
        return
    if dry_run:  # what the real run's commit would send: a constraint it violates fails the dry run
        try:
            await _flush_all(sessions)
        except Exception as exc:
            await settle_all(sessions, commit=False)
            outcome.traceback = user_traceback(exc, filename)
            _failed(outcome, f"{describe_error(exc)} (rolled back)")
            return
    commit = not dry_run and plugin.config.transaction.should_commit(SUCCESS_STATUS)
    if not commit:
        outcome.discarded_unflushed = workspace.unflushed()
    workspace.ledger.settling = True
    try:
        _, failure = await settle_all(sessions, commit)
    except Exception as exc:  # a rollback failed (the connection is gone): say so, never "rolled back"
        _failed(outcome, f"ending the transaction failed: {describe_error(exc)}")
        return
    finally:
        workspace.ledger.settling = False
    if failure is not None:
        _failed(outcome, str(failure))
        return
    outcome.committed = commit
    outcome.why_not = None if commit else "--dry-run" if dry_run else "the transaction policy is manual"


async def _flush_all(sessions: Sequence[Any]) -> None:
    for session in sessions:
        if is_started(session):
            await session.flush() if isinstance(session, AsyncSession) else session.flush()


def _failed(outcome: Outcome, error: str, exit_code: int = 1) -> Outcome:
    outcome.ok, outcome.exit_code, outcome.why_not, outcome.error = False, exit_code, "error", error
    return outcome


async def _execute_sql(session: Any, sql: str) -> Result[Any]:
    if isinstance(session, AsyncSession):
        return await session.execute(text(sql))
    return session.execute(text(sql))  # type: ignore[no-any-return]


def _keep_result(outcome: Outcome, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Result):
        if not (isinstance(value, CursorResult) and not value.returns_rows):  # DML results have no rows
            outcome.columns = list(value.keys())
            outcome.rows = [list(row) for row in value]
        return
    if isinstance(value, Sequence) and value and all(isinstance(item, Row) for item in value):
        outcome.columns = list(value[0]._fields)
        outcome.rows = [list(row) for row in value]
        return
    outcome.value = repr(value)


def _counts(rows: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in rows.items()) or "none"


def _print(outcome: Outcome, show_traceback: bool) -> None:
    if outcome.columns is not None and outcome.rows is not None:
        render.rows(outcome.columns, outcome.rows)
    elif outcome.value is not None:
        render.line(outcome.value)
    if outcome.rows_committed_by_code:  # said first: it stays committed whatever happened next
        render.line(f"committed by the code itself (rows: {_counts(outcome.rows_committed_by_code)})", style="green")
    if outcome.error is not None:
        if show_traceback and outcome.traceback:
            render.note(outcome.traceback.rstrip())
        render.error(outcome.error)
    elif outcome.committed:
        render.line(f"committed (rows affected: {_counts(outcome.rows_committed)})", style="green")
    elif outcome.why_not == "--dry-run":
        render.line(f"rolled back: --dry-run (rows it would change: {_counts(outcome.rows_affected)})", style="yellow")
    elif outcome.rows_rolled_back or not outcome.rows_committed_by_code:
        rolled_back = _counts(outcome.rows_rolled_back)
        if outcome.discarded_unflushed:
            rolled_back += f"; unflushed changes discarded in {', '.join(outcome.discarded_unflushed)}"
        render.line(f"rolled back: {outcome.why_not} (rows rolled back: {rolled_back})", style="yellow")


def _as_json(outcome: Outcome, dry_run: bool) -> dict[str, Any]:
    """The ``db run --json`` document (shape documented in the README)."""
    result: dict[str, Any] | None = None
    if outcome.columns is not None:
        result = {"columns": outcome.columns, "rows": outcome.rows}
    elif outcome.value is not None:
        result = {"repr": outcome.value}
    return {
        "ok": outcome.ok,
        "committed": outcome.committed,
        "dry_run": dry_run,
        "rolled_back_because": outcome.why_not,
        "rows_affected": outcome.rows_affected,
        "rows_committed": outcome.rows_committed,
        "rows_committed_by_code": outcome.rows_committed_by_code,
        "rows_rolled_back": outcome.rows_rolled_back,
        "discarded_unflushed": outcome.discarded_unflushed,
        "result": result,
        "error": outcome.error,
    }
