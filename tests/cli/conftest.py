from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result
from litestar.cli.main import litestar_group

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass
class Invocation:
    """What one ``litestar ...`` command printed and returned."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def litestar(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Invocation]:
    """Run ``litestar <args>`` through Litestar's own root command, on the test app factory.

    ``binds`` (key -> URL), ``models`` (model sets, see tests/cli/apps.py), ``sync`` and ``migrations``
    (key -> ``Migrations`` fields) configure the app.
    """

    def invoke(
        *args: str,
        binds: dict[str, Any] | None = None,
        models: str = "shop",
        sync: bool = False,
        app: str | None = None,
        input: str | None = None,
        migrations: dict[str, dict[str, str]] | None = None,
    ) -> Invocation:
        monkeypatch.setenv("LITESTAR_APP", app or "tests.cli.apps:create_app")
        monkeypatch.setenv("ALCHEMY_TEST_BINDS", json.dumps(binds or {}))
        monkeypatch.setenv("ALCHEMY_TEST_MODELS", models)
        monkeypatch.setenv("ALCHEMY_TEST_SYNC", "1" if sync else "0")
        monkeypatch.setenv("ALCHEMY_TEST_MIGRATIONS", json.dumps(migrations or {}))
        command = ["--app", app or "tests.cli.apps:create_app", *args]
        result: Result = CliRunner().invoke(litestar_group, command, input=input)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Invocation(result.exit_code, result.stdout, result.stderr)

    return invoke
