"""The example app behaves as its docstring says: notes in app.db, audit entries in logs.db."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from litestar.testing import TestClient

from examples.app import create_app

if TYPE_CHECKING:
    from pathlib import Path


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


def test_example_app_routes_notes_and_audit_entries_to_their_databases(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path)) as client:
        created = client.post("/notes", json={"title": "first", "body": "hello", "tags": ["a", "b"]})
        assert created.status_code == 201
        assert created.json() == {"id": 1, "title": "first", "body": "hello", "tags": ["a", "b"]}
        duplicate = client.post("/notes", json={"title": "first"})
        assert duplicate.status_code == 409
        assert client.delete("/notes/1").status_code == 204
        assert client.get("/notes/1").status_code == 404
        assert client.post("/notes", json={"title": "second"}).status_code == 201
        assert client.get("/audit").json() == [
            {"action": "created", "note_title": "first"},
            {"action": "deleted", "note_title": "first"},
            {"action": "created", "note_title": "second"},
        ]
        assert client.get("/stats").json() == {"notes": 1, "audit_entries": 3}

    assert rows(tmp_path / "app.db", "select title from notes") == [("second",)]
    assert rows(tmp_path / "logs.db", "select action, note_title from audit_log order by id") == [
        ("created", "first"),
        ("deleted", "first"),
        ("created", "second"),
    ]
    assert rows(tmp_path / "logs.db", "select name from sqlite_master where name = 'notes'") == []


def test_the_readme_test_file_is_the_one_the_suite_runs() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    shown = readme.split("A complete test file", 1)[1].split("```python\n", 1)[1].split("\n```", 1)[0]
    assert shown == (root / "tests" / "test_readme_testing.py").read_text().rstrip("\n")


def test_the_readme_test_file_passes_in_a_project_of_its_own(tmp_path: Path) -> None:
    """As a user runs it: no conftest of this repository (its anyio_backend is session-scoped and single;
    anyio's own is module-scoped and parametrized), the package's pytest plugin loaded by its entry point."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "test_notes.py").write_text((root / "tests" / "test_readme_testing.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
