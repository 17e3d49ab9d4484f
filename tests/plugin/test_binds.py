"""The bind router: which bind each model, table and statement goes to, and what lives where."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from plugin import BIND_KEY, BindKeyError, BindRouter, CrossBindError
from tests.plugin.models import Account, AuditEntry, Base, Metric, MetricsBase, events, logs_metadata


class ReportsBase(DeclarativeBase):
    metadata = MetaData(info={BIND_KEY: "reports"})


class Report(ReportsBase):
    """Routed by its base's MetaData, not by __bind_key__."""

    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(primary_key=True)


def router(*keys: str) -> BindRouter:
    return BindRouter(("default", *keys), "default", (Base, logs_metadata, MetricsBase, ReportsBase))


def test_models_route_by_bind_key_inherited_key_and_metadata() -> None:
    r = router("logs", "metrics", "reports")
    assert r.key_for_mapper(Account) == "default"
    assert r.key_for_mapper(AuditEntry) == "logs"  # __bind_key__ from an abstract base
    assert r.key_for_mapper(Metric) == "metrics"
    assert r.key_for_mapper(Report) == "reports"  # MetaData(info={"bind_key": ...})


def test_core_statements_route_by_their_tables() -> None:
    r = router("logs", "metrics", "reports")
    assert r.key_for(clause=select(events)) == "logs"
    assert r.key_for(clause=insert(events).values(kind="x")) == "logs"
    assert r.key_for(clause=select(AuditEntry.__table__)) == "logs"  # a mapped table follows its model
    assert r.key_for(clause=select(Account.__table__)) == "default"
    assert r.key_for(clause=text("select 1")) == "default"
    assert r.key_for() == "default"
    assert r.key_for(Account, clause=select(events)) == "logs"  # the tables decide, not the first entity


def test_a_statement_over_two_binds_names_its_tables_and_binds() -> None:
    with pytest.raises(CrossBindError) as raised:
        router("logs").key_for(Account, clause=select(Account.name).where(Account.id.in_(select(events.c.id))))
    assert str(raised.value).startswith(
        "one statement uses tables of different binds ('accounts' on bind 'default'; 'events' on bind 'logs')"
    )


def test_an_unknown_key_at_routing_time_names_the_model() -> None:
    with pytest.raises(BindKeyError) as raised:
        router("logs").key_for_mapper(Metric)
    assert str(raised.value) == (
        "model 'Metric' has __bind_key__ = 'metrics', which is not a configured bind "
        "(configured: 'default', 'logs'); add 'metrics' to binds= or fix the model"
    )


def test_an_unknown_table_key_names_the_table() -> None:
    orphans = Table("orphans", MetaData(info={BIND_KEY: "nowhere"}), Column("id", Integer, primary_key=True))
    with pytest.raises(BindKeyError, match=r"^table 'orphans' has MetaData.info\['bind_key'\] = 'nowhere'"):
        router().key_for(clause=select(orphans))


def test_inventory_by_bind() -> None:
    r = router("logs", "metrics", "reports")
    assert {k: [m.class_.__name__ for m in v] for k, v in r.models_by_bind().items()} == {
        "default": ["Account"],
        "logs": ["AuditEntry"],
        "metrics": ["Metric"],
        "reports": ["Report"],
    }
    assert {k: [t.name for t in v] for k, v in r.tables_by_bind().items()} == {
        "default": ["accounts"],
        "logs": ["audit_entries", "events"],
        "metrics": ["metrics"],
        "reports": ["reports"],
    }
    assert r.unknown_keys() == []


def test_unknown_keys_are_listed_not_routed() -> None:
    r = router("logs")
    assert [(p.kind, p.name, p.key) for p in r.unknown_keys()] == [
        ("model", "Metric", "metrics"),
        ("model", "Report", "reports"),
    ]
    assert [m.class_.__name__ for m in r.models_by_bind()["default"]] == ["Account"]


def test_a_model_outside_base_still_routes_by_its_own_key() -> None:
    r = BindRouter(("default", "logs", "metrics"), "default", (Base,))  # MetricsBase left out
    assert r.key_for(clause=select(Metric)) == "metrics"
    assert r.key_for(Metric, clause=select(Metric.value)) == "metrics"


def test_a_lightweight_table_goes_to_the_default_bind() -> None:
    from sqlalchemy import column, table

    assert router("logs").key_for(clause=select(table("accounts", column("id")))) == "default"
