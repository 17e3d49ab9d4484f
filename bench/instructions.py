"""The request path in CPU instructions: this plugin against the comparisons, counted, not timed.

Run (needs valgrind: ``apt-get install valgrind``; PostgreSQL at ``BENCH_POSTGRES_URL`` when asked for)::

    .venv-bench/bin/python -m bench.instructions      # --databases sqlite,postgresql --requests 200 --seeds 0,1,2,3

Wall-clock and CPU-time rates on a shared 2-core machine swing by tens of percent from one run to the next;
the number of user-space instructions a request executes does not (the same run twice agrees to 0.1 %).
Each cell runs the app of ``bench/request_path.py`` in a child process under ``valgrind --tool=callgrind``
twice per hash seed, serving ``--warm-up`` requests and then ``--warm-up + --requests``; the difference
divided by ``--requests`` is the cost of one request, start-up and warm-up cancelled out. Printed:
instructions per request (the mean over ``--seeds``, and the range) and, for this plugin, the ratio
``other / plugin`` of the means (read like a throughput ratio: above 1.0x the plugin does less work).

Why several seeds: one process's count is partly luck. CPython caches attribute lookups in a table of
4,096 entries indexed by the type's version tag and the name's address, so which hot lookups collide
there depends on the order classes were made and on where the names were allocated. With the same
``PYTHONHASHSEED`` a run repeats to 0.1 %; under another seed, or with one unused class made first, this
plugin's primary-key read moved by up to 4.6 % (docs/benchmarks.md).

What this leaves out: time in the kernel (socket I/O, the same for every app), the database server's work,
and cache misses. A difference in instructions is therefore larger, relative to the whole request, than
the difference in wall time or CPU time it causes; ``bench/request_path.py`` measures those.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.request_path import HANDLERS, build_app, drive, postgres_database, prepare

CELLS = {
    "a": ("plugin", "plain", "hand-written", "advanced-alchemy"),
    "b": ("plugin", "hand-written", "advanced-alchemy"),
    "c": ("plugin", "hand-written", "advanced-alchemy"),
}
"""For each handler, the apps measured; the first is this plugin, the others its comparisons."""


async def _serve(variant: str, handler: str, url: str, requests: int) -> None:
    method, path = HANDLERS[handler]
    app = build_app(variant, url)
    async with app.lifespan():
        await drive(app, method, path, requests)


def _instructions(variant: str, handler: str, url: str, requests: int, seed: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "bench.instructions", "--child", variant, handler, url, str(requests),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONHASHSEED": str(seed)}  # one seed, one layout of the attribute cache
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{variant} {handler} under callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(variant: str, handler: str, url: str, args: argparse.Namespace) -> list[float]:
    """User-space instructions one request of ``handler`` costs on ``variant``'s app, under each hash seed.

    Two runs at a time (instruction counts do not depend on the machine's load), halving the wait.
    """
    warm_up, requests = args.warm_up, args.requests
    with ThreadPoolExecutor(2) as pool:
        runs = [
            (
                pool.submit(_instructions, variant, handler, url, warm_up, seed),
                pool.submit(_instructions, variant, handler, url, warm_up + requests, seed),
            )
            for seed in args.seeds
        ]
        return [(total.result() - base.result()) / requests for base, total in runs]


def report(title: str, url: str, args: argparse.Namespace, handlers: list[str]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| handler | app | instructions / request (mean over seeds) | range over seeds | other / plugin |",
        "|---|---|---:|---:|---:|",
    ]
    for handler in handlers:
        variants = CELLS[handler]
        counts: dict[str, list[float]] = {}
        for variant in variants:
            counts[variant] = each = per_request(variant, handler, url, args)
            spread = f"{min(each):,.0f}-{max(each):,.0f}"
            print(f"  {handler} {variant}: {statistics.mean(each):,.0f} ({spread})", file=sys.stderr)
        ours = statistics.mean(counts["plugin"])
        for variant, each in counts.items():
            mean = statistics.mean(each)
            ratio = "-" if variant == "plugin" else f"{mean / ours:.3f}x"
            lines.append(f"| {handler} | {variant} | {mean:,.0f} | {min(each):,.0f}-{max(each):,.0f} | {ratio} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per cell")
    parser.add_argument(
        "--seeds",
        default=[0, 1, 2, 3],
        type=lambda s: [int(seed) for seed in s.split(",")],
        help="comma-separated PYTHONHASHSEED values; each cell is counted under every one",
    )
    parser.add_argument("--warm-up", type=int, default=50, help="requests served before the measured ones")
    parser.add_argument(
        "--handlers", default=",".join(CELLS), help="comma-separated handlers to count (a: unused, b: read, c: insert)"
    )
    parser.add_argument("--child", nargs=4, metavar=("VARIANT", "HANDLER", "URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, handler, url, requests = args.child
        asyncio.run(_serve(variant, handler, url, int(requests)))
        return
    handlers = args.handlers.split(",")
    if unknown := [h for h in handlers if h not in CELLS]:
        sys.exit(f"--handlers: unknown handler {unknown[0]!r}; choose from {', '.join(CELLS)}")
    if shutil.which("valgrind") is None:
        sys.exit("bench.instructions needs valgrind on the PATH: apt-get install valgrind")
    print(
        f"python {sys.version.split()[0]}; {args.requests} requests per cell after {args.warm_up} warm-up, "
        f"under PYTHONHASHSEED {', '.join(map(str, args.seeds))}\n"
    )
    for kind in args.databases.split(","):
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as directory:
                url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
                asyncio.run(prepare(url))
                print("\n".join(report("SQLite (aiosqlite, file)", url, args, handlers)))
        elif kind == "postgresql" and (database := postgres_database()):
            url, drop = database
            try:
                asyncio.run(prepare(url))
                print("\n".join(report("PostgreSQL (asyncpg)", url, args, handlers)))
            finally:
                drop()


if __name__ == "__main__":
    main()
