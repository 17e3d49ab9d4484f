"""Where the load suite's memory growth comes from: Python allocations by file, with tracemalloc.

Run (PostgreSQL)::

    .venv/bin/python -m bench.memory            # --warm-up 4000 --requests 10000

Drives ``bench/load_app.py`` (this plugin, two PostgreSQL binds) in process through ASGI with the load
suite's kinds of request, each with a unique path, as the load suite does. After a warm-up it measures
traced Python memory over two equal stretches of requests. Allocations that level off are caches; a
leak keeps growing at the same pace. The files that grew most are listed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tracemalloc
import uuid
from typing import Any

from bench.load_setup import Databases

KINDS = ("ok", "ok", "ok", "raise", "reject", "duplicate")


async def post(app: Any, path: str) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("bench", 80), "state": {}}  # fmt: skip
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if done.is_set():
            await asyncio.Event().wait()
        done.set()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)


async def stretch(app: Any, requests: int) -> None:
    for n in range(requests):
        await post(app, f"/orders/{uuid.uuid4().hex[:12]}/{KINDS[n % len(KINDS)]}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-up", type=int, default=4000)
    parser.add_argument("--requests", type=int, default=10_000, help="requests in each measured stretch")
    args = parser.parse_args()
    databases = Databases()
    os.environ["LOAD_DEFAULT_URL"], os.environ["LOAD_LOGS_URL"] = databases.url("default"), databases.url("logs")
    from bench.load_app import create_app

    app = create_app()
    try:
        async with app.lifespan():
            await stretch(app, args.warm_up)
            gc.collect()
            tracemalloc.start(10)
            before = tracemalloc.take_snapshot()
            start = tracemalloc.get_traced_memory()[0]
            sizes = []
            for _ in range(2):
                await stretch(app, args.requests)
                gc.collect()
                sizes.append(tracemalloc.get_traced_memory()[0] - start)
            after = tracemalloc.take_snapshot()
        first, second = sizes[0], sizes[1] - sizes[0]
        print(f"traced Python memory after a {args.warm_up:,}-request warm-up:")
        print(f"  first {args.requests:,} requests: {first / 1024:+,.0f} KiB")
        print(f"  next {args.requests:,} requests:  {second / 1024:+,.0f} KiB")
        print("\ngrowth by file (both stretches):")
        for stat in after.compare_to(before, "filename")[:8]:
            print(f"  {stat.size_diff / 1024:+8.1f} KiB  {stat.traceback[0].filename}")
    finally:
        databases.drop()


if __name__ == "__main__":
    asyncio.run(main())
