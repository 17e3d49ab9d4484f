"""The request transaction policy, judged by what the client receives and what the database holds."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
import pytest
from litestar import Litestar, Request, Response, get, post
from litestar.config.compression import CompressionConfig
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.testing import AsyncTestClient, TestClient
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from plugin import CommitConflictError, RoutingSession, TransactionPolicy
from tests.databases import KINDS, POSTGRES_URL
from tests.plugin import asgi
from tests.plugin.models import Account, AuditEntry, make_plugin

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from tests.databases import Database

pytestmark = pytest.mark.anyio

SQLITE_AND_POSTGRESQL = KINDS[:2]
PASSWORD = "n0t-for-logs"


@post("/ok/{name:str}")
async def ok(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> dict[str, str]:
    db_session.add(Account(name=name))
    return {"created": name}


@post("/raises/{name:str}")
async def raises(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name=name))
    await db_session.flush()  # the row exists inside the transaction...
    raise RuntimeError("handler failed")  # ...and must not survive this


@post("/http-error/{name:str}")
async def http_error(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name=name))
    raise HTTPException(status_code=422, detail="nope")


@post("/status/{name:str}/{code:int}")
async def with_status(
    name: FromPath[str], code: FromPath[int], db_session: NamedDependency[AsyncSession]
) -> Response[str]:
    db_session.add(Account(name=name))
    return Response("returned, not raised", status_code=code)


@post("/redirect/{name:str}")
async def redirect(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> Redirect:
    db_session.add(Account(name=name))
    return Redirect("/elsewhere")


async def turn_into_400(response: Response[Any]) -> Response[Any]:
    return Response({"rewritten": True}, status_code=400)


@post("/rewritten/{name:str}", after_request=turn_into_400)
async def rewritten(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> dict[str, str]:
    """Returns 201, but its own after_request hook (which shadows the app's) turns it into a 400."""
    db_session.add(Account(name=name))
    return {"created": name}


@post("/manual/{name:str}/{commit:int}")
async def manual(name: FromPath[str], commit: FromPath[int], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name=name))
    if commit:
        await db_session.commit()


HANDLERS = [ok, raises, http_error, with_status, redirect, rewritten, manual]


async def app_level_after_request(response: Response[Any]) -> Response[Any]:
    return response


def app_for(db: Database, logs: Database, **options: Any) -> Litestar:
    plugin = make_plugin({"default": db, "logs": logs}, **options)
    return Litestar(route_handlers=HANDLERS, plugins=[plugin], after_request=app_level_after_request)


def names(db: Database) -> list[str]:
    return [name for (name,) in db.fetch("select name from accounts order by name")]


@pytest.mark.parametrize("kind", SQLITE_AND_POSTGRESQL)
async def test_default_policy_commits_2xx_only(kind: str, new_db: Callable[[str], Database]) -> None:
    db = new_db(kind)
    async with AsyncTestClient(app_for(db, new_db(kind))) as client:
        assert (await client.post("/ok/committed")).status_code == 201
        assert (await client.post("/raises/raised")).status_code == 500
        assert (await client.post("/http-error/http-error")).status_code == 422
        assert (await client.post("/status/bad-request/400")).status_code == 400
        assert (await client.post("/status/accepted/202")).status_code == 202
        assert (await client.post("/redirect/redirected", follow_redirects=False)).status_code == 302
        response = await client.post("/rewritten/rewritten")
        assert (response.status_code, response.json()) == (400, {"rewritten": True})

    assert names(db) == ["accepted", "committed"]


@pytest.mark.parametrize("kind", SQLITE_AND_POSTGRESQL)
async def test_redirects_commit_with_the_option(kind: str, new_db: Callable[[str], Database]) -> None:
    db = new_db(kind)
    policy = TransactionPolicy(commit_on_redirect=True, commit_statuses={409}, rollback_statuses={202})
    async with AsyncTestClient(app_for(db, new_db(kind), transaction=policy)) as client:
        assert (await client.post("/redirect/redirected", follow_redirects=False)).status_code == 302
        assert (await client.post("/status/conflict-kept/409")).status_code == 409
        assert (await client.post("/status/accepted-dropped/202")).status_code == 202
        assert (await client.post("/status/teapot/418")).status_code == 418

    assert names(db) == ["conflict-kept", "redirected"]


@pytest.mark.parametrize("kind", SQLITE_AND_POSTGRESQL)
async def test_manual_mode_never_commits_for_the_handler(kind: str, new_db: Callable[[str], Database]) -> None:
    db = new_db(kind)
    async with AsyncTestClient(app_for(db, new_db(kind), transaction=TransactionPolicy(mode="manual"))) as client:
        assert (await client.post("/manual/left-open/0")).status_code == 201
        assert (await client.post("/manual/committed-by-hand/1")).status_code == 201
        assert (await client.post("/ok/not-autocommitted")).status_code == 201

    assert names(db) == ["committed-by-hand"]


@pytest.mark.parametrize("kind", KINDS)
async def test_duplicate_key_at_commit_is_a_409_and_no_row(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db, logs = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": db, "logs": logs}, password=PASSWORD)
    # logging_config=None: Litestar's default config would replace the root handlers pytest captures with
    app = Litestar(route_handlers=HANDLERS, plugins=[plugin], logging_config=None)
    caplog.set_level(logging.INFO, logger="plugin")
    async with AsyncTestClient(app) as client:
        assert (await client.post("/ok/ada")).status_code == 201
        response = await client.post("/ok/ada")

    assert response.status_code == 409
    assert response.json() == {
        "status_code": 409,
        "detail": "The request's changes conflict with data already stored.",
    }
    assert names(db) == ["ada"]
    [record] = [r for r in caplog.records if r.name == "plugin.transactions"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("flush failed on bind 'default': IntegrityError")
    assert record.getMessage().endswith("committed: (none); rolled back: 'default'")
    assert PASSWORD not in caplog.text


async def test_an_app_maps_commit_errors_like_any_exception(new_db: Callable[[str], Database]) -> None:
    def conflict_as_422(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
        assert isinstance(exc, CommitConflictError)
        return Response({"problem": "duplicate", "failed_bind": str(exc.failed)}, status_code=422)

    db = new_db("sqlite")
    plugin = make_plugin({"default": db, "logs": new_db("sqlite")})
    app = Litestar(route_handlers=HANDLERS, plugins=[plugin], exception_handlers={CommitConflictError: conflict_as_422})
    async with AsyncTestClient(app) as client:
        await client.post("/ok/ada")
        response = await client.post("/ok/ada")

    assert (response.status_code, response.json()) == (422, {"problem": "duplicate", "failed_bind": "default"})


@post("/claim/{name:str}", cache=60)
async def claim(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> dict[str, str]:
    db_session.add(Account(name=name))
    return {"claimed": name}


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
async def test_a_response_whose_commit_failed_is_not_kept_by_the_response_cache(
    compressed: bool, new_db: Callable[[str], Database]
) -> None:
    # Litestar's response cache sits inside the transaction middleware: it sees the handler's response
    # before the commit decides it, and stores it when its last body message passes.
    db = new_db("sqlite")
    plugin = make_plugin({"default": db, "logs": new_db("sqlite")})
    compression = CompressionConfig(backend="gzip", minimum_size=1) if compressed else None
    app = Litestar(route_handlers=[claim], plugins=[plugin], compression_config=compression, logging_config=None)
    async with AsyncTestClient(app) as client:
        db.execute("insert into accounts (name) values ('taken')")
        first = await client.post("/claim/taken")
        again = await client.post("/claim/taken")

    assert (first.status_code, again.status_code) == (409, 409)
    assert again.json() == {"status_code": 409, "detail": "The request's changes conflict with data already stored."}
    assert names(db) == ["taken"]


@post("/flush-in-handler/{name:str}")
async def flush_in_handler(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name=name))
    await db_session.flush()


@pytest.mark.parametrize(
    ("option", "app_handler", "expected"), [(True, False, 409), (False, False, 500), (True, True, 418)]
)
async def test_integrity_error_raised_in_a_handler(
    option: bool, app_handler: bool, expected: int, new_db: Callable[[str], Database]
) -> None:
    handlers = {IntegrityError: lambda request, exc: Response("mine", status_code=418)} if app_handler else {}
    plugin = make_plugin({"default": new_db("sqlite"), "logs": new_db("sqlite")}, map_integrity_errors=option)
    app = Litestar(route_handlers=[flush_in_handler], plugins=[plugin], exception_handlers=handlers)
    async with AsyncTestClient(app) as client:
        assert (await client.post("/flush-in-handler/ada")).status_code == 201
        assert (await client.post("/flush-in-handler/ada")).status_code == expected


@post("/sync/{name:str}/{code:int}", sync_to_thread=True)
def sync_handler(name: FromPath[str], code: FromPath[int], db_session: NamedDependency[Session]) -> Response[str]:
    db_session.add(Account(name=name))
    if code == 500:
        raise RuntimeError("sync handler failed")
    return Response("sync", status_code=code)


@pytest.mark.parametrize("kind", SQLITE_AND_POSTGRESQL)
def test_sync_apps_follow_the_same_rules(kind: str, new_db: Callable[[str], Database]) -> None:
    db = new_db(kind)
    plugin = make_plugin({"default": db, "logs": new_db(kind)}, sync=True)
    with TestClient(Litestar(route_handlers=[sync_handler], plugins=[plugin])) as client:
        assert client.post("/sync/committed/201").status_code == 201
        assert client.post("/sync/committed/200").status_code == 409
        assert client.post("/sync/raised/500").status_code == 500
        assert client.post("/sync/bad/400").status_code == 400
    assert names(db) == ["committed"]


STATUSES = (200, 201, 204, 299, 301, 302, 399, 400, 404, 409, 422, 500)


@pytest.mark.parametrize(
    ("policy", "committing"),
    [
        (TransactionPolicy(), [200, 201, 204, 299]),
        (TransactionPolicy(commit_on_redirect=True), [200, 201, 204, 299, 301, 302, 399]),
        (TransactionPolicy(commit_statuses={422}, rollback_statuses={204}), [200, 201, 299, 422]),
        (TransactionPolicy(mode="manual"), []),
    ],
)
def test_policy_is_a_pure_function_of_the_status(policy: TransactionPolicy, committing: list[int]) -> None:
    assert [status for status in STATUSES if policy.should_commit(status)] == committing


@post("/connection-killed/{name:str}")
async def connection_killed(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    """Flushes, then has the server kill this session's own connection: the COMMIT cannot happen."""
    db_session.add(Account(name=name))
    await db_session.flush()
    pid = await db_session.scalar(text("select pg_backend_pid()"))
    killer = await asyncpg.connect(str(POSTGRES_URL.set(drivername="postgresql")))
    try:
        await killer.execute("select pg_terminate_backend($1)", pid)
    finally:
        await killer.close()


@pytest.mark.postgresql
async def test_a_commit_that_fails_for_another_reason_is_a_500(new_db: Callable[[str], Database]) -> None:
    db = new_db("postgresql")
    plugin = make_plugin({"default": db, "logs": new_db("postgresql")})
    async with AsyncTestClient(Litestar(route_handlers=[connection_killed, *HANDLERS], plugins=[plugin])) as client:
        response = await client.post("/connection-killed/ghost")
        after = await client.post("/ok/after")  # the dead connection was not handed out again

    # Litestar shows no exception detail on a 5xx; the reason is in the ERROR log.
    assert (response.status_code, response.json()) == (500, {"status_code": 500, "detail": "Internal Server Error"})
    assert after.status_code == 201
    assert names(db) == ["after"]


async def test_a_failing_before_commit_hook_is_a_500(new_db: Callable[[str], Database]) -> None:
    db = new_db("sqlite")
    plugin = make_plugin({"default": db, "logs": new_db("sqlite")})

    def refuse(session: Session) -> None:
        raise RuntimeError("audit service unavailable")

    event.listen(RoutingSession, "before_commit", refuse)
    try:
        async with AsyncTestClient(Litestar(route_handlers=HANDLERS, plugins=[plugin])) as client:
            response = await client.post("/ok/refused")
    finally:
        event.remove(RoutingSession, "before_commit", refuse)
    assert response.status_code == 500
    assert names(db) == []


@post("/accounts-quick/{name:str}")
async def add_account_quickly(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(Account(name=name))


@pytest.mark.parametrize("kind", SQLITE_AND_POSTGRESQL)
async def test_a_cancellation_that_lands_just_as_the_commit_finishes_still_says_what_was_committed(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = new_db(kind)
    plugin = make_plugin({"default": db, "logs": new_db(kind)})
    app = Litestar(route_handlers=[add_account_quickly], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[Any]] = []

    def cancel_when_done(_session: Session) -> None:
        # Lands after the settling finished but before the request's task resumed: queued from inside the
        # settling task's last step, the cancellation runs just before the request's task is woken up.
        loop.call_soon(tasks[0].cancel)

    async with app.lifespan():
        event.listen(RoutingSession, "after_commit", cancel_when_done)
        try:
            tasks.append(asyncio.create_task(asgi.http(app, "POST", "/accounts-quick/ada")))
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
        finally:
            event.remove(RoutingSession, "after_commit", cancel_when_done)
    assert db.fetch("select name from accounts") == [("ada",)]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "the task was cancelled while its transaction was being settled; settled anyway: committed: 'default'"
    ]


@get("/accounts-count")
async def count_accounts(db_session: NamedDependency[AsyncSession]) -> int:
    return int((await db_session.execute(select(func.count()).select_from(Account))).scalar_one())


@pytest.mark.parametrize("kind", SQLITE_AND_POSTGRESQL)
@pytest.mark.parametrize(
    "case",
    [
        (
            "POST",
            "/accounts-quick/ada",
            ["the task was cancelled while its response was starting, after its transaction committed: 'default'"],
        ),
        # A request that only read has no write whose response the client could miss: no WARNING.
        ("GET", "/accounts-count", []),
    ],
    ids=["write", "read"],
)
async def test_a_cancellation_while_the_response_starts_after_the_commit_says_what_was_committed(
    kind: str,
    new_db: Callable[[str], Database],
    caplog: pytest.LogCaptureFixture,
    case: tuple[str, str, list[str]],
) -> None:
    method, path, warnings = case
    db = new_db(kind)
    plugin = make_plugin({"default": db, "logs": new_db(kind)})
    starting, release = asyncio.Event(), asyncio.Event()

    def slow_start(app: ASGIApp) -> ASGIApp:
        # App middleware sits outside the transaction: its send runs after the commit, before the client.
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            async def held(message: Message) -> None:
                if message["type"] == "http.response.start":
                    starting.set()
                    await release.wait()
                await send(message)

            await app(scope, receive, held)

        return middleware

    app = Litestar(
        route_handlers=[add_account_quickly, count_accounts],
        plugins=[plugin],
        middleware=[slow_start],
        logging_config=None,
    )
    caplog.set_level(logging.WARNING, logger="plugin")
    sent: list[dict[str, Any]] = []
    async with app.lifespan():
        task = asyncio.create_task(asgi.http(app, method, path, on_send=sent.append))
        await asyncio.wait_for(starting.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sent == []  # the client never got the response
    assert db.fetch("select name from accounts") == ([("ada",)] if method == "POST" else [])
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == warnings


@post("/savepoint-left-open/{name:str}")
async def savepoint_left_open(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add(AuditEntry(message=name))
    await db_session.flush()
    await db_session.begin_nested()  # never released: Session.commit() would release it, then commit
    db_session.add(Account(name=name))


@pytest.mark.parametrize(
    ("kind", "two_phase"),
    [
        *(pytest.param(*kind.values, False, id=kind.id, marks=kind.marks) for kind in KINDS),
        pytest.param("postgresql", True, id="postgresql-two-phase", marks=pytest.mark.postgresql),
        pytest.param("mariadb", True, id="mariadb-two-phase", marks=pytest.mark.mariadb),
    ],
)
async def test_a_savepoint_left_open_is_released_and_committed_like_session_commit_does(
    kind: str, two_phase: bool, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db, logs = new_db(kind), new_db(kind)
    plugin = make_plugin({"default": db, "logs": logs}, two_phase=two_phase)
    app = Litestar(route_handlers=[savepoint_left_open], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    async with AsyncTestClient(app) as client:
        assert (await client.post("/savepoint-left-open/ada")).status_code == 201
    assert db.fetch("select name from accounts") == [("ada",)]
    assert logs.fetch("select message from audit_entries") == [("ada",)]
    assert [r.getMessage() for r in caplog.records] == []


@post("/hooked/{name:str}")
async def hooked(name: FromPath[str], db_session: NamedDependency[AsyncSession]) -> None:
    db_session.add_all([Account(name=name), AuditEntry(message=name)])


@pytest.mark.parametrize("two_phase", [False, True], ids=["one-by-one", "two-phase"])
@pytest.mark.postgresql
async def test_a_commit_hook_that_fails_once_the_binds_committed_is_reported_with_what_committed(
    two_phase: bool, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db, logs = new_db("postgresql"), new_db("postgresql")
    plugin = make_plugin({"default": db, "logs": logs}, two_phase=two_phase)
    app = Litestar(route_handlers=[hooked], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.ERROR, logger="plugin")

    def failing_hook(_session: Session) -> None:
        raise RuntimeError("the after_commit hook failed")

    async with AsyncTestClient(app) as client:
        event.listen(RoutingSession, "after_commit", failing_hook)
        try:
            response = await client.post("/hooked/ada")
        finally:
            event.remove(RoutingSession, "after_commit", failing_hook)
        assert response.status_code == 500
        assert {key: plugin.engines.sync_engine(key).pool.checkedout() for key in ("default", "logs")} == {
            "default": 0,
            "logs": 0,
        }
    assert db.fetch("select name from accounts") == [("ada",)]
    assert logs.fetch("select message from audit_entries") == [("ada",)]
    [message] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert message.endswith(
        "RuntimeError: the after_commit hook failed; committed: 'default', 'logs'; rolled back: (none)"
    )


@pytest.mark.parametrize("kind", SQLITE_AND_POSTGRESQL)
async def test_a_cancel_scope_that_times_out_a_request_mid_commit_still_catches_its_cancellation(
    kind: str, new_db: Callable[[str], Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = new_db(kind)
    plugin = make_plugin({"default": db, "logs": new_db(kind)})
    app = Litestar(route_handlers=[add_account_quickly], plugins=[plugin], logging_config=None)
    caplog.set_level(logging.WARNING, logger="plugin")
    loop = asyncio.get_running_loop()
    async with app.lifespan():
        engine = plugin.engines.sync_engine("default")
        with anyio.CancelScope() as timeout:  # what an anyio-based timeout middleware (move_on_after) does

            def time_out_at_commit(_connection: Any) -> None:
                loop.call_soon(timeout.cancel)  # delivered while COMMIT is awaited

            event.listen(engine, "commit", time_out_at_commit)
            try:
                await asgi.http(app, "POST", "/accounts-quick/ada")
            finally:
                event.remove(engine, "commit", time_out_at_commit)
        assert timeout.cancelled_caught  # the scope's own cancellation came back to it, and stopped there
    assert db.fetch("select name from accounts") == [("ada",)]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "the task was cancelled while its transaction was being settled; settled anyway: committed: 'default'"
    ]
