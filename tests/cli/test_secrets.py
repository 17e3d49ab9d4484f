"""No part of a password in any output, in every form a password is written; each mistake is one line.

Forms: in the URL, in the URL's query string, in ``connect_args``, inside a DSN in ``connect_args``
(URL and libpq keyword form), and the mistakes: an unencoded ``@``, a port that is not a number, an
engine option that does not exist, a session option that does not exist.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from plugin import ConfigurationError, SQLAlchemyPlugin
from tests.cli import secret_apps
from tests.cli.secret_apps import PARTS

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation

ROOT = Path(__file__).parents[2]
LITESTAR = Path(sys.executable).with_name("litestar")
APP = "tests.cli.secret_apps:create_app"
LOADABLE = ["url", "query", "connect_args", "dsn", "keyword_dsn"]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        leaked = [part for part in PARTS if part in text]
        assert not leaked, f"{leaked} leaked in:\n{text}"


@pytest.mark.parametrize("form", LOADABLE)
def test_masked_in_every_listing_and_repr(
    form: str, refused_port: int, litestar: Callable[..., Invocation], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SECRET_FORM", form)
    monkeypatch.setenv("SECRET_PORT", str(refused_port))
    outputs = [
        litestar("db", "binds", app=APP),
        litestar("db", "binds", "--json", app=APP),
        litestar("db", "binds", "--models", app=APP),
        litestar("db", "check", "--json", "--timeout", "3", app=APP),
        litestar("db", "check", "--timeout", "3", app=APP),
        litestar("db", "run", "--timeout", "3", "--sql", "select 1", app=APP),
        litestar("db", "shell", "-c", "print(repr(plugin.config)); print(plugin.config.bind_configs)", app=APP),
    ]
    binds, binds_json, _, check_json, check, run, shell = outputs
    assert binds.exit_code == binds_json.exit_code == 0
    if form in ("url", "query"):
        assert "***" in binds.stdout
    assert check_json.exit_code == check.exit_code == run.exit_code == 1  # nothing listens on the port
    assert check_json.json()["binds"][0]["error"]
    assert run.stderr.count("\n") == 1
    assert shell.exit_code == 0, shell.output
    assert "***" in shell.stdout
    app = secret_apps.create_app()
    plugin = next(p for p in app.plugins if isinstance(p, SQLAlchemyPlugin))
    assert_no_secret(
        *(o.output for o in outputs), repr(plugin.config), str(plugin.config), caplog.text,
        *(repr(b) for b in plugin.config.bind_configs.values()),
    )  # fmt: skip


@pytest.mark.parametrize(("form", "message"), [
    ("unencoded_at", "Error: bind 'default': the URL's password contains an unencoded '@'; percent-encode the "
                     "password (@ is %40; urllib.parse.quote(password, safe='') does it)"),
    ("bad_port", "Error: bind 'default': the URL's port is not a number; write host:port with digits only, and "
                 "percent-encode ':' and '@' in the password (%3A, %40)"),
    ("bad_option", "Error: bind 'default': create_engine() rejected engine_options (Invalid argument(s) "
                   "'pool_sise' sent to create_engine(), using configuration PGDialect_asyncpg/AsyncAdaptedQueuePool/"
                   "Engine. Please check that the keyword arguments are appropriate for this combination of "
                   "components.); fix or remove the option (given: pool_sise)"),
    ("bad_session_option", "Error: BindConfig(session_options=...): 'expire_on_comit' is not an option of "
                           "SQLAlchemy's Session (did you mean 'expire_on_commit'?); use one of autoflush, "
                           "close_resets_only, enable_baked_queries, execution_options, expire_on_commit, info, "
                           "join_transaction_mode, query_cls"),
])  # fmt: skip
def test_each_mistake_is_one_line_without_the_password(form: str, message: str, refused_port: int) -> None:
    env = {**os.environ, "SECRET_FORM": form, "SECRET_PORT": str(refused_port)}
    for command in (["db", "binds"], ["db", "check"], ["routes"]):
        done = subprocess.run(
            [str(LITESTAR), "--app", APP, *command], cwd=ROOT, env=env, capture_output=True, text=True,
            check=False, timeout=60,
        )  # fmt: skip
        if form == "bad_option" and command == ["routes"]:
            continue  # engines start with the app's lifespan, which `litestar routes` never enters
        assert (done.returncode, done.stderr, done.stdout) == (1, message + "\n", ""), command
        assert_no_secret(done.stdout, done.stderr)


@pytest.mark.parametrize("form", ["unencoded_at", "bad_port"])
def test_the_configuration_error_itself(
    form: str, refused_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SECRET_FORM", form)
    monkeypatch.setenv("SECRET_PORT", str(refused_port))
    with pytest.raises(ConfigurationError) as raised:
        secret_apps.create_app()
    error: Any = raised.value
    assert "\n" not in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert_no_secret(str(error), repr(error), caplog.text)
