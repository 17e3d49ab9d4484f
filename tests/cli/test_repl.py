"""The REPLs themselves, driven in-process: ptpython through a pipe input, the plain console through stdin."""

from __future__ import annotations

import io
import sys
from typing import TYPE_CHECKING

import pytest
from litestar import Litestar
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from alchemy_cli import repl
from alchemy_cli.loader import Target, engines_started
from alchemy_cli.workspace import Workspace
from examples.app import AuditEntry, Note, create_app
from plugin import SQLAlchemyPlugin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


@pytest.fixture
async def example(tmp_path: Path) -> AsyncIterator[Target]:
    """The example app on fresh databases: two notes in app.db, one audit entry in logs.db."""
    app: Litestar = create_app(tmp_path)
    plugin = next(p for p in app.plugins if isinstance(p, SQLAlchemyPlugin))
    async with plugin.lifespan(), plugin.transaction() as session:  # lifespan creates the tables
        session.add_all([Note(title="first"), Note(title="second"), AuditEntry(action="created", note_title="x")])
    target = Target(app_path="examples.app:app", app=app, plugin=plugin)
    async with engines_started(plugin):
        yield target


async def drive_ptpython(target: Target, lines: list[str], *, end: str = "exit()\r") -> str:
    """Type ``lines`` into ptpython, then ``end``; return what ptpython printed."""
    workspace = Workspace(target)
    namespace, _ = workspace.namespace()
    screen = io.StringIO()
    with create_pipe_input() as keyboard:
        for line in lines:
            keyboard.send_text(line + "\r")
        keyboard.send_text(end)
        await repl.ptpython_shell(
            namespace, prompt="examples.app:app", history=None, input=keyboard, output=PlainTextOutput(screen)
        )
    await workspace.close()
    return screen.getvalue().replace("\r\n", "\n")


async def test_ptpython_queries_two_binds_survives_an_error_and_exits(example: Target) -> None:
    screen = await drive_ptpython(
        example,
        [
            "await session.scalar(select(func.count()).select_from(Note))",  # default bind, routed
            "1/0",  # an error is shown; the session goes on
            "(await session.scalars(select(AuditEntry.note_title))).all()",  # the logs bind, routed
            "await logs_session.scalar(text('select count(*) from audit_log'))",  # pinned to logs
        ],
    )
    assert "examples.app:app >>> " in screen
    assert "\n2\n" in screen
    assert "ZeroDivisionError: division by zero" in screen
    assert "['x']" in screen
    assert screen.count("\n1\n") == 1
    # after the error, the later statements still ran: the last result comes after the traceback
    assert screen.index("ZeroDivisionError") < screen.index("['x']")


async def test_ptpython_leaves_on_ctrl_d(example: Target) -> None:
    screen = await drive_ptpython(example, ["await session.scalar(select(func.max(Note.title)))"], end="\x04")
    assert "'second'" in screen


async def test_exit_without_parentheses_is_explained_not_fatal(example: Target) -> None:
    screen = await drive_ptpython(example, ["exit", "41 + 1"])
    assert "Use exit() or Ctrl-D to leave the shell" in screen
    assert "\n42\n" in screen


async def test_plain_console_has_top_level_await(
    example: Target, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = Workspace(example)
    namespace, _ = workspace.namespace()
    namespace["exit"] = repl.Leave()
    typed = [
        "n = await session.scalar(select(func.count()).select_from(Note))",
        "print('notes:', n)",
        "1/0",
        "print('still here:', (await logs_session.scalars(select(AuditEntry.action))).all())",
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(typed) + "\n"))  # then EOF, like Ctrl-D
    await repl.plain_shell(namespace, prompt="examples.app:app", history=None)
    await workspace.close()

    out, err = capsys.readouterr()
    assert "notes: 2" in out
    assert "ZeroDivisionError: division by zero" in err
    assert "still here: ['created']" in out


async def test_names_in_the_shell(example: Target) -> None:
    workspace = Workspace(example, bind="logs")
    namespace, renamed = workspace.namespace()
    await workspace.close()

    assert namespace["session"] is namespace["logs_session"]  # --bind logs
    assert {"app_session", "logs_session", "app_engine", "logs_engine", "engines", "sql"} <= set(namespace)
    assert {"select", "insert", "update", "delete", "text", "func"} <= set(namespace)
    assert namespace["Note"] is Note
    assert namespace["AuditEntry"] is AuditEntry
    assert renamed == []


async def test_colliding_names_are_renamed_and_reported(tmp_path: Path) -> None:
    from tests.cli import clash

    app = Litestar(plugins=[SQLAlchemyPlugin(config=clash.config(tmp_path))])
    plugin = next(p for p in app.plugins if isinstance(p, SQLAlchemyPlugin))
    async with engines_started(plugin):
        workspace = Workspace(Target(app_path="clash:app", app=app, plugin=plugin))
        namespace, renamed = workspace.namespace()
        await workspace.close()

    assert namespace["Customer"] is clash.Customer
    assert namespace["tests_cli_clash_other_Customer"] is clash.OtherCustomer
    assert namespace["text"] is not clash.text_model  # SQLAlchemy's text() wins over a model called text
    assert namespace["tests_cli_clash_text"] is clash.text_model
    assert renamed == [  # models in (class name, module) order: the first of a name keeps it
        "tests.cli.clash_other.Customer is tests_cli_clash_other_Customer ('Customer' was taken)",
        "tests.cli.clash.text is tests_cli_clash_text ('text' was taken)",
    ]
