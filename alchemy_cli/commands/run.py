"""``litestar db run``: one transaction under the request policy, then exit.

Python (an argument or ``--file``, top-level ``await``, the shell's names) or SQL (``--sql``). Success
commits when the app's transaction policy says a 2xx would; an exception rolls everything back and
exits 1; ``--dry-run`` always rolls back. The value of a trailing expression (or the rows of ``--sql``)
is printed.
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
from alchemy_cli.loader import engines_started, load_target, reported_errors, require_binds
from alchemy_cli.namespace import add_app_names
from alchemy_cli.workspace import Workspace
from plugin.exceptions import describe_error
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
    why_not: str | None = None
    """Why nothing was committed: ``--dry-run``, the manual policy, or the error."""
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    value: str | None = None
    rows_affected: dict[str, int] = field(default_factory=dict)
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
) -> None:
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
) -> Outcome:
    plugin = target.plugin
    outcome = Outcome()
    async with engines_started(plugin, connect_timeout=timeout):
        workspace = Workspace(target, bind=bind)
        workspace.confirmation = confirmation
        sessions = list(workspace.sessions.values())
        try:
            try:
                if sql is not None:
                    value = await _execute_sql(workspace.session, sql)
                else:
                    namespace, _ = workspace.namespace()
                    await add_app_names(target, namespace)
                    value = await execute(code or "", namespace, filename, keep_result=True)
                _keep_result(outcome, value)  # read rows before the commit expires or closes them
            except SystemExit as leave:  # exit() and exit(0) end the code normally; anything else fails it
                exit_code, message = exit_status(leave)
                if exit_code != 0:
                    await settle_all(sessions, commit=False)
                    reason = message or f"the code called exit({exit_code})"
                    return _failed(outcome, f"{reason} (rolled back)", exit_code)
            except Exception as exc:  # the user's code or SQL failed: roll back and report
                await settle_all(sessions, commit=False)
                outcome.traceback = user_traceback(exc, filename)
                return _failed(outcome, f"{describe_error(exc)} (rolled back)")
            commit = not dry_run and plugin.config.transaction.should_commit(SUCCESS_STATUS)
            if (failure := await settle_all(sessions, commit)) is not None:
                return _failed(outcome, str(failure))
            outcome.committed = commit
            outcome.why_not = None if commit else "--dry-run" if dry_run else "the transaction policy is manual"
            return outcome
        finally:
            changed = workspace.rows_affected
            outcome.rows_affected = {key: changed[key] for key in plugin.router.keys if changed[key]}
            await workspace.close()


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


def _print(outcome: Outcome, show_traceback: bool) -> None:
    if outcome.columns is not None and outcome.rows is not None:
        render.rows(outcome.columns, outcome.rows)
    elif outcome.value is not None:
        render.line(outcome.value)
    changed = ", ".join(f"{key} {n}" for key, n in outcome.rows_affected.items()) or "none"
    if outcome.error is not None:
        if show_traceback and outcome.traceback:
            render.note(outcome.traceback.rstrip())
        render.error(outcome.error)
    elif outcome.committed:
        render.line(f"committed (rows affected: {changed})", style="green")
    else:
        render.line(f"rolled back: {outcome.why_not} (rows affected before the rollback: {changed})", style="yellow")


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
        "result": result,
        "error": outcome.error,
    }
