"""What a user reads, through a pipe as in a log: whole URLs, unpadded titles, one-line errors, plain help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation

ROOT = Path(__file__).parents[2]
LITESTAR = Path(sys.executable).with_name("litestar")


def piped(binds: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``litestar db ...`` with stdout and stderr going to pipes, no COLUMNS set (as in CI logs)."""
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    env["ALCHEMY_TEST_BINDS"] = binds
    command = [str(LITESTAR), "--app", "tests.cli.apps:create_app", "db", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=60)


def test_piped_listing_keeps_long_urls_whole_and_titles_unpadded(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 4)
    deep.mkdir()
    url = f"sqlite+aiosqlite:///{deep}/the-database-name-at-the-very-end.db"
    server = (
        "postgresql+asyncpg://reporting_user:pw@reports.internal.example.com:5432/reports_warehouse_2026?ssl=require"
    )
    done = piped(f'{{"default": "{url}", "reports": "{server}"}}', "binds")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Binds of tests.cli.apps:create_app"
    assert url in done.stdout
    assert (
        "postgresql+asyncpg://reporting_user:***@reports.internal.example.com:5432/reports_warehouse_2026?ssl=require"
        in (done.stdout)
    )
    assert "…" not in done.stdout
    assert all(line == line.rstrip() for line in lines)


def test_a_usage_error_is_one_unbroken_line_when_piped(tmp_path: Path) -> None:
    done = piped(f'{{"default": "sqlite+aiosqlite:///{tmp_path}/a.db"}}', "check", "--bind", "nosuch")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "Usage: litestar db check [OPTIONS]\n"
        "Try 'litestar db check -h' for help.\n"
        "\n"
        "Error: Invalid value for '--bind': bind 'nosuch' is not configured (configured: 'default')\n"
    )


def test_help_shows_flags_as_flags(litestar: Callable[..., Invocation], tmp_path: Path) -> None:
    result = litestar("db", "binds", "--help", binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"})
    assert result.exit_code == 0
    assert "  --models    Also list every model with its bind and table.\n" in result.stdout
    assert "<bool>" not in result.stdout
    assert "BOOLEAN" not in result.stdout


def test_a_binary_file_is_one_line(litestar: Callable[..., Invocation], tmp_path: Path) -> None:
    binary = tmp_path / "dump.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    result = litestar("db", "run", "--file", str(binary), binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"})
    assert result.exit_code == 2
    assert result.stderr.endswith(
        f"Error: Invalid value for '--file': {binary} is not a Python source file (it is not UTF-8 text; "
        "a binary file?)\n"
    )
    assert "Traceback" not in result.output


def test_grammar_of_counts(litestar: Callable[..., Invocation], tmp_path: Path) -> None:
    binds = {"default": f"sqlite+aiosqlite:///{tmp_path}/a.db", "logs": f"sqlite+aiosqlite:///{tmp_path}/b.db"}
    result = litestar("db", "check", binds=binds, models="shop,logs,archive")
    assert result.exit_code == 1
    assert result.stdout.endswith("3 checks failed\n")  # two missing tables and one unconfigured bind key
    one = litestar("db", "check", "--bind", "logs", binds=binds, models="logs")
    assert one.stdout.endswith("1 check failed\n")
