"""``litestar db binds``: what points where, and which models live where."""

from __future__ import annotations

import asyncio

from alchemy_cli import render
from alchemy_cli.inspection import as_json, describe
from alchemy_cli.loader import engines_started, load_target, reported_errors


def run(obj: object, *, models: bool, json_output: bool) -> None:
    target = load_target(obj)

    async def gather() -> tuple[list, list]:  # type: ignore[type-arg]
        async with engines_started(target.plugin):
            return describe(target.plugin)

    with reported_errors():
        bind_facts, model_facts = asyncio.run(gather())
    if json_output:
        render.json_document(as_json(target.app_path, target.plugin.config.default_bind, bind_facts, model_facts))
    else:
        render.binds(target.app_path, bind_facts, model_facts if models else None)
