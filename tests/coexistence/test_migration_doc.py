"""docs/migrating-from-advanced-alchemy.md: both of its apps run, answer alike and store the same rows."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "migrating-from-advanced-alchemy.md"


def blocks() -> dict[str, str]:
    """The doc's Python blocks by the file name on their first line (``# before.py: ...``)."""
    found = re.findall(r"```python\n# (\w+)\.py[^\n]*\n(.*?)```", DOC.read_text(), re.DOTALL)
    return {name: f"# {name}.py\n{code}" for name, code in found}


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


def test_the_doc_has_a_before_and_an_after() -> None:
    assert set(blocks()) == {"before", "after"}


@pytest.mark.parametrize("name", ["before", "after"])
def test_each_version_serves_the_same_answers_and_rows(name: str, tmp_path: Path) -> None:
    (tmp_path / f"{name}.py").write_text(blocks()[name])
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("doc_driver.py")), name],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.splitlines()[-1])
    statuses = [(method, path, status) for method, path, status, _ in answers]
    assert statuses == [
        ("POST", "/notes", 201),
        ("POST", "/notes", 201),
        ("POST", "/notes", 409),
        ("GET", "/notes/1", 200),
        ("GET", "/notes/99", 404),
    ]
    assert answers[0][3] == {"id": 1, "title": "first"}
    assert answers[3][3] == {"id": 1, "title": "first"}
    assert rows(tmp_path / "app.db", "select id, title from notes order by id") == [(1, "first"), (2, "second")]
    assert rows(tmp_path / "logs.db", "select message from audit_log order by id") == [
        ("created first",),
        ("created second",),
    ]
    assert rows(tmp_path / "logs.db", "select name from sqlite_master where name = 'notes'") == []
