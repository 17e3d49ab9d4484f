"""Read replicas against a real PostgreSQL hot standby (tests/faults/standby.py) that applies the primary's
commits 2 s late: a read served by the standby right after a write on the primary does not see it.

Which server answered is read from the connection that served the statement: ``pg_is_in_recovery()`` is
true only on the standby, and each replica engine sets its own ``application_name``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, Request, Response, WebSocket, get, post, route, websocket
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from sqlalchemy import String, create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin, SQLAlchemySyncConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.faults import PrivateCluster
    from tests.faults.standby import PrivateStandby

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql]

SECRET = "test-sticky-secret-0123456789"


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(40))


WHERE = text("select pg_is_in_recovery(), current_setting('application_name')")


async def where(session: AsyncSession) -> list[Any]:
    """[standby?, application_name] of the connection that serves a read of ``session`` now."""
    return list((await session.execute(WHERE)).one())


@get("/where")
async def where_twice(db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    first = await where(db_session)
    await asyncio.sleep(0)
    return {"first": first, "second": await where(db_session)}


@get("/notes/{note_id:int}")
async def read_note(note_id: FromPath[int], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    note = await db_session.get(Note, note_id)
    return {"body": note.body if note else None, "served_by": await where(db_session)}


@post("/notes/{note_id:int}/{text_body:str}")
async def write_then_read(
    note_id: FromPath[int], text_body: FromPath[str], db_session: NamedDependency[AsyncSession]
) -> dict[str, Any]:
    db_session.add(Note(id=note_id, body=text_body))
    await db_session.flush()
    db_session.expunge_all()  # read it back from the database, not from the identity map
    read = await db_session.scalar(select(Note.body).where(Note.id == note_id))
    return {"body": read, "served_by": await where(db_session)}


@get("/get-that-writes/{note_id:int}")
async def get_that_writes(note_id: FromPath[int], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    before = await where(db_session)
    await db_session.execute(text("insert into notes (id, body) values (:id, 'from a GET')"), {"id": note_id})
    read = await db_session.scalar(select(Note.body).where(Note.id == note_id))
    return {"before": before, "body": read, "after": await where(db_session)}


@get("/forced")
async def forced(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    plugin = next(p for p in request.app.plugins if isinstance(p, SQLAlchemyPlugin))
    with plugin.primary():
        inside = await where(db_session)
    one = list((await db_session.execute(WHERE, bind_arguments={"primary": True})).one())
    return {"inside": inside, "after": await where(db_session), "one_statement": one, "then": await where(db_session)}


def replica_engine(standby: PrivateStandby, database: str, name: str) -> AsyncEngine:
    return create_async_engine(
        standby.url(database), connect_args={"server_settings": {"application_name": name}}, pool_size=2
    )


def app_for(
    primary: PrivateCluster, replicas: list[Any], database: str, **options: Any
) -> tuple[Litestar, SQLAlchemyPlugin[Any]]:
    bind = BindConfig(
        url=primary.url(database),
        engine_options={"connect_args": {"server_settings": {"application_name": "primary"}}},
        replicas=replicas,
        **options,
    )
    config = SQLAlchemyAsyncConfig(binds={"default": bind}, base=Base, sticky_secret=SECRET)
    plugin = SQLAlchemyPlugin(config=config)
    handlers = [where_twice, read_note, write_then_read, get_that_writes, forced]
    return Litestar(route_handlers=handlers, plugins=[plugin], logging_config=None), plugin


@pytest.fixture(scope="module")
def replica_db(replica_pair: tuple[PrivateCluster, PrivateStandby]) -> Iterator[str]:
    """A database with the ``notes`` table on the primary, already replayed by the standby."""
    primary, standby = replica_pair
    name = primary.create_database()
    primary.execute("create table notes (id integer primary key, body varchar(40))", database=name)
    standby.wait_caught_up()
    yield name
    primary.drop_database(name)


@pytest.fixture
def pair(replica_pair: tuple[PrivateCluster, PrivateStandby]) -> Iterator[tuple[PrivateCluster, PrivateStandby]]:
    yield replica_pair
    replica_pair[1].start()  # a test that stopped the standby leaves it running for the next one


_ids = iter(range(1000, 100_000))


def new_id() -> int:
    return next(_ids)


async def test_a_get_reads_from_the_replica(pair: tuple[PrivateCluster, PrivateStandby], replica_db: str) -> None:
    primary, standby = pair
    app, _ = app_for(primary, [replica_engine(standby, replica_db, "r1")], replica_db)
    note = new_id()
    primary.execute(f"insert into notes values ({note}, 'fresh')", database=replica_db)
    async with AsyncTestClient(app) as client:
        stale = (await client.get(f"/notes/{note}")).json()
        standby.wait_caught_up()
        caught_up = (await client.get(f"/notes/{note}")).json()

    assert stale == {"body": None, "served_by": [True, "r1"]}  # the standby had not applied it yet
    assert caught_up == {"body": "fresh", "served_by": [True, "r1"]}


async def test_two_reads_of_one_get_hit_the_same_replica(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    replicas = [replica_engine(standby, replica_db, "r1"), replica_engine(standby, replica_db, "r2")]
    app, _ = app_for(primary, replicas, replica_db)
    async with AsyncTestClient(app) as client:
        answers = [(await client.get("/where")).json() for _ in range(4)]

    assert [a["first"] for a in answers] == [[True, "r1"], [True, "r2"], [True, "r1"], [True, "r2"]]  # round robin
    assert all(a["first"] == a["second"] for a in answers)  # within a request: the replica it picked


async def test_random_selection_also_keeps_one_replica_per_request(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    replicas = [replica_engine(standby, replica_db, "r1"), replica_engine(standby, replica_db, "r2")]
    app, _ = app_for(primary, replicas, replica_db, replica_selection="random")
    async with AsyncTestClient(app) as client:
        answers = [(await client.get("/where")).json() for _ in range(12)]

    assert all(a["first"] == a["second"] for a in answers)
    assert {a["first"][1] for a in answers} == {"r1", "r2"}  # 12 draws: both, except with probability 1/2048


async def test_a_post_that_writes_then_reads_sees_its_own_write(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    app, _ = app_for(primary, [replica_engine(standby, replica_db, "r1")], replica_db)
    note = new_id()
    async with AsyncTestClient(app) as client:
        written = await client.post(f"/notes/{note}/mine")
        right_after = (await client.get(f"/notes/{note}")).json()

    assert written.status_code == 201
    assert written.json() == {"body": "mine", "served_by": [False, "primary"]}
    assert right_after == {"body": None, "served_by": [True, "r1"]}  # the next GET reads the (late) replica


async def test_a_get_that_writes_reads_the_primary_from_then_on(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    app, _ = app_for(primary, [replica_engine(standby, replica_db, "r1")], replica_db)
    note = new_id()
    async with AsyncTestClient(app) as client:
        answer = (await client.get(f"/get-that-writes/{note}")).json()

    assert answer == {"before": [True, "r1"], "body": "from a GET", "after": [False, "primary"]}
    assert primary.execute(f"select body from notes where id = {note}", database=replica_db) == [("from a GET",)]


async def test_a_stopped_replica_falls_back_to_the_primary_with_one_warning(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    primary, standby = pair
    app, _ = app_for(primary, [replica_engine(standby, replica_db, "r1")], replica_db)
    async with AsyncTestClient(app) as client:
        before = await client.get("/where")  # leaves a pooled connection to the standby
        standby.stop()
        with caplog.at_level(logging.WARNING, logger="plugin.replicas"):
            during = [await client.get("/where") for _ in range(3)]
        standby.start()

    assert before.json()["first"] == [True, "r1"]
    assert [r.status_code for r in during] == [200, 200, 200]
    assert all(r.json() == {"first": [False, "primary"], "second": [False, "primary"]} for r in during)
    warnings = [r for r in caplog.records if r.name == "plugin.replicas"]
    assert len(warnings) == 1  # then it cools down: skipped without trying
    assert warnings[0].levelno == logging.WARNING
    assert (
        warnings[0]
        .getMessage()
        .startswith(
            f"bind 'default': replica 1 (postgresql+asyncpg://postgres@127.0.0.1:{standby.port}/{replica_db}) "
            "failed to connect ("
        )
    )
    assert warnings[0].getMessage().endswith("it is skipped for 30 s, reads go to the primary")


async def test_the_next_replica_serves_when_one_cannot_connect(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str, refused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    primary, standby = pair
    dead = f"postgresql+asyncpg://app:s3cret-pw@127.0.0.1:{refused_port}/{replica_db}"
    app, _ = app_for(primary, [dead, replica_engine(standby, replica_db, "r2")], replica_db)
    with caplog.at_level(logging.WARNING, logger="plugin.replicas"):
        async with AsyncTestClient(app) as client:
            answers = [(await client.get("/where")).json() for _ in range(3)]

    assert all(a == {"first": [True, "r2"], "second": [True, "r2"]} for a in answers)
    messages = [r.getMessage() for r in caplog.records if r.name == "plugin.replicas"]
    assert len(messages) == 1
    assert f"replica 1 (postgresql+asyncpg://app:***@127.0.0.1:{refused_port}/{replica_db})" in messages[0]
    assert messages[0].endswith("reads go to replica 2")
    assert "s3cret-pw" not in caplog.text


async def test_sticky_seconds_keep_a_writer_on_the_primary_then_expire(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    app, _ = app_for(primary, [replica_engine(standby, replica_db, "r1")], replica_db, sticky_seconds=1.5)
    note = new_id()
    async with AsyncTestClient(app) as client:
        written = await client.post(f"/notes/{note}/sticky")
        cookie = written.headers["set-cookie"]
        sticky = (await client.get(f"/notes/{note}")).json()  # the client sends the cookie back
        value = client.cookies["db_primary_until"]
        client.cookies.clear()  # another client, without the cookie, reads the replica
        other = (await client.get(f"/notes/{note}")).json()
        client.cookies.set("db_primary_until", value[:-2] + "xx")  # a forged signature is ignored
        forged = (await client.get(f"/notes/{note}")).json()
        client.cookies.set("db_primary_until", value)
        time.sleep(1.6)
        expired = (await client.get("/where")).json()

    assert cookie.startswith("db_primary_until=default:")
    assert "; Max-Age=2; Path=/; HttpOnly; SameSite=Lax" in cookie
    assert sticky == {"body": "sticky", "served_by": [False, "primary"]}
    assert other == {"body": None, "served_by": [True, "r1"]}
    assert forged["served_by"] == [True, "r1"]
    assert expired["first"] == [True, "r1"]


async def test_every_replica_engine_is_disposed_at_shutdown(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    url = standby.url(replica_db)  # made by the plugin, with the bind's engine_options (application_name)
    given = replica_engine(standby, replica_db, "given")
    app, plugin = app_for(primary, [url, url, given], replica_db)

    def open_on_standby() -> dict[str, int]:
        rows = standby.execute(
            "select application_name, count(*) from pg_stat_activity where datname = %s group by 1", [replica_db]
        )
        return dict(rows)

    async with AsyncTestClient(app) as client:
        served = [(await client.get("/where")).json()["first"] for _ in range(3)]
        while_running = open_on_standby()
        engines = plugin.engines.replicas("default")
    after = open_on_standby()

    assert served == [[True, "primary"], [True, "primary"], [True, "given"]]  # each replica served one GET
    assert len(engines) == 3
    assert while_running == {"primary": 2, "given": 1}  # pooled after their requests
    assert after == {}  # every replica engine was disposed, the given one too


async def test_primary_is_forced_for_a_block_or_a_statement(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    app, _ = app_for(primary, [replica_engine(standby, replica_db, "r1")], replica_db)
    async with AsyncTestClient(app) as client:
        answer = (await client.get("/forced")).json()

    assert answer == {
        "inside": [False, "primary"],
        "after": [True, "r1"],  # reading on the primary pins nothing
        "one_statement": [False, "primary"],
        "then": [True, "r1"],
    }


async def test_sessions_outside_requests_use_the_primary_unless_asked(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    _, plugin = app_for(primary, [replica_engine(standby, replica_db, "r1")], replica_db)
    note = new_id()
    async with plugin.lifespan():
        async with plugin.session() as session:
            plain = await where(session)
        async with plugin.session(replica=True) as session:
            asked = await where(session)
        async with plugin.transaction(replica=True) as session:
            before = await where(session)
            session.add(Note(id=note, body="script"))
            await session.flush()
            after = await where(session)
        async with plugin.transaction() as session:
            unit = await where(session)

    assert plain == [False, "primary"]
    assert asked == [True, "r1"]
    assert (before, after) == ([True, "r1"], [False, "primary"])
    assert unit == [False, "primary"]
    assert primary.execute(f"select body from notes where id = {note}", database=replica_db) == [("script",)]


async def test_two_phase_configs_read_from_replicas_and_commit_writes(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    bind = BindConfig(url=primary.url(replica_db), replicas=[replica_engine(standby, replica_db, "r1")])
    logs = primary.url(replica_db)  # a second bind on the same database: enough for two-phase commit
    config = SQLAlchemyAsyncConfig(binds={"default": bind, "logs": logs}, base=Base, two_phase=True)
    app = Litestar([where_twice, write_then_read], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    note = new_id()
    async with AsyncTestClient(app) as client:
        read = await client.get("/where")
        written = await client.post(f"/notes/{note}/twophase")

    assert read.status_code == 200
    assert read.json()["first"][0] is True
    assert written.status_code == 201
    assert written.json()["body"] == "twophase"
    assert primary.execute(f"select body from notes where id = {note}", database=replica_db) == [("twophase",)]
    assert primary.prepared_transactions(replica_db) == []


@get("/where-sync", sync_to_thread=True)
def where_sync(db_session: NamedDependency[Session]) -> list[Any]:
    return list(db_session.execute(WHERE).one())


async def test_sync_apps_read_from_the_replica_and_fall_back(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    primary, standby = pair
    sync_url = standby.url(replica_db, driver="postgresql+psycopg")
    replica = create_engine(sync_url, connect_args={"application_name": "sync-r1"})
    bind = BindConfig(
        url=primary.url(replica_db, driver="postgresql+psycopg"),
        engine_options={"connect_args": {"application_name": "primary"}},
        replicas=[replica],
    )
    config = SQLAlchemySyncConfig(binds={"default": bind}, base=Base)
    app = Litestar([where_sync], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    async with AsyncTestClient(app) as client:
        served = (await client.get("/where-sync")).json()
        standby.stop()
        # A replica that fails to connect (the promise). A pooled psycopg connection is only noticed dead
        # when the server's goodbye has reached its idle socket, which under load it sometimes has not
        # (the README's "Where the guarantees stop"): start from an empty pool, so the read must connect.
        replica.dispose()
        with caplog.at_level(logging.WARNING, logger="plugin.replicas"):
            fallback = await client.get("/where-sync")
        standby.start()

    assert served == [True, "sync-r1"]
    assert (fallback.status_code, fallback.json()) == (200, [False, "primary"])
    assert len([r for r in caplog.records if r.name == "plugin.replicas"]) == 1


@route("/any-method", http_method=["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"], status_code=200)
async def any_method(db_session: NamedDependency[AsyncSession]) -> Response[None]:
    standby, name = await where(db_session)
    return Response(None, headers={"x-served-by": f"{'standby' if standby else 'primary'} {name}"})


@websocket("/socket")
async def socket(socket: WebSocket[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> None:
    await socket.accept()
    await socket.send_json(await where(db_session))
    await socket.close()


async def test_only_safe_methods_read_from_replicas_and_websockets_use_the_primary(
    pair: tuple[PrivateCluster, PrivateStandby], replica_db: str
) -> None:
    primary, standby = pair
    bind = BindConfig(url=primary.url(replica_db), replicas=[replica_engine(standby, replica_db, "r1")])
    config = SQLAlchemyAsyncConfig(binds={"default": bind}, base=Base)
    app = Litestar([any_method, socket], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    async with AsyncTestClient(app) as client:
        served = {
            method: (await client.request(method, "/any-method")).headers["x-served-by"]
            for method in ("GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE")
        }
        with await client.websocket_connect("/socket") as ws:
            over_socket = ws.receive_json()

    assert served == {
        "GET": "standby r1",
        "HEAD": "standby r1",
        "OPTIONS": "standby r1",
        "PUT": "primary ",
        "PATCH": "primary ",
        "DELETE": "primary ",
    }
    assert over_socket == [False, ""]
