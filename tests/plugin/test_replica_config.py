"""Configuring read replicas: what is accepted, the one-line errors, and no password in any repr."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from plugin import BindConfig, ConfigurationError, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig

PRIMARY = "postgresql+asyncpg://app:primary-pw@db1/app"
REPLICA = "postgresql+asyncpg://app:replica-pw@db2/app"


def test_replicas_are_parsed_and_masked_in_the_repr() -> None:
    bind = BindConfig(url=PRIMARY, replicas=[REPLICA, create_async_engine("postgresql+asyncpg://ro:engine-pw@db3/app")])
    config = SQLAlchemyAsyncConfig(binds={"default": bind}, sticky_secret="s" * 32)

    assert [str(url.host) for url in bind.replica_urls] == ["db2", "db3"]
    assert "replicas=['postgresql+asyncpg://app:***@db2/app', 'postgresql+asyncpg://ro:***@db3/app']" in repr(bind)
    assert not any(secret in repr(config) for secret in ("primary-pw", "replica-pw", "engine-pw", "s" * 32))
    assert {"primary-pw", "replica-pw", "engine-pw"} <= set(bind.secrets())
    assert config.has_replicas
    assert not SQLAlchemyAsyncConfig(binds={"default": PRIMARY}).has_replicas


CASES = [
    ({"replicas": REPLICA}, "BindConfig(replicas=...) takes a list of URLs or engines, e.g. replicas=[url1, url2]"),
    ({"replicas": [42]}, "BindConfig(replicas=...): replica 1 is a int; give a URL string, a sqlalchemy URL or"),
    ({"replicas": ["postgresql+asyncpg://a:b@c@d/app"]}, "BindConfig(replicas=...): replica 1: the URL's password"),
    ({"replicas": [REPLICA], "replica_selection": "fast"}, "BindConfig(replica_selection='fast'): use 'round_robin'"),
    ({"replicas": [REPLICA], "replica_cooldown": -1}, "BindConfig(replica_cooldown=-1) must be a number of seconds"),
    ({"replicas": [REPLICA], "sticky_seconds": 0}, "BindConfig(sticky_seconds=0) must be a positive number of"),
    # inf/nan passed the checks, then every write's response failed building the cookie's Max-Age (a 500
    # after the commit), and a nan cool-down never cooled down a failing replica, nor logged its WARNING.
    ({"replicas": [REPLICA], "sticky_seconds": float("inf")}, "BindConfig(sticky_seconds=inf) must be a positive"),
    ({"replicas": [REPLICA], "sticky_seconds": float("nan")}, "BindConfig(sticky_seconds=nan) must be a positive"),
    ({"replicas": [REPLICA], "replica_cooldown": float("nan")}, "BindConfig(replica_cooldown=nan) must be a number"),
    ({"sticky_seconds": 5}, "BindConfig(sticky_seconds=...) keeps a client that wrote on the primary, which only"),
]


@pytest.mark.parametrize(("options", "message"), CASES)
def test_bind_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        BindConfig(url=PRIMARY, **options)
    assert str(raised.value).startswith(message)
    assert "replica-pw" not in str(raised.value)


@pytest.mark.parametrize("secret", [None, "too-short"])
def test_sticky_seconds_need_a_secret(secret: str | None) -> None:
    bind = BindConfig(url=PRIMARY, replicas=[REPLICA], sticky_seconds=5)
    with pytest.raises(ConfigurationError) as raised:
        SQLAlchemyAsyncConfig(binds={"default": bind}, sticky_secret=secret)
    assert str(raised.value) == (
        "bind 'default' has sticky_seconds, whose cookie is signed: set sticky_secret= to at least 16 random bytes, "
        "the same on every worker (e.g. sticky_secret=os.environ['DB_STICKY_SECRET'])"
    )


def test_a_replica_engine_of_the_wrong_kind_is_refused() -> None:
    bind = BindConfig(url="sqlite://", replicas=[create_async_engine("sqlite+aiosqlite://")])
    with pytest.raises(ConfigurationError) as raised:
        SQLAlchemySyncConfig(binds={"default": bind})
    assert str(raised.value) == "bind 'default': replica 1 is a AsyncEngine but SQLAlchemySyncConfig needs a Engine"


def test_replica_sessions_need_replicas() -> None:
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": "sqlite+aiosqlite://"}))
    with pytest.raises(ConfigurationError) as raised:
        plugin.session(replica=True)
    assert str(raised.value) == (
        "replica=True, but no bind has replicas; configure BindConfig(replicas=[...]) or drop replica=True"
    )
    assert plugin.replicas is None  # no replica machinery at all on such an app


def test_apps_without_replicas_keep_the_plain_request_path() -> None:
    from litestar import Litestar

    from plugin.middleware import TransactionMiddleware
    from plugin.replica_middleware import ReplicaMiddleware
    from plugin.routes import TransactionRoutes
    from plugin.sessions import SessionFactory

    def middleware_of(plugin: SQLAlchemyPlugin[Any]) -> type:
        app = Litestar(plugins=[plugin])
        (routes,) = [p for p in app.plugins if isinstance(p, TransactionRoutes)]
        return routes.middleware.middleware  # type: ignore[no-any-return]

    plain = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": PRIMARY}))
    with_replicas = SQLAlchemyPlugin(
        config=SQLAlchemyAsyncConfig(binds={"default": BindConfig(PRIMARY, replicas=[REPLICA])})
    )

    assert type(plain.sessions) is SessionFactory
    assert middleware_of(plain) is TransactionMiddleware
    assert middleware_of(with_replicas) is ReplicaMiddleware


def test_the_sticky_cookie_round_trips_and_refuses_forgeries() -> None:
    from plugin.sticky import StickyCookie

    cookie = StickyCookie("db_primary_until", "k" * 16)
    name, value = cookie.header({"default": 1005.5, "logs": 1002.0}, now=1000.0, secure=True)
    pair = value.decode().split(";")[0]
    headers = [(b"cookie", f"theme=dark; {pair}".encode())]

    assert name == b"set-cookie"
    assert value.decode().endswith("; Max-Age=6; Path=/; HttpOnly; SameSite=Lax; Secure")
    assert cookie.read(headers, now=1001.0) == {"default": 1005.5, "logs": 1002.0}
    assert cookie.read(headers, now=1003.0) == {"default": 1005.5}  # logs' time has passed
    assert StickyCookie("db_primary_until", "another-secret!!").read(headers, now=1001.0) == {}
    forged = [(b"cookie", pair.replace("1005.500", "9999.000").encode())]
    assert cookie.read(forged, now=1001.0) == {}
    assert cookie.read([(b"cookie", b"db_primary_until=garbage")], now=1001.0) == {}


@pytest.mark.anyio
async def test_replicas_stay_out_of_a_sandbox(tmp_path: Any) -> None:
    from plugin import AsyncRoutingSession
    from plugin.replica_sessions import AsyncReplicaRoutingSession

    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    from sqlalchemy import MetaData

    bind = BindConfig(url, replicas=[url])
    # base=: validate no model at startup (other test modules' models live in this process too)
    plugin = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(binds={"default": bind}, base=MetaData()))
    make = plugin.sessions.maker(None)
    async with plugin.lifespan():
        outside = make()
        async with plugin.sandbox():
            inside = make()
            async with plugin.session(replica=True) as asked:
                assert not isinstance(asked, AsyncReplicaRoutingSession)  # the sandbox wins over replica=True

    assert isinstance(outside, AsyncReplicaRoutingSession)
    assert isinstance(inside, AsyncRoutingSession)
    assert not isinstance(inside, AsyncReplicaRoutingSession)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            SQLAlchemySyncConfig(binds={"default": BindConfig(url="sqlite://", replicas=["sqlite://", REPLICA])}),
            "bind 'default', replica 2: driver 'asyncpg' is async but SQLAlchemySyncConfig needs a sync driver",
        ),
        (
            SQLAlchemyAsyncConfig(binds={"default": BindConfig(url=PRIMARY, replicas=["postgresql+nodriver://db2/a"])}),
            "bind 'default', replica 1: SQLAlchemy has no driver 'postgresql+nodriver'",
        ),
    ],
)
def test_a_replica_that_cannot_be_made_is_named_in_the_error(config: Any, message: str) -> None:
    # The primary's URL is fine: an error that only said "bind 'default'" sent people to the wrong URL.
    with pytest.raises(ConfigurationError) as raised:
        SQLAlchemyPlugin(config=config).engines.start()
    assert str(raised.value).startswith(message)
    assert "replica-pw" not in str(raised.value)
