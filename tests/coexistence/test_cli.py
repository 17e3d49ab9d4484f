"""With advanced-alchemy's plugin on the same app, ``litestar db`` is ours and ``litestar database`` is
theirs, in either registration order; their migrations still run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LITESTAR = Path(sys.executable).with_name("litestar")


def litestar(tmp_path: Path, order: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COEXIST_DIR": str(tmp_path), "COEXIST_ORDER": order, "COLUMNS": "200"}
    command = [str(LITESTAR), "--app", "tests.coexistence.apps:create_app", *args]
    return subprocess.run(command, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, check=False, timeout=120)  # fmt: skip


@pytest.mark.parametrize("order", ["aa-first", "ours-first"])
def test_db_is_ours_and_database_is_advanced_alchemys(tmp_path: Path, order: str) -> None:
    binds = litestar(tmp_path, order, "db", "binds", "--json")
    assert binds.returncode == 0, binds.stderr
    assert '"url": "sqlite+aiosqlite:///' in binds.stdout
    assert '"tables": 1' in binds.stdout

    check = litestar(tmp_path, order, "db", "check")
    assert check.returncode == 1  # the widgets table was never created: our check says so
    assert "missing table widgets" in check.stdout

    theirs = litestar(tmp_path, order, "database", "--help")
    assert theirs.returncode == 0, theirs.stderr
    assert "make-migrations" in theirs.stdout
    assert "upgrade" in theirs.stdout


def test_advanced_alchemys_migrations_run_next_to_our_plugin(tmp_path: Path) -> None:
    for args in (
        ("database", "init", "--no-prompt", "migrations"),
        ("database", "make-migrations", "--no-prompt", "-m", "gadgets"),
        ("database", "upgrade", "--no-prompt"),
    ):
        done = litestar(tmp_path, "aa-first", *args)
        assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "aa.db") as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
    assert {"gadget", "alembic_versions"} <= tables
    assert not (tmp_path / "ours.db").exists() or "gadget" not in (tmp_path / "ours.db").read_bytes().decode("latin-1")
