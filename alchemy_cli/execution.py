"""Running Python source with top-level ``await`` against a namespace, as ``db run`` and ``shell -c`` do."""

from __future__ import annotations

import ast
import inspect
import linecache
import traceback
from typing import Any

__all__ = ("RESULT_NAME", "aborted_hint", "execute", "exit_status", "user_traceback")

RESULT_NAME = "__db_run_result__"
"""Where the value of a trailing expression is kept (``db run "await session.scalar(...)"`` prints it)."""


def _compile(source: str, filename: str, *, keep_result: bool) -> Any:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(source, filename, "exec", flags | ast.PyCF_ONLY_AST)
    if keep_result and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        tree.body[-1] = ast.copy_location(
            ast.Assign(targets=[ast.Name(id=RESULT_NAME, ctx=ast.Store())], value=last.value), last
        )
        ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec", flags)


async def execute(source: str, namespace: dict[str, Any], filename: str, *, keep_result: bool = False) -> Any:
    """Run ``source`` in ``namespace`` on the running loop; return the last expression's value if asked.

    Raises whatever the code raises (``SyntaxError`` included).
    """
    # Tracebacks read source lines through linecache; "<db run>" and the like are not files.
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    code = _compile(source, filename, keep_result=keep_result)
    outcome = eval(code, namespace)
    if inspect.iscoroutine(outcome):
        await outcome
    return namespace.pop(RESULT_NAME, None)


def user_traceback(exc: BaseException, filename: str) -> str:
    """The traceback through the user's own code only: the frames of the shell, SQLAlchemy and the driver
    between their line and the error are noise to them (the error's message says what the database said).
    """
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == filename]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    return "".join(lines + traceback.format_exception_only(type(exc), exc))


def aborted_hint(exc: BaseException) -> str | None:
    """After an error that leaves the session's transaction unusable, what that means and how to go on."""
    from sqlalchemy.exc import DBAPIError, PendingRollbackError

    orig = getattr(exc, "orig", None)
    module = type(orig).__module__
    postgres = module.startswith(("psycopg", "asyncpg")) or ".postgresql." in module  # asyncpg's adapted errors
    if isinstance(exc, PendingRollbackError):
        why = "the session's transaction was rolled back by an earlier error"
    elif "current transaction is aborted" in str(exc):
        why = "PostgreSQL aborted the transaction at an earlier error and ignores every statement until a rollback"
    elif isinstance(exc, DBAPIError) and postgres:
        why = "PostgreSQL aborts the transaction at an error: every later statement fails until a rollback"
    else:
        return None
    return (
        f"The transaction is aborted: {why}. Run `await session.rollback()` (or on the <bind>_session you used) "
        "to go on; it drops what was not committed (in --sandbox: back to the last commit())."
    )


def exit_status(leave: SystemExit) -> tuple[int, str | None]:
    """What ``exit(...)`` means, as Python itself reads it: the exit code, and a message to print if any."""
    if leave.code is None:
        return 0, None
    if isinstance(leave.code, int):
        return leave.code, None
    return 1, str(leave.code)
