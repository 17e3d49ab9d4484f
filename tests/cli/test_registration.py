"""``litestar db`` behaves like Litestar's own commands: help, -h, usage errors, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.cli.helpers import flat

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation

ROOT = Path(__file__).parents[2]


def sqlite_binds(tmp_path: Path) -> dict[str, str]:
    return {"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_group_help(flag: str, litestar: Callable[..., Invocation], tmp_path: Path) -> None:
    result = litestar("db", flag, binds=sqlite_binds(tmp_path))
    assert result.exit_code == 0
    assert "Usage: litestar db [OPTIONS] COMMAND [ARGS]..." in result.stdout
    assert "binds" in result.stdout
    assert "check" in result.stdout


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_command_help(flag: str, litestar: Callable[..., Invocation], tmp_path: Path) -> None:
    result = litestar("db", "binds", flag, binds=sqlite_binds(tmp_path))
    assert result.exit_code == 0
    assert "Usage: litestar db binds [OPTIONS]" in result.stdout
    assert "--models" in result.stdout
    assert "--json" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["db", "binds", "--nope"], "No such option: --nope"),
        (["db", "nope"], "No such command 'nope'"),
        (["db", "check", "--timeout", "0"], "should be greater than or equal to 0.1"),
        (["db", "check", "--timeout", "soon"], "unable to parse string as a number"),
        (["db", "check", "--bind", "nope"], "bind 'nope' is not configured (configured: 'default')"),
    ],
)
def test_usage_errors_exit_2_with_usage(
    args: list[str], message: str, litestar: Callable[..., Invocation], tmp_path: Path
) -> None:
    result = litestar(*args, binds=sqlite_binds(tmp_path))
    assert result.exit_code == 2
    assert "Usage: litestar db" in result.stderr
    assert message in flat(result.stderr)
    assert "Traceback" not in result.output


def test_app_without_the_plugin(litestar: Callable[..., Invocation]) -> None:
    result = litestar("db", "binds", app="tests.cli.apps:create_app_without_plugin")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: the app tests.cli.apps:create_app_without_plugin does not register SQLAlchemyPlugin; add "
        "plugins=[SQLAlchemyPlugin(config=...)] to Litestar(...)"
    )


def test_app_module_that_does_not_exist(litestar: Callable[..., Invocation]) -> None:
    result = litestar("db", "binds", app="tests.cli.no_such_module:app")
    assert result.exit_code == 1
    assert "Invalid argument passed --app 'tests.cli.no_such_module:app': Module not found" in result.output
    assert "Traceback" not in result.output


def test_bad_configuration_found_by_a_command_is_one_line(litestar: Callable[..., Invocation]) -> None:
    result = litestar("db", "binds", binds={"default": "postgresql+pg8000://u:p@db.example.com/x"}, sync=True)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: bind 'default' uses driver 'pg8000', which is not installed (pg8000); pip install 'pg8000'"
    )


def test_real_litestar_executable(tmp_path: Path) -> None:
    """The installed entry point, end to end, as a user types it."""
    litestar = Path(sys.executable).with_name("litestar")
    env = {
        **os.environ,
        "ALCHEMY_TEST_BINDS": f'{{"default": "sqlite+aiosqlite:///{tmp_path}/a.db"}}',
        "COLUMNS": "200",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(litestar), "--app", "tests.cli.apps:create_app", *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=60)

    root_help = run("--help")
    assert root_help.returncode == 0
    assert "db " in root_help.stdout
    assert "Inspect and use the app's databases" in root_help.stdout
    listing = run("db", "binds")
    assert (listing.returncode, listing.stderr) == (0, "")
    assert "default (default)" in listing.stdout
    bad = run("db", "binds", "--nope")
    assert bad.returncode == 2
    assert "No such option: --nope" in bad.stderr


def test_no_app_to_be_found(tmp_path: Path) -> None:
    """In a directory with no app and no --app, the command says what to pass."""
    litestar = Path(sys.executable).with_name("litestar")
    env = {key: value for key, value in os.environ.items() if key != "LITESTAR_APP"}
    result = subprocess.run(
        [str(litestar), "db", "binds"], capture_output=True, text=True, cwd=tmp_path, env=env, check=False, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: the app could not be loaded (LitestarCLIException: Could not find Litestar instance or factory); "
        "pass --app module.path:app or set LITESTAR_APP\n"
    )
