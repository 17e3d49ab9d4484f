"""plugin.secrets: one rule for what is secret, applied to URLs, options and DSN strings."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from plugin import BindConfig, ConfigurationError
from plugin.secrets import mask_dsn, mask_url, masked_options, secret_values


def test_mask_url_hides_the_password_and_secret_query_parameters() -> None:
    url = make_url("postgresql+asyncpg://app:pw1@db/app?password=pw2&sslpassword=pw3&application_name=api&ssl=on")
    assert mask_url(url) == (
        "postgresql+asyncpg://app:***@db/app?application_name=api&password=***&ssl=on&sslpassword=***"
    )


@pytest.mark.parametrize(("dsn", "masked"), [
    ("postgresql://app:pw1@db:5432/app", "postgresql://app:***@db:5432/app"),
    ("postgresql://app:p@ss:w0rd@db/app", "postgresql://app:***@db/app"),
    ("host=db password=pw1 dbname=app", "host=db password=*** dbname=app"),
    ("host=db password='p w' user=app", "host=db password=*** user=app"),
    ("mysql://app@db/app?auth_token=t1&charset=utf8", "mysql://app@db/app?auth_token=***&charset=utf8"),
])  # fmt: skip
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_masked_options_walk_nested_mappings_lists_and_dsns() -> None:
    options = {
        "pool_size": 5,
        "connect_args": {"password": "pw1", "server_settings": {"api_key": "k1", "search_path": "app"},
                         "dsn": "postgresql://u:pw2@h/d", "hosts": ["a", "postgresql://u:pw3@h/d"]},
    }  # fmt: skip
    assert masked_options(options) == {
        "pool_size": 5,
        "connect_args": {"password": "***", "server_settings": {"api_key": "***", "search_path": "app"},
                         "dsn": "postgresql://u:***@h/d", "hosts": ["a", "postgresql://u:***@h/d"]},
    }  # fmt: skip
    assert set(secret_values(None, options)) == {"pw1", "k1", "pw2", "pw3"}


def test_secret_values_include_decoded_forms() -> None:
    url = make_url("postgresql+asyncpg://app:a%40b@db/app?password=c%2Fd")
    assert set(secret_values(url, {})) >= {"a@b", "c/d"}


def test_a_bind_config_made_directly_points_at_itself() -> None:
    with pytest.raises(
        ConfigurationError, match=r"^BindConfig\(url=\.\.\.\): the URL's password contains an unencoded"
    ):
        BindConfig(url="postgresql+asyncpg://app:sec@ret@db/app")
    bind = BindConfig(
        url="postgresql+asyncpg://app:pw1@db/app?token=t1", engine_options={"connect_args": {"pwd": "x1"}}
    )
    assert repr(bind) == (
        "BindConfig(url='postgresql+asyncpg://app:***@db/app?token=***', "
        "engine_options={'connect_args': {'pwd': '***'}}, session_options={})"
    )
