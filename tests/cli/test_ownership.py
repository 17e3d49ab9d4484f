"""``db binds`` and ``db check`` place tables no model maps where routing and ``create_all`` do.

``tagged`` (tests/cli/apps.py) is advanced-alchemy's per-bind MetaData shape: models of the ``logs`` bind
share a MetaData with no bind key, and an association table on it belongs to ``logs``. ``mixed`` shares
one MetaData between binds and has a table no model maps: that one is reported as ambiguous.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import create_engine

from tests.cli.apps import ShopBase, TaggedBase, post_topics
from tests.cli.helpers import create_tables, flat

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Invocation
    from tests.databases import Database

AMBIGUOUS = (
    "table 'scratch' is not mapped and its MetaData is shared by models of several binds ('default' (Visit); "
    "'logs' (VisitLog)), so its bind cannot be told; give it a MetaData of its own with info={'bind_key': ...}, "
    "or one MetaData per bind shared by that bind's models"
)


def test_association_tables_are_listed_on_their_models_bind(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    binds = {"default": str(new_db("sqlite").url()), "logs": str(new_db("sqlite").url())}
    document = litestar("db", "binds", "--json", binds=binds, models="shop,tagged").json()
    assert [(b["key"], b["models"], b["tables"]) for b in document["binds"]] == [("default", 1, 1), ("logs", 2, 3)]
    assert [(m["model"], m["bind"], m["error"]) for m in document["models"]] == [
        ("Customer", "default", None),
        ("Post", "logs", None),
        ("Topic", "logs", None),
    ]


def test_check_looks_for_association_tables_on_their_models_bind(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    logs = new_db("sqlite")
    binds = {"default": create_tables(new_db("sqlite"), ShopBase), "logs": str(logs.url())}
    engine = create_engine(logs.url(sync=True))
    TaggedBase.metadata.create_all(
        engine, tables=[TaggedBase.metadata.tables["posts"], TaggedBase.metadata.tables["topics"]]
    )
    engine.dispose()

    missing = litestar("db", "check", "--json", binds=binds, models="shop,tagged").json()
    engine = create_engine(logs.url(sync=True))
    post_topics.create(engine)
    engine.dispose()
    complete = litestar("db", "check", "--json", binds=binds, models="shop,tagged").json()

    assert [(b["bind"], b["tables"], b["missing_tables"]) for b in missing["binds"]] == [
        ("default", 1, []),
        ("logs", 3, ["post_topics"]),
    ]
    assert complete["ok"] is True


def test_check_reports_a_table_whose_bind_cannot_be_told(
    litestar: Callable[..., Invocation], new_db: Callable[[str], Database]
) -> None:
    binds = {"default": str(new_db("sqlite").url()), "logs": str(new_db("sqlite").url())}
    result = litestar("db", "check", binds=binds, models="mixed")
    document = litestar("db", "check", "--json", binds=binds, models="mixed").json()

    assert result.exit_code == 1
    assert f"FAIL {AMBIGUOUS}" in flat(result.stdout)
    assert document["ok"] is False
    assert document["bind_conflicts"] == [{"kind": "ambiguous table", "name": "scratch", "message": AMBIGUOUS}]
    # the mapped tables are still checked on their binds; the ambiguous one on neither
    assert [(b["bind"], b["missing_tables"]) for b in document["binds"]] == [
        ("default", ["visits"]),
        ("logs", ["visit_log"]),
    ]
