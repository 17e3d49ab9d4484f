"""The interactive half of ``db shell``: ptpython on the engines' own event loop, or a plain console.

ptpython's async mode is awaited inside the running loop, so ``await session.execute(...)`` runs on the
loop that owns the engines. Its own ``exit()`` does not leave in that mode (it raises an exception the
loop reports), so the shell installs an ``exit``/``quit`` that raises ``SystemExit``, which does.

The plain console (``--plain``, or whenever ptpython cannot run: no terminal, ``TERM=dumb``) is Python's
``code.InteractiveConsole`` compiling with top-level ``await``, reading input in a worker thread and
running each coroutine on the loop, as ``python -m asyncio`` does.
"""

from __future__ import annotations

import ast
import asyncio
import code
import contextlib
import inspect
import os
import sys
import traceback
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Union

if TYPE_CHECKING:
    from collections.abc import Callable

    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

__all__ = ("Errors", "Leave", "Prompt", "history_file", "plain_shell", "ptpython_shell", "ptpython_can_run")

Prompt = Union[str, Sequence[tuple[str, bool]]]
"""The prompt before `` >>> ``: text, or (text, alert) parts; alert parts are shown in bold red."""


def _parts(prompt: Prompt) -> list[tuple[str, bool]]:
    return [(prompt, False)] if isinstance(prompt, str) else list(prompt)


class Leave:
    """``exit()`` / ``quit()`` in the shell: leave it (rolling back what was not committed)."""

    def __call__(self, code: object = None) -> NoReturn:
        raise SystemExit(code)

    def __repr__(self) -> str:
        return "Use exit() or Ctrl-D to leave the shell"


class Errors:
    """How the shell shows an error: the user's own lines and the error, plus what to do when the transaction
    is aborted. Also ``last_traceback()`` in the shell: the full traceback of the last error."""

    def __init__(self, redact: Callable[[str], str] = str) -> None:
        self._redact = redact
        self._last: BaseException | None = None

    def report(self, exc: BaseException, filename: str) -> str:
        """The text to print for ``exc`` raised by code compiled as ``filename``."""
        from alchemy_cli.execution import aborted_hint, user_traceback

        self._last = exc
        text = user_traceback(exc, filename)
        if (hint := aborted_hint(exc)) is not None:
            text += hint + "\n"
        return self._redact(text + "(last_traceback() shows the full traceback)\n")

    def __call__(self) -> None:
        if self._last is None:
            print("no error yet")
            return
        print(self._redact("".join(traceback.format_exception(self._last))), end="")

    def __repr__(self) -> str:
        return "Call last_traceback() to print the full traceback of the last error"


def history_file(name: str) -> Path | None:
    """``$XDG_STATE_HOME/litestar-alchemy/<name>`` (``~/.local/state/...``), or None when not writable."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "litestar-alchemy"
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return state / name


def ptpython_can_run() -> bool:
    """ptpython needs a real terminal on both ends."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()) or os.environ.get("TERM") == "dumb":
        return False
    try:
        import ptpython.repl  # noqa: F401
    except ImportError:
        return False
    return True


async def ptpython_shell(
    namespace: dict[str, Any],
    *,
    prompt: Prompt,
    history: Path | None,
    errors: Errors | None = None,
    input: Input | None = None,
    output: Output | None = None,
) -> None:
    """Run ptpython until ``exit()`` or Ctrl-D. ``input``/``output`` let tests drive it."""
    shown = errors or Errors()
    from ptpython.prompt_style import PromptStyle
    from ptpython.repl import PythonRepl

    class ShellPrompt(PromptStyle):
        def in_prompt(self) -> Any:
            parts = [("class:in bold ansired" if alert else "class:in", text) for text, alert in _parts(prompt)]
            return [*parts, ("", " >>> ")]

        def in2_prompt(self, width: int) -> Any:
            return [("class:in", "...".rjust(width - 1)), ("", " ")]

        def out_prompt(self) -> Any:
            return []

    class ShellRepl(PythonRepl):
        # Private hooks of ptpython 3.0 (pinned by tests/cli/test_repl.py): the names ptpython adds to the
        # namespace, and how it prints an exception (a full traceback through SQLAlchemy and the driver).
        def _add_to_namespace(self) -> None:
            super()._add_to_namespace()
            self.get_globals()["exit"] = self.get_globals()["quit"] = Leave()
            self.get_globals()["last_traceback"] = shown

        def _handle_exception(self, e: BaseException) -> None:
            self.app.output.write(shown.report(e, "<stdin>").replace("\n", "\r\n") + "\r\n")
            self.app.output.flush()

    repl = ShellRepl(
        get_globals=lambda: namespace,
        get_locals=lambda: namespace,
        history_filename=str(history) if history else None,
        input=input,
        output=output,
    )
    repl.all_prompt_styles["db-shell"] = ShellPrompt()
    repl.prompt_style = "db-shell"
    repl.confirm_exit = False
    repl.enable_pager = False
    repl.show_status_bar = False
    await repl.run_async()


class _AsyncConsole(code.InteractiveConsole):
    def __init__(self, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop, errors: Errors) -> None:
        super().__init__(namespace)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.loop = loop
        self.errors = errors
        namespace["last_traceback"] = errors

    def showtraceback(self) -> None:
        exc = sys.exc_info()[1]
        if exc is None:  # pragma: no cover - only called while handling an exception
            return
        self.write(self.errors.report(exc, "<console>"))

    def runcode(self, code: types.CodeType) -> None:
        try:
            outcome = types.FunctionType(code, self.locals)()
            if inspect.iscoroutine(outcome):
                asyncio.run_coroutine_threadsafe(outcome, self.loop).result()
        except SystemExit:
            raise
        except BaseException:
            self.showtraceback()


async def plain_shell(
    namespace: dict[str, Any], *, prompt: Prompt, history: Path | None, errors: Errors | None = None
) -> None:
    """The plain console, until ``exit()`` or Ctrl-D."""
    loop = asyncio.get_running_loop()
    console = _AsyncConsole(namespace, loop, errors or Errors())
    readline: Any = None
    with contextlib.suppress(ImportError):
        import readline
    if readline is not None and history is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
    previous = getattr(sys, "ps1", None), getattr(sys, "ps2", None)
    # Colour only on a terminal; \001 and \002 tell readline the escape codes take no width.
    red, reset = ("\001\033[1;31m\002", "\001\033[0m\002") if sys.stdout.isatty() else ("", "")
    text = "".join(f"{red}{part}{reset}" if alert else part for part, alert in _parts(prompt))
    sys.ps1, sys.ps2 = f"{text} >>> ", "... "
    try:
        await loop.run_in_executor(None, lambda: console.interact(banner="", exitmsg=""))
    except SystemExit:
        pass
    finally:
        sys.ps1, sys.ps2 = previous
        if readline is not None and history is not None:
            with contextlib.suppress(OSError):
                readline.write_history_file(history)
