"""The app the load suite serves under uvicorn: two PostgreSQL binds and a handler for every outcome.

Configured from the environment (the suite sets it): ``LOAD_PLUGIN`` is ``plugin`` (this project) or
``advanced-alchemy``; ``LOAD_DEFAULT_URL`` and ``LOAD_LOGS_URL`` are the two databases. The handler code
is the same for both plugins: orders go through ``db_session``, audit rows through ``logs_db_session``.
``LOAD_TWO_PHASE=1`` turns on this plugin's ``two_phase`` (advanced-alchemy has no equivalent). This
plugin's WARNING and ERROR log lines go to stderr, one line each (``LEVEL logger: message``), where the
suite counts them.

``POST /orders/{rid}/{kind}`` writes one order (default bind) and one audit row (logs bind) for request
``rid``, then, by ``kind``: ``ok`` answers 201; ``raise`` flushes and raises (500); ``reject`` returns a
400 without raising; ``duplicate`` reuses a taken unique ``ref``, so the commit fails; ``slow`` waits
200 ms first (clients that give up use it too). ``GET /stats`` reports checked-out connections and RSS.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from litestar import Litestar, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TAKEN = "taken"
"""The ``ref`` of the order seeded before the run: ``duplicate`` requests collide with it at commit."""


class OrdersBase(DeclarativeBase):
    pass


class Order(OrdersBase):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    rid: Mapped[str] = mapped_column(String(40), unique=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)


class LogsBase(DeclarativeBase):
    pass


class AuditLog(LogsBase):
    __tablename__ = "audit_log"
    __bind_key__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    rid: Mapped[str] = mapped_column(String(40))


@post("/orders/{rid:str}/{kind:str}")
async def order(
    rid: FromPath[str],
    kind: FromPath[str],
    db_session: NamedDependency[AsyncSession],
    logs_db_session: NamedDependency[AsyncSession],
) -> Response[dict[str, str]]:
    if kind == "slow":
        await asyncio.sleep(0.2)
    db_session.add(Order(rid=rid, ref=TAKEN if kind == "duplicate" else rid))
    logs_db_session.add(AuditLog(rid=rid))
    if kind == "raise":
        await db_session.flush()
        raise RuntimeError(f"request {rid} failed on purpose")
    if kind == "reject":
        return Response({"rejected": rid}, status_code=400)
    return Response({"rid": rid}, status_code=201)


ENGINES: dict[str, Any] = {}


@get("/stats", sync_to_thread=False)
def stats() -> dict[str, Any]:
    with open(f"/proc/{os.getpid()}/statm") as statm:  # noqa: PTH123  (Linux; the suite runs here)
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {"checked_out": {key: engine().pool.checkedout() for key, engine in ENGINES.items()}, "rss": rss}


def _ours(default_url: str, logs_url: str) -> Litestar:
    from plugin import SQLAlchemyAsyncConfig, SQLAlchemyPlugin

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("plugin").addHandler(handler)
    logging.getLogger("plugin").setLevel(logging.WARNING)

    plugin = SQLAlchemyPlugin(
        config=SQLAlchemyAsyncConfig(
            binds={"default": default_url, "logs": logs_url},
            base=(OrdersBase, LogsBase),
            two_phase=os.environ.get("LOAD_TWO_PHASE") == "1",
        )
    )
    ENGINES.update({key: (lambda key=key: plugin.engines.sync_engine(key)) for key in ("default", "logs")})
    return Litestar(route_handlers=[order, stats], plugins=[plugin], logging_config=None, openapi_config=None)


def _advanced_alchemy(default_url: str, logs_url: str) -> Litestar:
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemyPlugin

    configs = [
        SQLAlchemyAsyncConfig(
            connection_string=url,
            metadata=base.metadata,
            before_send_handler="autocommit",
            session_dependency_key=f"{prefix}db_session",
            engine_dependency_key=f"{prefix}db_engine",
            session_scope_key=f"_{prefix}sqlalchemy_session",
            engine_app_state_key=f"{prefix}db_engine",
            session_maker_app_state_key=f"{prefix}session_maker_class",
            bind_key=prefix.rstrip("_") or None,
        )
        for url, base, prefix in ((default_url, OrdersBase, ""), (logs_url, LogsBase, "logs_"))
    ]
    ENGINES.update(
        {
            key: (lambda config=config: config.get_engine().sync_engine)
            for key, config in zip(("default", "logs"), configs, strict=True)
        }
    )
    return Litestar(
        route_handlers=[order, stats],
        plugins=[SQLAlchemyPlugin(config=configs)],
        logging_config=None,
        openapi_config=None,
    )


def create_app() -> Litestar:
    default_url, logs_url = os.environ["LOAD_DEFAULT_URL"], os.environ["LOAD_LOGS_URL"]
    if os.environ.get("LOAD_PLUGIN", "plugin") == "advanced-alchemy":
        return _advanced_alchemy(default_url, logs_url)
    return _ours(default_url, logs_url)
