"""Apps whose bind carries a password in one of the forms users write (``SECRET_FORM``), for
tests/cli/test_secrets.py. ``SECRET_PORT`` is a local port where nothing listens."""

from __future__ import annotations

import os

from litestar import Litestar

from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.cli.apps import ShopBase

PASSWORD = "Xq7@Zr9:Kt4/Wm2"
"""Every part between the URL's special characters is distinctive, so a leaked fragment is found."""
ENCODED = "Xq7%40Zr9%3AKt4%2FWm2"
PARTS = ("Xq7", "Zr9", "Kt4", "Wm2")


def bind(form: str, port: str) -> object:
    host = f"127.0.0.1:{port}"
    if form == "bad_session_option":  # refused as the BindConfig is made: not in the table of forms below
        return BindConfig(url=f"postgresql+asyncpg://app:{ENCODED}@{host}/app", session_options={"expire_on_comit": 0})
    conninfo = f"host=127.0.0.1 port={port} dbname=app user=app password='{PASSWORD}'"
    forms: dict[str, object] = {
        "url": f"postgresql+asyncpg://app:{ENCODED}@{host}/app",
        "query": f"postgresql+asyncpg://app@{host}/app?password={ENCODED}&ssl=disable",
        "connect_args": BindConfig(
            url=f"postgresql+asyncpg://app@{host}/app", engine_options={"connect_args": {"password": PASSWORD}}
        ),
        "dsn": BindConfig(
            url="postgresql+asyncpg://",
            engine_options={"connect_args": {"dsn": f"postgresql://app:{ENCODED}@{host}/app"}},
        ),
        "keyword_dsn": BindConfig(
            url="postgresql+psycopg_async://", engine_options={"connect_args": {"conninfo": conninfo}}
        ),
        "bad_option": BindConfig(url=f"postgresql+asyncpg://app:{ENCODED}@{host}/app", engine_options={"pool_sise": 5}),
        # These two are strings the config parses (and refuses) itself:
        "unencoded_at": f"postgresql+asyncpg://app:{PASSWORD.replace('/', '')}@{host}/app",
        "bad_port": f"postgresql+asyncpg://app:{ENCODED}@127.0.0.1:Kt4port/app",
    }
    return forms[form]


def create_app() -> Litestar:
    target = bind(os.environ["SECRET_FORM"], os.environ["SECRET_PORT"])
    config = SQLAlchemyAsyncConfig(binds={"default": target}, base=ShopBase)  # type: ignore[dict-item]
    return Litestar(plugins=[SQLAlchemyPlugin(config=config)])
