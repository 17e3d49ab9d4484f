"""Handlers of a user's module that defines its own ``Session`` and ``Engine`` classes.

The SQLAlchemy types it needs are imported only for type checkers; the plugin lends those names
(``AsyncSession``, ``AsyncEngine``) but must never replace this module's ``Session`` or ``Engine``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession


@dataclass
class Session:
    """A login session, nothing to do with SQLAlchemy."""

    user: str
    token: str


@dataclass
class Engine:
    """A car engine."""

    model: str
    horsepower: int


@post("/sessions")
async def open_session(data: JSONBody[Session], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    return {"body": type(data).__qualname__, "user": data.user, "db_session": type(db_session).__name__}


@post("/engines")
async def add_engine(data: JSONBody[Engine], db_engine: NamedDependency[AsyncEngine]) -> dict[str, Any]:
    return {"body": type(data).__qualname__, "horsepower": data.horsepower, "db_engine": type(db_engine).__name__}


@post("/plain-sessions", sync_to_thread=False)
def open_plain_session(data: JSONBody[Session]) -> str:
    """For sync apps, where the dependencies are SQLAlchemy's sync ``Session`` and ``Engine``."""
    return f"{type(data).__module__}.{type(data).__qualname__} for {data.user}"


class GarageController(Controller):
    path = "/garage"

    @post("/")
    async def park(self, data: JSONBody[Engine]) -> str:
        return f"{type(data).__qualname__} {data.model}"
