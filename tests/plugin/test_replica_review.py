"""Adversarial review of read replicas (issue 15): writes the routing did not see, cookies it choked on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from plugin import BindConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from tests.plugin.test_replicas import SECRET, WHERE, Base, Note, get_that_writes, new_id, replica_engine

if TYPE_CHECKING:
    from tests.faults import PrivateCluster
    from tests.faults.standby import PrivateStandby

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql]


@get("/connection-writes/{note_id:int}")
async def connection_writes(note_id: FromPath[int], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    connection = await db_session.connection()
    await connection.execute(text("insert into notes (id, body) values (:id, 'via connection()')"), {"id": note_id})
    read = await db_session.scalar(select(Note.body).where(Note.id == note_id))
    return {"body": read, "served_by": list((await db_session.execute(WHERE)).one())}


@get("/cte-writes/{note_id:int}")
async def cte_writes(note_id: FromPath[int], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    added = insert(Note).values(id=note_id, body="via a CTE").returning(Note.id).cte("added")
    ids = list(await db_session.scalars(select(added.c.id)))
    removed = delete(Note).where(Note.id == note_id).returning(Note.id).cte("removed")
    gone = list(await db_session.scalars(select(removed.c.id)))
    return {"added": ids, "removed": gone, "served_by": list((await db_session.execute(WHERE)).one())}


@get("/dialect-then-read")
async def dialect_then_read(db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    dialect = db_session.get_bind().dialect.name  # what repositories ask before their first query
    return {"dialect": dialect, "served_by": list((await db_session.execute(WHERE)).one())}


@get("/bulk-insert/{note_id:int}")
async def bulk_insert(note_id: FromPath[int], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    await db_session.run_sync(lambda s: s.bulk_insert_mappings(Note, [{"id": note_id, "body": "bulk"}]))
    read = await db_session.scalar(select(Note.body).where(Note.id == note_id))
    return {"body": read, "served_by": list((await db_session.execute(WHERE)).one())}


def review_app(primary: PrivateCluster, standby: PrivateStandby, database: str, **options: Any) -> Litestar:
    bind = BindConfig(
        url=primary.url(database),
        engine_options={"connect_args": {"server_settings": {"application_name": "primary"}}},
        replicas=[replica_engine(standby, database, "r1")],
        **options,
    )
    config = SQLAlchemyAsyncConfig(binds={"default": bind}, base=Base, sticky_secret=SECRET)
    handlers = [connection_writes, cte_writes, dialect_then_read, bulk_insert]
    return Litestar(route_handlers=handlers, plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)


@pytest.fixture
def pair(replica_pair: tuple[PrivateCluster, PrivateStandby]) -> tuple[PrivateCluster, PrivateStandby]:
    return replica_pair


@pytest.fixture(scope="module")
def review_db(replica_pair: tuple[PrivateCluster, PrivateStandby]) -> Any:
    primary, standby = replica_pair
    name = primary.create_database()
    primary.execute("create table notes (id integer primary key, body varchar(40))", database=name)
    standby.wait_caught_up()
    yield name
    primary.drop_database(name)


async def test_a_get_that_writes_through_session_connection_reads_its_own_write(
    pair: tuple[PrivateCluster, PrivateStandby], review_db: str
) -> None:
    primary, standby = pair
    note = new_id()
    async with AsyncTestClient(review_app(primary, standby, review_db)) as client:
        response = await client.get(f"/connection-writes/{note}")

    assert response.status_code == 200
    assert response.json() == {"body": "via connection()", "served_by": [False, "primary"]}


async def test_a_get_whose_select_has_a_data_modifying_cte_runs_it_on_the_primary(
    pair: tuple[PrivateCluster, PrivateStandby], review_db: str
) -> None:
    primary, standby = pair
    note = new_id()
    async with AsyncTestClient(review_app(primary, standby, review_db)) as client:
        response = await client.get(f"/cte-writes/{note}")

    assert response.status_code == 200, response.text
    assert response.json() == {"added": [note], "removed": [note], "served_by": [False, "primary"]}


async def test_a_sticky_cookie_with_foreign_characters_is_ignored_not_a_server_error(
    pair: tuple[PrivateCluster, PrivateStandby], review_db: str
) -> None:
    primary, standby = pair
    app = review_app(primary, standby, review_db, sticky_seconds=5)
    async with AsyncTestClient(app) as client:
        response = await client.get(
            f"/connection-writes/{new_id()}",
            headers={"cookie": "db_primary_until=default:9999999999.000|sig\xe9".encode("latin-1")},
        )

    assert response.status_code == 200, response.text


async def test_a_two_phase_get_that_read_the_replica_then_wrote_commits_its_write(
    pair: tuple[PrivateCluster, PrivateStandby], review_db: str
) -> None:
    primary, standby = pair
    bind = BindConfig(url=primary.url(review_db), replicas=[replica_engine(standby, review_db, "r1")])
    logs = primary.url(review_db)  # a second bind on the same database: enough for two-phase commit
    config = SQLAlchemyAsyncConfig(binds={"default": bind, "logs": logs}, base=Base, two_phase=True)
    app = Litestar([get_that_writes], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)
    note = new_id()
    async with AsyncTestClient(app) as client:
        response = await client.get(f"/get-that-writes/{note}")

    assert response.status_code == 200, response.text
    assert response.json() == {"before": [True, "r1"], "body": "from a GET", "after": [False, ""]}
    assert primary.execute(f"select body from notes where id = {note}", database=review_db) == [("from a GET",)]
    assert primary.prepared_transactions(review_db) == []


async def test_a_dialect_question_does_not_pin_but_a_bulk_insert_does(
    pair: tuple[PrivateCluster, PrivateStandby], review_db: str
) -> None:
    primary, standby = pair
    note = new_id()
    async with AsyncTestClient(review_app(primary, standby, review_db)) as client:
        asked = await client.get("/dialect-then-read")
        bulk = await client.get(f"/bulk-insert/{note}")

    assert asked.json() == {"dialect": "postgresql", "served_by": [True, "r1"]}
    assert bulk.json() == {"body": "bulk", "served_by": [False, "primary"]}
