"""What routing a statement by its tables costs: the routed session against a session pinned to the bind.

Run (SQLite, no server needed)::

    .venv/bin/python -m bench.routing            # --rounds 21 --statements 2000

The routed session (``db_session``, ``plugin.session()``) finds each statement's bind from the tables it
uses: the first time a statement of a new structure runs, by walking it; every later time, by one lookup
keyed on SQLAlchemy's cache key of the statement (which SQLAlchemy computes and memoizes anyway to find
the compiled SQL). A pinned session (``<bind>_db_session``, ``plugin.session("default")``) routes
nothing: every statement goes to its bind. Both run the same statements on the same SQLite file, in one
process, interleaved round by round; each runs in a session of its own, in one transaction, with
``populate_existing`` so that every ``get`` reaches the database.

Statements: ``get`` (``session.get(Item, pk)``: the ORM names the model); ``select`` (``select(Item)``
with a ``WHERE``); ``join`` (two models joined along a relationship); ``union`` (``union_all`` of two ORM
selects: SQLAlchemy names no model, so only the tables route it). Printed: CPU microseconds per
statement for each session, and the routed session's throughput relative to the pinned one's (1.00x:
routing costs nothing measurable; the median of the per-round ratios, the quartiles in brackets).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, String, select, union_all
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from plugin import SQLAlchemyPlugin, SQLAlchemySyncConfig

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

ROWS = 100


class Base(DeclarativeBase):
    pass


class Owner(Base):
    __tablename__ = "bench_owners"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


class Item(Base):
    __tablename__ = "bench_route_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    owner_id: Mapped[int] = mapped_column(ForeignKey("bench_owners.id"))
    owner: Mapped[Owner] = relationship()


def _get(session: Session, n: int) -> Any:
    return session.get(Item, n % ROWS + 1, populate_existing=True)


def _select(session: Session, n: int) -> Any:
    return session.execute(select(Item).where(Item.id == n % ROWS + 1)).scalar_one()


def _join(session: Session, n: int) -> Any:
    statement = select(Item.name, Owner.name).join(Item.owner).where(Item.id == n % ROWS + 1)
    return session.execute(statement).one()


def _union(session: Session, n: int) -> Any:
    key = n % ROWS + 1
    statement = union_all(select(Item.id).where(Item.id == key), select(Item.id).where(Item.id == key + 1))
    return session.execute(statement).all()


STATEMENTS: dict[str, Callable[[Session, int], Any]] = {"get": _get, "select": _select, "join": _join, "union": _union}


def _time(plugin: SQLAlchemyPlugin[SQLAlchemySyncConfig], bind: str | None, run: Callable[..., Any], n: int) -> float:
    """CPU microseconds per statement for ``n`` statements in one session (routed when ``bind`` is None)."""
    with plugin.session(bind) as session:
        run(session, 0)  # begin the transaction, and compile the statement once
        gc.collect()
        started = time.process_time()
        for i in range(n):
            run(session, i)
        return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds")
    parser.add_argument("--statements", type=int, default=2000, help="statements per session and round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'routing.db'}"
        plugin = SQLAlchemyPlugin(config=SQLAlchemySyncConfig(binds={"default": url}, base=Base, create_all=True))
        with plugin.lifespan():
            with plugin.transaction() as session:
                session.add_all([Owner(id=i, name=f"owner {i}") for i in range(1, ROWS + 2)])
                session.add_all([Item(id=i, name=f"item {i}", owner_id=i) for i in range(1, ROWS + 2)])
            times: dict[tuple[str, str], list[float]] = {}
            for round_ in range(args.rounds):
                for name, run in STATEMENTS.items():
                    order = ("routed", "pinned") if round_ % 2 else ("pinned", "routed")
                    for kind in order:
                        cost = _time(plugin, None if kind == "routed" else "default", run, args.statements)
                        times.setdefault((name, kind), []).append(cost)
    print(f"python {sys.version.split()[0]}; {args.rounds} rounds x {args.statements} statements; SQLite file\n")
    print("| statement | routed (us CPU) | pinned (us CPU) | routed / pinned (throughput) |")
    print("|---|---:|---:|---:|")
    for name in STATEMENTS:
        routed, pinned = times[(name, "routed")], times[(name, "pinned")]
        ratios = sorted(p / r for r, p in zip(routed, pinned, strict=True))
        low, _, high = statistics.quantiles(ratios, n=4)
        line = f"| {name} | {statistics.median(routed):.1f} | {statistics.median(pinned):.1f} |"
        print(f"{line} {statistics.median(ratios):.3f}x ({low:.3f}-{high:.3f}) |")


if __name__ == "__main__":
    main()
