"""The app ``bench/http.py`` serves: four routes, identical handler code for the three variants.

Configured from the environment (the benchmark sets it): ``HTTP_VARIANT`` is ``plugin`` (this project),
``advanced-alchemy`` or ``hand-written``; ``HTTP_DEFAULT_URL`` and ``HTTP_LOGS_URL`` are the two
PostgreSQL databases. Every variant gets the same pools (``POOL``) and ``expire_on_commit=False``.

- ``GET /nothing``: no dependency at all (most routes of a real app);
- ``GET /read``: one row by primary key through ``db_session``;
- ``POST /insert``: one new row through ``db_session``;
- ``POST /two-binds``: reads a row on the default bind and inserts an audit row on the ``logs`` bind
  (``logs_db_session``), both committed.
"""

from __future__ import annotations

import os
from itertools import count
from typing import TYPE_CHECKING, Any

from litestar import Litestar, get, post
from litestar.di import NamedDependency, Provide
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROWS = 1000
"""Rows in ``items`` before the run; reads cycle through them."""
POOL = {"pool_size": 5, "max_overflow": 5}
"""The same pool for every variant and bind; small, because the PostgreSQL server is shared."""

if TYPE_CHECKING:
    from collections.abc import Callable

_counter = count()


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


class LogsBase(DeclarativeBase):
    pass


class Audit(LogsBase):
    __tablename__ = "audits"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int]  # no foreign key: items live in the other database


@get("/nothing", sync_to_thread=False)
def nothing() -> dict[str, str]:
    return {"status": "ok"}


@get("/read")
async def read(db_session: NamedDependency[AsyncSession]) -> str:
    item = await db_session.get(Item, next(_counter) % ROWS + 1)
    assert item is not None
    return item.name


@post("/insert")
async def insert(db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Item(name=f"new-{next(_counter)}"))


@post("/two-binds")
async def two_binds(db_session: NamedDependency[AsyncSession], logs_db_session: NamedDependency[AsyncSession]) -> None:
    item = await db_session.get(Item, next(_counter) % ROWS + 1)
    assert item is not None
    logs_db_session.add(Audit(item_id=item.id))


HANDLERS = [nothing, read, insert, two_binds]
QUIET: dict[str, Any] = {"logging_config": None, "openapi_config": None}


def _ours(default_url: str, logs_url: str) -> Litestar:
    from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin

    binds = {
        key: BindConfig(url=url, engine_options=POOL, session_options={"expire_on_commit": False})
        for key, url in (("default", default_url), ("logs", logs_url))
    }
    config = SQLAlchemyAsyncConfig(binds=binds, base=(Base, LogsBase))
    return Litestar(route_handlers=HANDLERS, plugins=[SQLAlchemyPlugin(config=config)], **QUIET)


def _advanced_alchemy(default_url: str, logs_url: str) -> Litestar:
    from advanced_alchemy.extensions.litestar import EngineConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin

    configs = [
        SQLAlchemyAsyncConfig(
            connection_string=url,
            metadata=base.metadata,
            engine_config=EngineConfig(**POOL),
            before_send_handler="autocommit",
            session_dependency_key=f"{prefix}db_session",
            engine_dependency_key=f"{prefix}db_engine",
            session_scope_key=f"_{prefix}sqlalchemy_session",
            engine_app_state_key=f"{prefix}db_engine",
            session_maker_app_state_key=f"{prefix}session_maker_class",
            bind_key=prefix.rstrip("_") or None,
        )
        for url, base, prefix in ((default_url, Base, ""), (logs_url, LogsBase, "logs_"))
    ]
    return Litestar(route_handlers=HANDLERS, plugins=[SQLAlchemyPlugin(config=configs)], **QUIET)


def _hand_written_provider(maker: async_sessionmaker[AsyncSession]) -> Any:
    async def provide_session() -> Any:
        async with maker() as session:
            yield session
            await session.commit()

    return provide_session


def hand_written_app(
    default_url: str, logs_url: str, provider: Callable[[async_sessionmaker[AsyncSession]], Any], **options: Any
) -> Litestar:
    """An app whose ``db_session`` and ``logs_db_session`` are ``provider(sessionmaker)`` per bind (``options``
    go to ``Litestar``); ``bench/http_gc.py`` varies the provider."""
    engines = [create_async_engine(url, **POOL) for url in (default_url, logs_url)]
    makers = [async_sessionmaker(engine, expire_on_commit=False) for engine in engines]

    async def dispose() -> None:
        for engine in engines:
            await engine.dispose()

    dependencies = {"db_session": Provide(provider(makers[0])), "logs_db_session": Provide(provider(makers[1]))}
    return Litestar(route_handlers=HANDLERS, dependencies=dependencies, on_shutdown=[dispose], **QUIET, **options)


def _hand_written(default_url: str, logs_url: str) -> Litestar:
    return hand_written_app(default_url, logs_url, _hand_written_provider)


VARIANTS = {"plugin": _ours, "advanced-alchemy": _advanced_alchemy, "hand-written": _hand_written}


def create_app() -> Litestar:
    """The variant named by ``HTTP_VARIANT``, on the databases named by the environment."""
    return VARIANTS[os.environ["HTTP_VARIANT"]](os.environ["HTTP_DEFAULT_URL"], os.environ["HTTP_LOGS_URL"])
