"""pytest fixtures that run each test inside a sandbox on every bind (Django's ``TestCase``, for Litestar).

Installed with the package as a pytest plugin (the ``pytest11`` entry point); it only defines fixtures,
so nothing happens until a test asks for one. Tell it which app to test with a fixture named
``alchemy_app``; then:

- ``alchemy_client`` (async tests, any config): a ``litestar.testing.AsyncTestClient`` on the app, started
  (lifespan) and inside ``plugin.sandbox()``. Requests it makes commit into savepoints.
- ``alchemy_session`` (async tests): a session joined to the same sandbox, so the test sees what the
  requests wrote (an ``AsyncSession``; a ``Session`` for sync configs).
- ``alchemy_sync_client`` / ``alchemy_sync_session``: the same for plain (sync) tests with a
  ``litestar.testing.TestClient``; the session needs a sync config.
- ``alchemy_plugin``: the app's :class:`~plugin.plugin.SQLAlchemyPlugin`.
- ``alchemy_started_app`` (module scope, opt-in): starts the app once for a module of async tests, so
  that ``alchemy_client`` only opens a sandbox per test (its connections come warm from the pool).
  Needs a module-scoped ``alchemy_app``; request it with
  ``pytestmark = pytest.mark.usefixtures("alchemy_started_app")``.

At the end of each test everything is rolled back on every bind; the tables must exist beforehand
(``create_all=True`` in the config, or migrations run once per session).

One event loop: Litestar's test clients run the app on a loop of their own in a helper thread, while an
async test awaits on the test's loop; an async driver's connection (asyncpg, asyncmy) works on the loop
that opened it only. ``alchemy_client`` therefore runs the app's lifespan and requests on the test's own
loop (through SQLAlchemy's greenlet bridge: the client's transport calls the app synchronously), so the
app, the sandbox and the test's session share one loop and one held connection per bind. It serves HTTP;
for websockets use ``alchemy_sync_client``. The sync client runs everything on its helper loop, the
sandbox included.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from litestar import Litestar
    from litestar.testing import AsyncTestClient, TestClient
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from plugin.plugin import SQLAlchemyPlugin

__all__ = (
    "alchemy_app",
    "alchemy_client",
    "alchemy_plugin",
    "alchemy_session",
    "alchemy_started_app",
    "alchemy_sync_client",
    "alchemy_sync_session",
)


@pytest.fixture
def alchemy_app() -> Litestar:
    """The app under test: override this fixture (in your ``conftest.py``) to return your Litestar app."""
    pytest.fail("define a fixture named `alchemy_app` that returns your Litestar app (e.g. in conftest.py)")


@pytest.fixture
def alchemy_plugin(alchemy_app: Litestar) -> SQLAlchemyPlugin[Any]:
    """The app's ``SQLAlchemyPlugin``."""
    from plugin.plugin import SQLAlchemyPlugin

    plugin = next((p for p in alchemy_app.plugins if isinstance(p, SQLAlchemyPlugin)), None)
    if plugin is None:
        pytest.fail("the app from `alchemy_app` does not register SQLAlchemyPlugin")
    return plugin


@pytest.fixture(scope="module")
async def alchemy_started_app(alchemy_app: Litestar) -> AsyncIterator[Litestar]:
    """The app started once for the whole module (async tests, module-scoped ``alchemy_app``)."""
    async with alchemy_app.lifespan():
        yield alchemy_app


@pytest.fixture
async def alchemy_client(
    alchemy_app: Litestar, alchemy_plugin: SQLAlchemyPlugin[Any]
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An ``AsyncTestClient`` on the started app, inside a sandbox on every bind (async tests)."""
    started = alchemy_plugin.engines.state == "open"  # by alchemy_started_app
    client = _same_loop_client(alchemy_app, started=started)
    async with client, alchemy_plugin.sandbox():
        yield client


@pytest.fixture
async def alchemy_session(
    alchemy_client: AsyncTestClient[Litestar],
    alchemy_plugin: SQLAlchemyPlugin[Any],
) -> AsyncIterator[AsyncSession | Session]:
    """A routed session in the test's sandbox: sees what ``alchemy_client``'s requests wrote."""
    manager: Any = alchemy_plugin.session()  # async or sync, by the config
    if alchemy_plugin.config.is_async:
        async with manager as session:
            yield session
    else:
        with manager as sync_session:
            yield sync_session


@pytest.fixture
def alchemy_sync_client(alchemy_app: Litestar, alchemy_plugin: SQLAlchemyPlugin[Any]) -> Iterator[TestClient[Litestar]]:
    """A ``TestClient`` on the started app, inside a sandbox on every bind (plain tests)."""
    from litestar.testing import TestClient

    with TestClient(alchemy_app) as client, _sandbox_on(client, alchemy_plugin):
        yield client


@pytest.fixture
def alchemy_sync_session(
    alchemy_sync_client: TestClient[Litestar],
    alchemy_plugin: SQLAlchemyPlugin[Any],
) -> Iterator[Session]:
    """A routed ``Session`` in the test's sandbox (sync configs): sees what the requests wrote."""
    if alchemy_plugin.config.is_async:
        pytest.fail(
            "alchemy_sync_session needs a sync config; with an async config use alchemy_session in an async test"
        )
    manager: Any = alchemy_plugin.session()
    with manager as session:
        yield session


@contextmanager
def _sandbox_on(client: TestClient[Litestar], plugin: SQLAlchemyPlugin[Any]) -> Iterator[None]:
    """Enter the sandbox where the app runs: the sync client's helper loop for async configs."""
    sandbox = plugin.sandbox()
    if not plugin.config.is_async:
        with sandbox:
            yield
        return
    portal = client.blocking_portal
    portal.call(sandbox.__aenter__)
    try:
        yield
    finally:
        portal.call(sandbox.__aexit__, None, None, None)


class _SameLoopPortal:
    """Stands in for the anyio portal Litestar's transport calls: runs the call on the current loop.

    Only valid inside ``greenlet_spawn`` (see :func:`_same_loop_client`).
    """

    def call(self, function: Any, *args: Any) -> Any:
        from sqlalchemy.util import await_only

        result = function(*args)
        return await_only(result) if inspect.isawaitable(result) else result


def _same_loop_client(app: Litestar, *, started: bool = False) -> AsyncTestClient[Litestar]:
    """An ``AsyncTestClient`` whose lifespan and requests run on the test's own event loop.

    Uses two Litestar internals, checked by tests/plugin/test_testing.py: the transport's synchronous
    ``handle_request`` (run here in a SQLAlchemy greenlet, so its portal calls can await on this loop)
    and the client's ``portal()`` hook.
    """
    from litestar.testing import AsyncTestClient
    from litestar.testing.transport import TestClientTransport
    from sqlalchemy.util import greenlet_spawn

    class SameLoopTransport(TestClientTransport):  # type: ignore[type-arg]
        async def handle_async_request(self, request: Any) -> Any:
            return await greenlet_spawn(self.handle_request, request)

    class SameLoopClient(AsyncTestClient):  # type: ignore[type-arg]
        @contextmanager
        def portal(self) -> Iterator[Any]:
            yield _SameLoopPortal()

        async def __aenter__(self) -> SameLoopClient:
            self._lifespan = None if started else self.app.lifespan()  # alchemy_started_app runs it
            if self._lifespan is not None:
                await self._lifespan.__aenter__()
            return self

        async def __aexit__(self, *exc_info: Any) -> None:
            if self._lifespan is not None:
                await self._lifespan.__aexit__(*exc_info)

    client = SameLoopClient(app)
    client._transport = SameLoopTransport(client=client)  # type: ignore[assignment]
    return client
