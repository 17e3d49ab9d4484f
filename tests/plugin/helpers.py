"""Small helpers shared by the plugin tests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from plugin.middleware import InFlight, give_way

if TYPE_CHECKING:
    from litestar import Litestar


async def startup_error(app: Litestar) -> BaseException:
    """The error the app's startup raises, unwrapped from Litestar's single-member exception groups."""
    try:
        async with app.lifespan():  # the app's startup, as a server runs it
            pass
    except BaseException as exc:
        while (inner := getattr(exc, "exceptions", None)) and len(inner) == 1:
            exc = inner[0]
        return exc
    pytest.fail("the app started although its configuration is broken")


async def cancelled_while_giving_way(in_flight: InFlight) -> None:
    """``give_way`` with the request's task cancelled as it begins (what a timeout landing there does);
    tests put it in ``plugin.middleware.give_way``'s place."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    in_flight.requests += 1  # as if another request were in flight, so that it does give way
    try:
        await give_way(in_flight)
    finally:
        in_flight.requests -= 1
