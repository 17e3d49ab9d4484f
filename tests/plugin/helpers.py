"""Small helpers shared by the plugin tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

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
