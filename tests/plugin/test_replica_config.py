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
