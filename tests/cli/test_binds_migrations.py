"""``db binds`` shows where each bind's migrations live; without migrations nothing imports Alembic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.alembic_scripts import build
from tests.cli.helpers import flat

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation

ROOT = Path(__file__).parents[2]


def test_binds_json_shows_where_migrations_live(litestar: Callable[..., Invocation], tmp_path: Path) -> None:
    multidb = build(tmp_path / "multidb", "multidb", ["default"])
    branches = build(tmp_path / "branches", "branches", ["logs"])
    binds = {key: f"sqlite+aiosqlite:///{tmp_path}/{key}.db" for key in ("default", "logs", "plain", "lost")}
    migrations = {
        "default": {"ini": multidb.migrations["default"].ini},
        "logs": {"script_location": branches.migrations["logs"].script_location, "branch": "logs"},
        "lost": {"script_location": str(tmp_path / "gone"), "version_table": "versions"},
    }

    document = litestar("db", "binds", "--json", binds=binds, models="", migrations=migrations).json()
    table = litestar("db", "binds", binds=binds, models="", migrations=migrations)

    by_key = {b["key"]: b["migrations"] for b in document["binds"]}
    assert by_key["default"] == {
        "script_location": None,
        "ini": str(tmp_path / "multidb" / "alembic.ini"),
        "ini_section": "alembic",
        "branch": None,
        "target": "heads",
        "version_table": "alembic_version",
        "version_table_schema": None,
        "directory": str(tmp_path / "multidb" / "migrations"),  # read from the ini's %(here)s/migrations
        "error": None,
    }
    assert by_key["logs"]["directory"] == str(tmp_path / "branches" / "migrations")
    assert by_key["logs"]["target"] == "logs@head"
    assert by_key["plain"] is None
    assert by_key["lost"]["directory"] is None
    assert by_key["lost"]["error"].startswith(f"migrations folder '{tmp_path}/gone' does not exist")
    assert table.exit_code == 0
    text = flat(table.stdout)
    assert f"default {tmp_path}/multidb/migrations heads alembic_version" in text
    assert f"logs {tmp_path}/branches/migrations logs@head alembic_version" in text
    assert f"lost ✗ migrations folder '{tmp_path}/gone' does not exist" in text


PROBE = """
import sys
from click.testing import CliRunner
from litestar.cli.main import litestar_group

result = CliRunner().invoke(litestar_group, ["--app", "tests.cli.apps:create_app", *sys.argv[1:]])
print(result.exit_code, "alembic" in sys.modules)
"""


@pytest.mark.parametrize("command", ["binds", "check"])
@pytest.mark.parametrize("configured", [False, True], ids=["no-migrations", "migrations"])
def test_alembic_is_imported_only_when_migrations_are_configured(
    command: str, configured: bool, tmp_path: Path
) -> None:
    """In a fresh interpreter (this one has imported Alembic long ago)."""
    scripts = build(tmp_path / "scripts", "per_bind", ["default"])
    migrations = {"default": {"script_location": scripts.migrations["default"].script_location}}
    env = {
        **os.environ,
        "ALCHEMY_TEST_BINDS": json.dumps({"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}),
        "ALCHEMY_TEST_MODELS": "",
        "ALCHEMY_TEST_MIGRATIONS": json.dumps(migrations if configured else {}),
    }
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, "db", command], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    exit_code, imported = completed.stdout.split()[-2:]
    assert exit_code == ("1" if command == "check" and configured else "0")  # never migrated: check fails
    assert imported == str(configured)
