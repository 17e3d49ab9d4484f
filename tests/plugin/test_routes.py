"""The transaction middleware wraps exactly the route handlers that can reach a session or an engine.

A route that cannot reach one is built as if the plugin were not there (the middleware never runs for
it); a route that reaches a session, directly or through providers at any layer (app, router, controller,
handler; providers depending on providers; websocket and listener routes; routes added after startup),
commits on success, rolls back on failure and leaves no connection checked out. The lifecycle tests in
``test_lifecycle.py`` cover the rest of the guarantees on a directly declared session.

If Litestar changes the private shape ``plugin/routes.py`` reads (``KwargsModel.dependency_batches``),
every handler is wrapped and ``test_routes_without_a_session_are_not_wrapped`` fails.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Controller, Litestar, Router, WebSocket, asgi, get, post, websocket, websocket_listener
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.routes import HTTPRoute
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from plugin.middleware import TransactionMiddleware
from plugin.routes import needs_transaction
from tests.databases import KINDS
from tests.plugin import asgi as asgi_harness
from tests.plugin.models import Account, AuditEntry, Base, make_plugin

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.types import Receive, Scope, Send

    from plugin import SQLAlchemyPlugin
    from tests.databases import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every connection the transaction middleware handled."""
    seen: list[str] = []
    original = TransactionMiddleware.__call__

    async def counting(self: TransactionMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(TransactionMiddleware, "__call__", counting)
    return seen


# -- routes that cannot reach a session --------------------------------------------------------------


def provide_clock() -> str:
    return "noon"


@get("/nothing", sync_to_thread=False)
def nothing() -> dict[str, str]:
    return {"status": "ok"}


@get("/own-dependency", sync_to_thread=False)
def own_dependency(clock: NamedDependency[str]) -> str:
    return clock


def provide_title(clock: NamedDependency[str]) -> str:
    return f"at {clock}"


class Pages(Controller):
    path = "/pages"
    dependencies = {"title": Provide(provide_title, sync_to_thread=False)}  # noqa: RUF012

    @get("/{page:str}", sync_to_thread=False)
    def page(self, page: FromPath[str], title: NamedDependency[str]) -> str:
        return f"{page} {title}"


@websocket("/ws-echo")
async def echo(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    await socket.send_text(await socket.receive_text())
    await socket.close()


@asgi("/raw", is_mount=True, copy_scope=True)
async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"raw"})


# -- routes that reach a session, at every layer -------------------------------------------------------


class Writer:
    """What the providers hand out: a session and the model it writes."""

    def __init__(self, session: AsyncSession, model: type[Base]) -> None:
        self.session, self.model = session, model

    def write(self, name: str) -> None:
        """Add a row named ``name``; a name ending in ``-failed`` makes the handler raise after adding it."""
        self.session.add(Account(name=name) if self.model is Account else AuditEntry(message=name))
        if name.endswith("-failed"):
            raise RuntimeError("handler failed after writing")


def provide_app_writer(db_session: NamedDependency[AsyncSession]) -> Writer:
    return Writer(db_session, Account)


def provide_through_app_writer(app_writer: NamedDependency[Writer]) -> Writer:
    """A router's provider that depends on the app's provider."""
    return app_writer


def provide_handler_writer(db_session: NamedDependency[AsyncSession]) -> Writer:
    return Writer(db_session, Account)


def provide_logs_writer(logs_db_session: NamedDependency[AsyncSession]) -> Writer:
    return Writer(logs_db_session, AuditEntry)


@post("/direct/{name:str}")
async def direct(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    Writer(db_session, Account).write(name)


@post("/app-provider/{name:str}")
async def through_app(name: FromPath[str], app_writer: NamedDependency[Writer]) -> None:
    app_writer.write(name)


@post("/router-provider/{name:str}")
async def through_router(name: FromPath[str], router_writer: NamedDependency[Writer]) -> None:
    router_writer.write(name)


writes = Router(
    "/routed",
    route_handlers=[through_router],
    dependencies={"router_writer": Provide(provide_through_app_writer, sync_to_thread=False)},
)


class Audits(Controller):
    path = "/controller"
    dependencies = {"controller_writer": Provide(provide_logs_writer, sync_to_thread=False)}  # noqa: RUF012

    @post("/{name:str}")
    async def audit(self, name: FromPath[str], controller_writer: NamedDependency[Writer]) -> None:
        controller_writer.write(name)


@post("/handler-provider/{name:str}", dependencies={"mine": Provide(provide_handler_writer, sync_to_thread=False)})
async def through_handler(name: FromPath[str], mine: NamedDependency[Writer]) -> None:
    mine.write(name)


@websocket("/ws-write/{name:str}")
async def ws_write(name: FromPath[str], socket: WebSocket[Any, Any, Any], app_writer: NamedDependency[Writer]) -> None:
    await socket.accept()
    app_writer.session.add(Account(name=name))
    await socket.send_text("written")
    if await socket.receive_text() == "fail":
        raise RuntimeError("websocket handler failed after writing")
    await socket.close()


@websocket_listener("/listener")
async def listener(data: str, app_writer: NamedDependency[Writer]) -> str:
    app_writer.write(data)
    await app_writer.session.flush()
    return "written"


@get("/engine", sync_to_thread=False)
def engine_only(db_engine: NamedDependency[AsyncEngine]) -> str:
    return type(db_engine).__name__


@post("/later/{name:str}")
async def added_later(name: FromPath[str], router_writer: NamedDependency[Writer]) -> None:
    router_writer.write(name)


@get("/nothing-later", sync_to_thread=False)
def nothing_later() -> str:
    return "later"


HANDLERS = [nothing, own_dependency, Pages, echo, raw, direct, through_app, writes, Audits, through_handler]
HANDLERS += [ws_write, listener, engine_only]


@pytest.fixture
def setup(kind: str, new_db: Callable[[str], Database]) -> tuple[Litestar, SQLAlchemyPlugin[Any], Database, Database]:
    default, logs = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": default, "logs": logs})
    app = Litestar(
        route_handlers=HANDLERS,
        plugins=[plugin],
        dependencies={
            "clock": Provide(provide_clock, sync_to_thread=False),
            "app_writer": Provide(provide_app_writer, sync_to_thread=False),
        },
    )
    return app, plugin, default, logs


def checked_out(plugin: SQLAlchemyPlugin[Any]) -> dict[str, int]:
    return {key: plugin.engines.sync_engine(key).pool.checkedout() for key in plugin.router.keys}


def stored(default: Database, logs: Database) -> set[str]:
    accounts = default.fetch("select name from accounts")
    audits = logs.fetch("select message from audit_entries")
    return {name for (name,) in accounts} | {f"logs:{message}" for (message,) in audits}


async def websocket_exchange(app: Litestar, path: str, *texts: str) -> list[dict[str, Any]]:
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for value in texts:
        await incoming.put({"type": "websocket.receive", "text": value})
    await incoming.put({"type": "websocket.disconnect", "code": 1000})
    return await asgi_harness.websocket(app, path, incoming)


def texts(sent: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in sent if m["type"] == "websocket.send"]


@pytest.mark.parametrize("kind", KINDS[:1])
async def test_routes_without_a_session_are_not_wrapped(
    setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database, Database], runs: list[str]
) -> None:
    app, _, _, _ = setup
    async with app.lifespan():
        assert (await asgi_harness.http(app, "GET", "/nothing")).json() == {"status": "ok"}
        assert (await asgi_harness.http(app, "GET", "/own-dependency")).body == b"noon"
        assert (await asgi_harness.http(app, "GET", "/pages/home")).body == b"home at noon"
        assert (await asgi_harness.http(app, "GET", "/raw")).body == b"raw"
        assert texts(await websocket_exchange(app, "/ws-echo", "hi")) == ["hi"]
        app.register(nothing_later)  # after startup
        assert (await asgi_harness.http(app, "GET", "/nothing-later")).body == b"later"
        assert runs == []
        # What Litestar calls for these routes is the route itself, as without the plugin: no middleware at all.
        for path in ("/nothing", "/own-dependency", "/pages/home", "/nothing-later"):
            route_app = app.asgi_router.handle_routing(path=path, method="GET")[0]
            assert isinstance(route_app.__self__, HTTPRoute), path
            assert route_app.__func__ is HTTPRoute.handle, path

        # The control: a route that declares an engine is wrapped, and the middleware really is counted.
        assert (await asgi_harness.http(app, "GET", "/engine")).status == 200
        assert runs == ["/engine"]


@pytest.mark.parametrize("kind", KINDS[:2])
async def test_routes_reaching_a_session_at_any_layer_commit_roll_back_and_close(
    setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database, Database], runs: list[str]
) -> None:
    app, plugin, default, logs = setup
    paths = {
        "/direct": "direct",
        "/app-provider": "app",
        "/routed/router-provider": "router",
        "/controller": "logs:controller",
        "/handler-provider": "handler",
    }
    async with app.lifespan():
        app.register(Router("/after", route_handlers=[added_later], dependencies=writes.dependencies))
        paths["/after/later"] = "later"
        for path, stored_as in paths.items():
            name = stored_as.removeprefix("logs:")
            assert (await asgi_harness.http(app, "POST", f"{path}/{name}")).status == 201, path
            assert (await asgi_harness.http(app, "POST", f"{path}/{name}-failed")).status == 500, path
            assert checked_out(plugin) == {"default": 0, "logs": 0}, path

        assert texts(await websocket_exchange(app, "/ws-write/ws", "done")) == ["written"]
        assert texts(await websocket_exchange(app, "/ws-write/ws-failed", "fail")) == ["written"]
        assert texts(await websocket_exchange(app, "/listener", "listened")) == ["written"]
        assert checked_out(plugin) == {"default": 0, "logs": 0}

    assert stored(default, logs) == {*paths.values(), "ws", "listened"}
    # One middleware run per connection: no route was wrapped twice.
    http_runs = [f"{path}/{name.removeprefix('logs:')}" for path, name in paths.items()]
    expected = [p for path in http_runs for p in (path, f"{path}-failed")]
    assert runs == [*expected, "/ws-write/ws", "/ws-write/ws-failed", "/listener"]


@pytest.mark.parametrize("kind", KINDS[:1])
async def test_a_method_added_to_a_wrapped_path_later_wraps_each_handler_once(
    setup: tuple[Litestar, SQLAlchemyPlugin[Any], Database, Database], runs: list[str]
) -> None:
    app, plugin, default, _ = setup

    @get("/direct/{name:str}", sync_to_thread=False)
    def read_back(name: FromPath[str]) -> str:
        return name

    async with app.lifespan():
        app.register(read_back)  # a new route object for /direct/{name}, holding the POST handler too
        assert (await asgi_harness.http(app, "POST", "/direct/once")).status == 201
        assert (await asgi_harness.http(app, "GET", "/direct/once")).body == b"once"
        assert checked_out(plugin) == {"default": 0, "logs": 0}
    assert runs == ["/direct/once"]
    assert default.fetch("select name from accounts") == [("once",)]


def test_the_users_handler_object_is_left_alone(new_db: Callable[[str], Database]) -> None:
    def mark(app: Any) -> Any:
        return app

    @post("/shared", middleware=[mark], sync_to_thread=False)
    def shared(db_engine: NamedDependency[Engine]) -> None:
        return None

    plugin = make_plugin({"default": new_db("sqlite")}, sync=True)
    Litestar(route_handlers=[shared], plugins=[plugin])
    # The app wraps its own copy of the handler; the decorated object (other apps may register it) is untouched.
    assert shared.middleware == [mark]


def test_an_unreadable_dependency_graph_keeps_the_transaction() -> None:
    assert needs_transaction(object(), {"db_session"}) is True
    assert needs_transaction(None, {"db_session"}) is True
