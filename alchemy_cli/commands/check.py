"""``litestar db check``: every bind reachable, how fast, which server, schema matching the models."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

import typer

from alchemy_cli import render
from alchemy_cli.loader import engines_started, load_target, reported_errors, require_binds
from plugin.checks import check_binds
from plugin.replica_checks import check_replicas

if TYPE_CHECKING:
    from plugin.checks import CheckReport


def run(obj: object, *, binds: list[str], timeout: float, json_output: bool, max_lag: float | None = None) -> None:
    target = load_target(obj)
    plugin = target.plugin
    require_binds(target, binds)

    async def check() -> CheckReport:
        async with engines_started(plugin):
            report, replicas = await asyncio.gather(
                check_binds(
                    plugin.engines, plugin.router, binds or None, timeout, migrations=plugin.config.migration_configs
                ),
                check_replicas(plugin.engines, binds or plugin.router.keys, timeout, max_lag),
            )
            return dataclasses.replace(report, replicas=replicas)

    with reported_errors():
        report = asyncio.run(check())
    report = dataclasses.replace(
        report,
        binds=tuple(dataclasses.replace(c, error=target.redact(c.error)) if c.error else c for c in report.binds),
        replicas=tuple(dataclasses.replace(c, error=target.redact(c.error)) if c.error else c for c in report.replicas),
    )
    if json_output:
        render.json_document(_as_json(target.app_path, timeout, report, max_lag))
    else:
        render.checks(target.app_path, report, timeout)
    if not report.ok:
        raise typer.Exit(1)


def _as_json(app_path: str, timeout: float, report: CheckReport, max_lag: float | None) -> dict[str, Any]:
    """The ``db check --json`` document (shape documented in the README)."""
    return {
        "app": app_path,
        "ok": report.ok,
        "timeout_s": timeout,
        "max_lag_s": max_lag,
        "binds": [
            {
                "bind": c.bind,
                "ok": c.ok,
                "url": c.url,
                "connect_ms": None if c.connect_ms is None else round(c.connect_ms, 3),
                "latency_ms": None if c.latency_ms is None else round(c.latency_ms, 3),
                "server": c.server,
                "tables": c.tables,
                "missing_tables": list(c.missing_tables),
                "missing_columns": list(c.missing_columns),
                "prepared_transactions": [
                    {"xid": p.xid, "commit": p.commit, "rollback": p.rollback} for p in c.prepared
                ],
                "error": c.error,
                "migrations": c.migrations.as_dict() if c.migrations else None,
            }
            for c in report.binds
        ],
        "replicas": [
            {
                "bind": r.bind,
                "replica": r.replica,
                "ok": r.ok,
                "url": r.url,
                "connect_ms": None if r.connect_ms is None else round(r.connect_ms, 3),
                "latency_ms": None if r.latency_ms is None else round(r.latency_ms, 3),
                "server": r.server,
                "lag_s": None if r.lag_s is None else round(r.lag_s, 3),
                "state": r.state,
                "error": r.error,
            }
            for r in report.replicas
        ],
        "unknown_bind_keys": [{"kind": p.kind, "name": p.name, "bind": p.key} for p in report.unknown_bind_keys],
        "bind_conflicts": [{"kind": c.kind, "name": c.name, "message": c.message} for c in report.bind_conflicts],
    }
