"""Bad configuration fails early with one error that names the problem, and never shows a password."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar
from litestar.di import Provide
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from plugin import (
    BindConfig,
    BindKeyError,
    ConfigurationError,
    DriverMismatchError,
    DriverNotInstalledError,
    DuplicateKeyError,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
    SQLAlchemySyncConfig,
    TransactionPolicy,
)
from tests.plugin.helpers import startup_error
from tests.plugin.models import Base, logs_metadata

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

PASSWORD = "Tr0ub4dor-and-3"  # chosen by the test; must never be printed


class ArchiveBase(DeclarativeBase):
    pass


class ArchivedOrder(ArchiveBase):
    __tablename__ = "archived_orders"
    __bind_key__ = "archive"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def no_secret_leaks(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[list[Any]]:
    """Collects exceptions and objects; after the test, the password is in none of them nor any output.

    Apps built under it take no Litestar logging config: Litestar's default hands records to a thread that
    writes them to the ``sys.stderr`` of the moment (here capsys's, closed after the test), and a record
    that thread wrote late (the pool's INFO as a failed startup disposes its engines) raised in it during
    the next test. caplog still sees every record."""
    caplog.set_level(logging.DEBUG, logger="plugin")
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    seen: list[Any] = []
    yield seen
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, caplog.text]
    for item in seen:
        texts += [str(item), repr(item)]
        if isinstance(item, BaseException):
            texts += [str(item.__cause__ or ""), str(item.__context__ or "")]
    assert all(PASSWORD not in text for text in texts)


def pg_url(driver: str = "asyncpg") -> str:
    return f"postgresql+{driver}://app:{PASSWORD}@db.example.com:5432/app"


async def test_unknown_bind_key_on_a_model_fails_at_startup(tmp_path: Path, no_secret_leaks: list[Any]) -> None:
    config = SQLAlchemyAsyncConfig(
        binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db", "logs": f"sqlite+aiosqlite:///{tmp_path}/b.db"},
        base=(Base, logs_metadata, ArchiveBase),
    )
    app = Litestar(plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)  # see no_secret_leaks

    error = await startup_error(app)

    assert isinstance(error, BindKeyError)
    assert str(error) == (
        "model 'ArchivedOrder' has __bind_key__ = 'archive', which is not a configured bind "
        "(configured: 'default', 'logs'); add 'archive' to binds= or fix the model"
    )
    no_secret_leaks.append(error)


async def test_unknown_bind_key_on_a_table_metadata_names_the_table(tmp_path: Path) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table

    from plugin import BIND_KEY

    metadata = MetaData(info={BIND_KEY: "warehouse"})
    Table("stock", metadata, Column("id", Integer, primary_key=True))
    plugin = SQLAlchemyPlugin(
        config=SQLAlchemyAsyncConfig(binds={"default": f"sqlite+aiosqlite:///{tmp_path}/a.db"}, base=metadata)
    )

    with pytest.raises(
        BindKeyError,
        match=r"^table 'stock' has MetaData.info\['bind_key'\] = 'warehouse', which is not a configured bind "
        r"\(configured: 'default'\)",
    ):
        async with plugin.lifespan():
            pass
    assert plugin.engines.state == "closed"  # the engines made before the check were disposed


def test_dependency_key_already_registered_on_the_app() -> None:
    config = SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite://"})
    with pytest.raises(DuplicateKeyError) as raised:
        Litestar(
            plugins=[SQLAlchemyPlugin(config=config)],
            dependencies={"db_session": Provide(lambda: 1, sync_to_thread=False)},
        )
    assert str(raised.value) == (
        "dependency key 'db_session' (the routed session) is already registered on the app; remove the app's "
        "own dependency or change session_key= / engine_key= in the config"
    )


def test_dependency_keys_that_would_collide_between_binds() -> None:
    with pytest.raises(DuplicateKeyError) as raised:
        SQLAlchemyAsyncConfig(
            binds={"default": "sqlite+aiosqlite://", "logs": "sqlite+aiosqlite://"}, engine_key="logs_db_session"
        )
    assert str(raised.value) == (
        "dependency key 'logs_db_session' would be registered twice (engine of bind 'default' and session of "
        "bind 'logs'); rename the bind or change session_key= / engine_key="
    )


def test_two_plugins_on_one_app_are_refused() -> None:
    first = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite://"}))
    second = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite://"}))
    with pytest.raises(DuplicateKeyError, match="two SQLAlchemyPlugin instances are registered on one app"):
        Litestar(plugins=[first, second])


@pytest.mark.parametrize(
    ("url", "package"),
    [
        (pg_url("pg8000"), "pip install 'pg8000'"),
        (pg_url("psycopg2"), "pip install 'psycopg2-binary'"),
        (f"mysql+mysqldb://root:{PASSWORD}@db.example.com/app", "pip install 'mysqlclient'"),
    ],
)
async def test_driver_not_installed_says_which_package(url: str, package: str, no_secret_leaks: list[Any]) -> None:
    plugin = SQLAlchemyPlugin(config=SQLAlchemySyncConfig(binds={"default": "sqlite://", "reports": url}))
    app = Litestar(plugins=[plugin], logging_config=None)  # see no_secret_leaks

    error = await startup_error(app)

    assert isinstance(error, DriverNotInstalledError)
    assert str(error).startswith("bind 'reports' uses driver ")
    assert str(error).endswith(package)
    no_secret_leaks.extend([error, plugin.config])


@pytest.mark.parametrize(
    ("config_class", "driver", "message"),
    [
        (
            SQLAlchemySyncConfig,
            "asyncpg",
            "bind 'default': driver 'asyncpg' is async but SQLAlchemySyncConfig needs a sync driver such as sqlite, "
            "postgresql+psycopg or mysql+pymysql (postgresql+asyncpg://app:***@db.example.com:5432/app); change the "
            "URL's driver or use SQLAlchemyAsyncConfig",
        ),
        (
            SQLAlchemyAsyncConfig,
            "psycopg",
            "bind 'default': driver 'psycopg' is sync but SQLAlchemyAsyncConfig needs an async driver such as "
            "sqlite+aiosqlite, postgresql+asyncpg or mysql+asyncmy "
            "(postgresql+psycopg://app:***@db.example.com:5432/app); change the URL's driver or use "
            "SQLAlchemySyncConfig",
        ),
    ],
)
async def test_driver_of_the_wrong_kind(
    config_class: type[SQLAlchemyAsyncConfig | SQLAlchemySyncConfig], driver: str, message: str,
    no_secret_leaks: list[Any],
) -> None:  # fmt: skip
    plugin = SQLAlchemyPlugin(config=config_class(binds={"default": pg_url(driver)}))
    with pytest.raises(DriverMismatchError) as raised:
        async with plugin.lifespan():
            pass
    assert str(raised.value) == message
    no_secret_leaks.append(raised.value)


def test_engine_of_the_wrong_kind_is_refused_at_config_time() -> None:
    with pytest.raises(ConfigurationError) as raised:
        SQLAlchemyAsyncConfig(binds={"default": create_engine("sqlite://")})
    assert str(raised.value) == (
        "bind 'default' was given a Engine but SQLAlchemyAsyncConfig needs an AsyncEngine; use "
        "SQLAlchemySyncConfig or the other engine kind"
    )
    with pytest.raises(ConfigurationError, match="needs a Engine; use SQLAlchemyAsyncConfig"):
        SQLAlchemySyncConfig(binds={"default": create_async_engine("sqlite+aiosqlite://")})


def test_unknown_driver_name(no_secret_leaks: list[Any]) -> None:
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": pg_url("nosuchdriver")}))
    with pytest.raises(ConfigurationError) as raised:
        plugin.engines.start()
    assert str(raised.value) == (
        "bind 'default': SQLAlchemy has no driver 'postgresql+nosuchdriver' "
        "(postgresql+nosuchdriver://app:***@db.example.com:5432/app); check the URL's dialect+driver part, "
        "e.g. postgresql+asyncpg or sqlite+aiosqlite"
    )
    no_secret_leaks.append(raised.value)


@pytest.mark.parametrize(
    ("binds", "options", "message"),
    [
        ({}, {}, 'binds= needs at least one bind, e.g. binds={"default": "sqlite+aiosqlite:///app.db"}'),
        (
            {"main": "sqlite+aiosqlite://"},
            {},
            "default_bind='default' is not one of the configured binds ('main'); add it to binds= or set "
            "default_bind= to one of them",
        ),
        (
            {"default": "sqlite+aiosqlite://", "my-logs": "sqlite+aiosqlite://"},
            {},
            "bind key 'my-logs' is not a Python identifier; it names dependencies such as 'my-logs_db_session', "
            "so use letters, digits and underscores",
        ),
        (
            {"default": f"not a url {PASSWORD}"},
            {},
            "bind 'default': the URL could not be parsed; write it as dialect+driver://user:password@host:port/database",
        ),
        (
            {"default": 42},
            {},
            "bind 'default' is a int; give a URL string, a sqlalchemy URL, a BindConfig or an engine",
        ),
        (
            {"default": "sqlite+aiosqlite://"},
            {"session_key": "db-session"},
            "session_key='db-session' is not a Python identifier; dependency keys must be",
        ),
        (
            {"default": "sqlite+aiosqlite://"},
            {"create_all": True},
            "create_all=True needs base=: without it every mapped class in the process (other libraries' models "
            "included) would get its table created; pass your declarative base(s), e.g. base=Base",
        ),
    ],
)
def test_structural_config_errors(
    binds: dict[str, Any], options: dict[str, Any], message: str, no_secret_leaks: list[Any]
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        SQLAlchemyAsyncConfig(binds=binds, **options)
    assert str(raised.value) == message
    no_secret_leaks.append(raised.value)


def test_two_phase_needs_a_server_database() -> None:
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite://"}, two_phase=True))
    with pytest.raises(ConfigurationError, match=r"^bind 'default': two_phase=True needs PostgreSQL or MariaDB/MySQL"):
        plugin.engines.start()


def test_policy_overlap_is_refused() -> None:
    with pytest.raises(ConfigurationError) as raised:
        TransactionPolicy(commit_statuses={409, 422}, rollback_statuses={422})
    assert str(raised.value) == (
        "status 422 is in both commit_statuses and rollback_statuses; keep each status in one of them"
    )
    with pytest.raises(ConfigurationError, match=r"^\[99\] are not HTTP status codes"):
        TransactionPolicy(commit_statuses={99})
    with pytest.raises(ConfigurationError, match="transaction mode 'sometimes' is unknown"):
        TransactionPolicy(mode="sometimes")  # type: ignore[arg-type]


def test_reprs_mask_passwords(no_secret_leaks: list[Any]) -> None:
    bind = BindConfig(url=pg_url(), engine_options={"connect_args": {"password": PASSWORD, "timeout": 5}})
    config = SQLAlchemyAsyncConfig(binds={"default": bind, "logs": pg_url()})
    assert repr(bind) == (
        "BindConfig(url='postgresql+asyncpg://app:***@db.example.com:5432/app', "
        "engine_options={'connect_args': {'password': '***', 'timeout': 5}}, session_options={})"
    )
    no_secret_leaks.extend([bind, config, config.binds, SQLAlchemyPlugin(config=config).config])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"expire_on_comit": False},
            "BindConfig(session_options=...): 'expire_on_comit' is not an option of SQLAlchemy's Session (did you "
            "mean 'expire_on_commit'?); use one of autoflush, close_resets_only, enable_baked_queries, "
            "execution_options, expire_on_commit, info, join_transaction_mode, query_cls",
        ),
        (
            {"binds": {}},
            "BindConfig(session_options=...): 'binds' is the plugin's: its sessions route each statement to its "
            "bind; give the database as the bind's url= or engine= instead",
        ),
        (
            {"sync_session_class": Session},
            "BindConfig(session_options=...): 'sync_session_class' is the plugin's: an async session's sync "
            "session is its routing session; remove it",
        ),
        (
            {"twophase": True},
            "BindConfig(session_options=...): 'twophase' is the plugin's: set two_phase= on the config, for every "
            "bind (checked against the binds' databases at start)",
        ),
        (
            {"autobegin": False},
            "BindConfig(session_options=...): 'autobegin' is the plugin's: a request's transaction begins with its "
            "first statement and the plugin settles it; remove it",
        ),
        (
            {"autocommit": True},
            "BindConfig(session_options=...): SQLAlchemy's Session refused 'autocommit': autocommit=True is no "
            "longer supported",
        ),
        (
            {"join_transaction_mode": "bogus"},
            "BindConfig(session_options=...): SQLAlchemy's Session refused 'join_transaction_mode': invalid "
            'selection for join_transaction_mode: "bogus"',
        ),
        (
            {"autoflush": False, "info": 5},
            "BindConfig(session_options=...): SQLAlchemy's Session refused 'autoflush', 'info': 'int' object is not "
            "iterable",
        ),
    ],
)
def test_session_options_are_checked_when_the_bind_is_configured(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        BindConfig(url="sqlite+aiosqlite://", session_options=options)
    assert str(raised.value) == message


async def test_session_options_reach_the_sessions_of_their_bind() -> None:
    class NoModels(DeclarativeBase):
        pass

    bind = BindConfig(url="sqlite+aiosqlite://", session_options={"autoflush": False, "info": {"team": "ops"}})
    binds = {"default": bind, "other": "sqlite+aiosqlite://"}
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds=binds, base=NoModels))
    app = Litestar(plugins=[plugin])
    async with app.lifespan(), plugin.transaction() as session:
        assert (session.autoflush, session.info) == (False, {"team": "ops"})
    async with app.lifespan(), plugin.transaction("other") as other:
        assert (other.autoflush, other.info) == (True, {})
