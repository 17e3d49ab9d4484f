"""pytest fixtures that run each test inside a sandbox on every bind (Django's ``TestCase``, for Litestar).

Installed with the package as a pytest plugin (the ``pytest11`` entry point); it defines fixtures, two
hooks only take notes (the scopes of the ``alchemy_app`` and ``anyio_backend`` fixtures as pytest sets
them up, and which test runs next) and a third only stops an app these fixtures started, so nothing
happens until a test asks for a fixture. Tell it which app to test with a fixture named ``alchemy_app``;
then:

- ``alchemy_client`` (async tests, any config): a ``litestar.testing.AsyncTestClient`` on the started app,
  inside ``plugin.sandbox()``. Requests it makes commit into savepoints.
- ``alchemy_session`` (async tests): a session joined to the same sandbox, so the test sees what the
  requests wrote (an ``AsyncSession``; a ``Session`` for sync configs).
- ``alchemy_sync_client`` / ``alchemy_sync_session``: the same for plain (sync) tests with a
  ``litestar.testing.TestClient``; the session needs a sync config.
- ``alchemy_plugin``: the app's :class:`~plugin.plugin.SQLAlchemyPlugin`.
- ``alchemy_started_app`` (module scope): starts the app for the module right away. Not needed any more:
  ``alchemy_client`` does the same by itself for a module-scoped (or wider) ``alchemy_app``.

When the app starts: ``alchemy_client`` starts an ``alchemy_app`` of module, package or session scope
once per test module, on the module's event loop, and stops it at the end of the module; each test then
only opens a sandbox (two pooled connections, one BEGIN and one ROLLBACK per bind). That needs an
``anyio_backend`` fixture of module scope or wider (anyio's own is); the async tests of such a module
then share one event loop. ``alchemy_sync_client`` likewise starts such an app once per module, on the
helper loop of one ``TestClient``, and gives each test a ``TestClient`` of its own that sends its
requests through that loop. The app runs on one of the two loops at a time, and stays started only
while the next test uses the same client fixture: before any other test (a sync one after async ones, a
plain test, a test that starts ``alchemy_app`` with Litestar's own client) it is stopped. Between two tests
it stays started for, its engines refuse every statement (it would be a real write): a fixture that uses
the database must ask for ``alchemy_session`` (or the client) so that it runs inside the test's sandbox.
A function- or class-scoped ``alchemy_app`` (or, for ``alchemy_client``, a function-scoped
``anyio_backend``) is started and stopped around every test, which costs more than the test itself:
engines created, a first connection per bind, dispose. An app whose engines are already open (started
by the suite itself) is used as it is by ``alchemy_client``.

At the end of each test of a client fixture the tasks started during it and still running (a handler's
fire-and-forget task) are cancelled, as they were when the app ran on a loop of the test's own, and
everything is rolled back on every bind; the tables must exist beforehand
(``create_all=True`` in the config, or migrations run once per session).

One event loop: Litestar's test clients run the app on a loop of their own in a helper thread, while an
async test awaits on the test's loop; an async driver's connection (asyncpg, asyncmy) works on the loop
that opened it only. ``alchemy_client`` therefore runs the app's lifespan and requests on the test's own
loop (its transport awaits the app directly), so the app, the sandbox and the test's session share one
loop and one held connection per bind. It serves HTTP; for websockets use ``alchemy_sync_client``. The
sync client runs everything on its helper loop, the sandbox included.
"""

from __future__ import annotations

from contextlib import contextmanager
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Generator, Iterator
    from contextlib import AbstractAsyncContextManager

    from anyio.from_thread import BlockingPortal
    from httpx import Request, Response
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

_SCOPES = pytest.StashKey[dict[str, str]]()
_APP_SCOPES = pytest.StashKey[dict[int, str]]()
_MODULE_APPS = pytest.StashKey["dict[int, _ModuleApp]"]()
_MODULE_SYNC_APPS = pytest.StashKey["dict[int, _ModuleSyncApp]"]()
_NEXT_TEST = pytest.StashKey["pytest.Item | None"]()
_ONCE = frozenset({"module", "package", "session"})  # scopes that outlive a module's tests


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """Note the scope of each ``alchemy_app`` (by the app) and of the last ``anyio_backend`` set up.

    A fixture of the test being set up was set up for it (or earlier, if it is wider): when the note says
    function, the loop is new per test, which is right even if a wider one is in use. An app is looked up
    by itself: a cached module-scoped app is not set up again after a test with an app of its own.
    """
    value = yield
    if fixturedef.argname == "anyio_backend":
        request.config.stash.setdefault(_SCOPES, {})[fixturedef.argname] = fixturedef.scope
    elif fixturedef.argname == "alchemy_app":
        request.config.stash.setdefault(_APP_SCOPES, {})[id(value)] = fixturedef.scope
    return value


def _app_scope(request: pytest.FixtureRequest, app: Litestar) -> str | None:
    """The scope of the ``alchemy_app`` fixture that returned ``app``."""
    return request.config.stash.get(_APP_SCOPES, {}).get(id(app))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Stop an app kept started for a next test with the client fixture that did not come (skipped, or
    another fixture of it failed first), before a test without that fixture (see ``alchemy_client``)."""
    names = getattr(item, "fixturenames", ())
    for module_app in list(item.config.stash.get(_MODULE_APPS, {}).values()):
        if module_app.parked.active and "alchemy_client" not in names:
            module_app.parked.end()
            if "alchemy_started_app" not in names:
                module_app.stop_between_tests()
    for sync_app in list(item.config.stash.get(_MODULE_SYNC_APPS, {}).values()):
        if sync_app.parked.active and "alchemy_sync_client" not in names:
            sync_app.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Note the test that runs next, before this one's fixtures are torn down (see ``alchemy_client``)."""
    item.config.stash[_NEXT_TEST] = nextitem


@pytest.fixture
def alchemy_app() -> Litestar:
    """The app under test: override this fixture (in your ``conftest.py``) to return your Litestar app.

    Give it module or session scope (``@pytest.fixture(scope="session")``) so that it starts once per
    test module; a function-scoped app is started and stopped for every test.
    """
    pytest.fail("define a fixture named `alchemy_app` that returns your Litestar app (e.g. in conftest.py)")


@pytest.fixture
def alchemy_plugin(alchemy_app: Litestar) -> SQLAlchemyPlugin[Any]:
    """The app's ``SQLAlchemyPlugin``."""
    from plugin.plugin import SQLAlchemyPlugin

    plugin = next((p for p in alchemy_app.plugins if isinstance(p, SQLAlchemyPlugin)), None)
    if plugin is None:
        pytest.fail("the app from `alchemy_app` does not register SQLAlchemyPlugin")
    return plugin


class _Parked:
    """Between two tests of an app kept started, its engines run nothing: a write then would be real.

    What runs there: a fixture that uses ``alchemy_plugin`` (not ``alchemy_session``) is set up before the
    client's sandbox is open; a task the app left running. It is refused, as it fails when the app is not
    started, instead of being committed for every later test to see.
    """

    def __init__(self) -> None:
        self._listeners: list[tuple[Any, Callable[..., None]]] = []

    def begin(self, plugin: SQLAlchemyPlugin[Any]) -> None:
        from sqlalchemy import event

        from plugin.exceptions import StatementRefusedError
        from plugin.statements import shorten

        self.end()
        for key in plugin.router.keys:
            engine = plugin.engines.sync_engine(key)

            def refuse(_conn: Any, _cursor: Any, statement: str, *_args: Any, key: str = key) -> None:
                raise StatementRefusedError(key, shorten(statement), _BETWEEN_TESTS)

            event.listen(engine, "before_cursor_execute", refuse)
            self._listeners.append((engine, refuse))

    @property
    def active(self) -> bool:
        return bool(self._listeners)

    def end(self) -> None:
        from sqlalchemy import event

        while self._listeners:
            engine, refuse = self._listeners.pop()
            event.remove(engine, "before_cursor_execute", refuse)


_BETWEEN_TESTS = (
    "no test's sandbox is open (the app stays started between the tests of a module), so this would be a real "
    "write; a fixture that uses the database must ask for alchemy_session (or alchemy_client) first"
)


class _ModuleApp:
    """An app started once for a test module, on the module's event loop; stopped at the module's end, or
    when its ``alchemy_app`` is torn down (a parametrized app), or before a sync client starts it."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self._lifespan: AbstractAsyncContextManager[None] | None = None
        self.parked = _Parked()
        self.anyio_backend: Any = "asyncio"

    async def start(self) -> None:
        if self._lifespan is None:
            lifespan = self.app.lifespan()
            await lifespan.__aenter__()
            self._lifespan = lifespan

    async def stop(self) -> None:
        self.parked.end()
        if (lifespan := self._lifespan) is not None:
            self._lifespan = None
            await lifespan.__aexit__(None, None, None)

    @property
    def running(self) -> bool:
        return self._lifespan is not None

    def stop_between_tests(self) -> None:
        """Stop the app from outside a test, on the module's loop and task (anyio's test runner, idle then)."""
        from anyio.pytest_plugin import extract_backend_and_options, get_runner

        with get_runner(*extract_backend_and_options(self.anyio_backend)) as runner:
            runner.run_fixture(self.stop, {})


@pytest.fixture(scope="module")
async def _alchemy_module_app(
    request: pytest.FixtureRequest, alchemy_app: Litestar, anyio_backend: Any
) -> AsyncIterator[_ModuleApp]:
    """The app, started by the first test that needs it; this async fixture also keeps the module's loop.

    It depends on ``alchemy_app``, so pytest tears it down (stopping the app) before the app's own fixtures.
    """
    module_app = _ModuleApp(alchemy_app)
    module_app.anyio_backend = anyio_backend
    running = request.config.stash.setdefault(_MODULE_APPS, {})
    running[id(alchemy_app)] = module_app
    try:
        yield module_app
    finally:
        running.pop(id(alchemy_app), None)
        await module_app.stop()


class _ModuleSyncApp:
    """The app started once for a module's sync tests, in a ``TestClient``'s helper thread and loop; each
    test gets a ``TestClient`` of its own (its own cookies) that sends its requests through that loop."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self._owner: TestClient[Litestar] | None = None
        self.parked = _Parked()

    def start(self) -> BlockingPortal:
        if self._owner is None:
            from litestar.testing import TestClient

            owner = TestClient(self.app)
            owner.__enter__()
            self._owner = owner
        return self._owner.blocking_portal

    def stop(self) -> None:
        self.parked.end()
        if (owner := self._owner) is not None:
            self._owner = None
            owner.__exit__(None, None, None)


@pytest.fixture(scope="module")
def _alchemy_module_sync_app(request: pytest.FixtureRequest, alchemy_app: Litestar) -> Iterator[_ModuleSyncApp]:
    """The app for the module's sync tests, started by the first of them (see :class:`_ModuleSyncApp`)."""
    module_app = _ModuleSyncApp(alchemy_app)
    running = request.config.stash.setdefault(_MODULE_SYNC_APPS, {})
    running[id(alchemy_app)] = module_app
    try:
        yield module_app
    finally:
        running.pop(id(alchemy_app), None)
        module_app.stop()


@pytest.fixture
def _alchemy_module_app_if_any(request: pytest.FixtureRequest, alchemy_app: Litestar) -> _ModuleApp | None:
    """The module's started app, when this test's app and event loop both live for the module; else None."""
    if (sync_app := request.config.stash.get(_MODULE_SYNC_APPS, {}).get(id(alchemy_app))) is not None:
        sync_app.stop()  # it runs on the sync client's loop; async tests run the app on their own
    request.getfixturevalue("anyio_backend")  # set up before its scope is read (it is in every anyio test)
    scopes = request.config.stash.get(_SCOPES, {})
    if _app_scope(request, alchemy_app) in _ONCE and scopes.get("anyio_backend") in _ONCE:
        module_app: _ModuleApp = request.getfixturevalue("_alchemy_module_app")
        if module_app.app is alchemy_app:
            return module_app
    return None


@pytest.fixture(scope="module")
async def alchemy_started_app(alchemy_app: Litestar, _alchemy_module_app: _ModuleApp) -> Litestar:
    """The app started for the whole module (``alchemy_client`` does this by itself for a module-scoped app)."""
    await _alchemy_module_app.start()
    return alchemy_app


@pytest.fixture
async def alchemy_client(
    request: pytest.FixtureRequest,
    alchemy_app: Litestar,
    alchemy_plugin: SQLAlchemyPlugin[Any],
    _alchemy_module_app_if_any: _ModuleApp | None,
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An ``AsyncTestClient`` on the started app, inside a sandbox on every bind (async tests).

    The app is started once per module if ``alchemy_app`` has module scope or wider (see the module docs),
    else for this test only.
    """
    module_app = _alchemy_module_app_if_any
    if module_app is not None and alchemy_plugin.engines.state != "open":
        await module_app.start()
    started = alchemy_plugin.engines.state == "open"  # by this module, or by the suite itself
    client = _same_loop_client(alchemy_app, started=started)
    if module_app is not None:
        module_app.parked.end()
    async with client, alchemy_plugin.sandbox():
        before = _tasks()
        try:
            yield client
        finally:
            await _cancel_tasks_left(before)
    if module_app is None or not module_app.running:
        return
    following = getattr(request.config.stash.get(_NEXT_TEST, None), "fixturenames", ())
    if "alchemy_client" in following:
        module_app.parked.begin(alchemy_plugin)
    elif "alchemy_started_app" not in following:
        # Kept started only for a next test that uses alchemy_client too. Any other test may start the app
        # itself (Litestar's own clients), or comes before a sync test that runs it on the sync client's loop:
        # stopped here, on this loop and task (a sync test cannot run anything on them).
        await module_app.stop()


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
def alchemy_sync_client(
    request: pytest.FixtureRequest, alchemy_app: Litestar, alchemy_plugin: SQLAlchemyPlugin[Any]
) -> Iterator[TestClient[Litestar]]:
    """A ``TestClient`` on the started app, inside a sandbox on every bind (plain tests).

    The app is started once per module if ``alchemy_app`` has module scope or wider, else for this test.
    """
    from litestar.testing import TestClient

    module_app = request.config.stash.get(_MODULE_APPS, {}).get(id(alchemy_app))
    if module_app is not None and module_app.running:  # alchemy_client stops it when a sync test comes next
        pytest.fail(
            "the app is still running on the event loop of this module's async tests; alchemy_client stops it "
            "before a test that uses alchemy_sync_client, but pytest did not say that this test comes next"
        )
    if _app_scope(request, alchemy_app) not in _ONCE:
        with TestClient(alchemy_app) as client, _sandbox_on(client, alchemy_plugin):
            yield client
        return
    sync_app: _ModuleSyncApp = request.getfixturevalue("_alchemy_module_sync_app")
    client = TestClient(alchemy_app)
    client.blocking_portal = sync_app.start()  # Litestar's clients send requests through this portal
    sync_app.parked.end()
    with _sandbox_on(client, alchemy_plugin):
        before = client.blocking_portal.call(_tasks)
        try:
            yield client
        finally:
            client.blocking_portal.call(_cancel_tasks_left, before)
    following = request.config.stash.get(_NEXT_TEST, None)
    if "alchemy_sync_client" not in getattr(following, "fixturenames", ()):
        sync_app.stop()  # kept started only for a next test that uses it too (see alchemy_client)
    else:
        sync_app.parked.begin(alchemy_plugin)


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


def _tasks() -> set[Any]:
    """The event loop's tasks (asyncio), or nothing (trio)."""
    import asyncio

    try:
        return asyncio.all_tasks()
    except RuntimeError:
        return set()


async def _cancel_tasks_left(before: set[Any]) -> None:
    """Cancel the tasks started during the test that are still running (a handler's fire-and-forget task).

    The app outlives the test on the module's loop: such a task would write into the next test's sandbox,
    or outside any sandbox. When the app ran on the client's loop per test, that loop ended with the test.
    """
    import asyncio

    left = [
        task
        for task in _tasks() - before
        if not task.done()
        and task is not asyncio.current_task()
        # anyio's test runner wraps each call into the test's task in a task of its own: that one awaits this
        and not getattr(task.get_coro(), "__qualname__", "").startswith("TestRunner.")
    ]
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=5)


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


def _same_loop_client(app: Litestar, *, started: bool = False) -> AsyncTestClient[Litestar]:
    """An ``AsyncTestClient`` whose lifespan and requests run on the test's own event loop.

    Its transport awaits the app directly, on the caller's loop and task, instead of calling it through a
    portal to the client's helper thread. It uses three methods of Litestar's ``TestClientTransport``
    (``parse_request``, ``create_receive``, ``create_send``) that every request made through
    ``alchemy_client`` in tests/plugin/test_testing.py goes through.
    """
    from litestar.testing import AsyncTestClient
    from litestar.testing.transport import TestClientTransport

    class SameLoopTransport(TestClientTransport):  # type: ignore[type-arg]
        async def handle_async_request(self, request: Request) -> Response:
            return await _handle_on_this_loop(self, request)

    class SameLoopClient(AsyncTestClient):  # type: ignore[type-arg]
        async def __aenter__(self) -> SameLoopClient:
            self._lifespan = None if started else self.app.lifespan()  # else the module (or the suite) runs it
            if self._lifespan is not None:
                await self._lifespan.__aenter__()
            return self

        async def __aexit__(self, *exc_info: Any) -> None:
            if self._lifespan is not None:
                await self._lifespan.__aexit__(*exc_info)

    client = SameLoopClient(app)
    client._transport = SameLoopTransport(client=client)  # type: ignore[assignment]
    return client


async def _handle_on_this_loop(transport: Any, request: Request) -> Response:
    """What ``TestClientTransport.handle_request`` does for HTTP, awaiting the app instead of a portal call."""
    from anyio import Event
    from httpx import ByteStream, Response

    scope = transport.parse_request(request=request)
    if scope["type"] == "websocket":
        return transport.handle_request(request)  # type: ignore[no-any-return]  # raises: use the sync client
    scope.update(method=request.method, http_version="1.1", extensions={"http.response.template": {}})
    raw_kwargs: dict[str, Any] = {"stream": BytesIO()}
    context: dict[str, Any] = {
        "response_complete": Event(),
        "request_complete": False,
        "raw_kwargs": raw_kwargs,
        "response_started": False,
        "template": None,
        "context": None,
    }
    try:
        receive = transport.create_receive(request=request, context=context)
        await transport.client.app(scope, receive, transport.create_send(request=request, context=context))
    except BaseException:
        if transport.raise_server_exceptions:
            raise
        return Response(status_code=500, headers=[], stream=ByteStream(b""), request=request)
    if not context["response_started"]:
        if transport.raise_server_exceptions:
            raise AssertionError("TestClient did not receive any response.")
        return Response(status_code=500, headers=[], stream=ByteStream(b""), request=request)
    body = raw_kwargs.pop("stream").getvalue()
    response = Response(**raw_kwargs, stream=ByteStream(body), request=request)
    response.template = context["template"]  # type: ignore[attr-defined]  # as Litestar's transport sets them
    response.context = context["context"]  # type: ignore[attr-defined]
    return response
