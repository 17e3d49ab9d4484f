"""Where a request's CPU goes, function by function: Python bytecodes executed, counted, not timed.

Run (PostgreSQL at ``BENCH_POSTGRES_URL``)::

    .venv/bin/python -m bench.opcodes            # --handlers b,c --requests 200 --top 25 --concurrency 1

``bench/instructions.py`` counts a request's user-space instructions, but callgrind sees one C function
(CPython's evaluation loop) for all Python code, so it cannot say which Python function they went to.
This counts, with ``sys.settrace`` and ``f_trace_opcodes``, every bytecode each Python function executes
while ``--requests`` requests of a handler of ``bench/request_path.py`` are served (after ``WARMUP`` served
uncounted), on this plugin's app and the hand-written dependency's. The count is the same from run to
run (it does not depend on the machine's load), so a change of a few dozen bytecodes per request shows.

Printed per handler: bytecodes per request on each app and their ratio, the difference by module (Python
files grouped by package), and this plugin's own functions, most expensive first. What this leaves out:
work in C (SQLAlchemy's and asyncpg's compiled parts, greenlet switches, the event loop's selector call),
and the cost of the calls themselves; ``bench.instructions`` counts all of it.

With ``--concurrency N`` the requests are served N at a time.
One at a time, this plugin skips the turns of the loop it gives way while others are in flight, and the
hand-written dependency pays SQLAlchemy's close in a task of its own in full; under concurrency both serve
other requests, and the count is the work left (docs/benchmarks.md). Counts then move by about 1 % between
runs: which requests wait for the pool, and how many overflow connections it opens, varies.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.request_path import HANDLERS, build_app, drive, postgres_database, prepare

if TYPE_CHECKING:
    from types import FrameType

VARIANTS = ("plugin", "hand-written")
WARMUP = 50
"""Requests served uncounted before the count, per request in flight."""
ROOT = str(Path(__file__).resolve().parent.parent)


def _where(filename: str) -> str:
    """A module by its path: in an installed package, in this project, or in the standard library."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", maxsplit=1)[1]
    if filename.startswith(ROOT):
        return filename[len(ROOT) + 1 :]
    library = str(Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}")
    return f"stdlib {filename[len(library) + 1 :]}" if filename.startswith(library) else filename


def count(variant: str, handler: str, url: str, requests: int, concurrency: int) -> Counter[tuple[str, str]]:
    """Bytecodes executed per (module group, function) while ``requests`` requests are served, ``concurrency``
    at a time."""
    counts: Counter[tuple[str, str]] = Counter()

    def tracer(frame: FrameType, _event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        code = frame.f_code
        key = (_where(code.co_filename), getattr(code, "co_qualname", code.co_name))  # co_qualname: Python 3.11+

        def local(_frame: FrameType, event: str, _arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local

        return local

    async def serve() -> None:
        method, path = HANDLERS[handler]
        app = build_app(variant, url)
        async with app.lifespan():
            await drive(app, method, path, WARMUP * concurrency, concurrency=concurrency)
            sys.settrace(tracer)
            try:
                await drive(app, method, path, requests, concurrency=concurrency)
            finally:
                sys.settrace(None)

    asyncio.run(serve())
    return counts


def report(handler: str, url: str, requests: int, top: int, concurrency: int) -> list[str]:
    counts = {variant: count(variant, handler, url, requests, concurrency) for variant in VARIANTS}
    totals = {variant: sum(c.values()) / requests for variant, c in counts.items()}
    modules: dict[str, Counter[str]] = {variant: Counter() for variant in VARIANTS}
    for variant, found in counts.items():
        for (where, _), n in found.items():
            modules[variant][where] += n
    names = set(modules["plugin"]) | set(modules["hand-written"])
    differences = sorted(((modules["plugin"][m] - modules["hand-written"][m]) / requests, m) for m in names)
    ours = sorted(((n / requests, f"{w}: {f}") for (w, f), n in counts["plugin"].items() if w.startswith("plugin/")))
    plugin, hand = modules["plugin"], modules["hand-written"]
    return [
        f"### handler {handler}: {HANDLERS[handler][0]} {HANDLERS[handler][1]}",
        "",
        f"bytecodes per request: plugin {totals['plugin']:,.0f}, hand-written {totals['hand-written']:,.0f} "
        f"(hand-written / plugin {totals['hand-written'] / totals['plugin']:.3f}x)",
        "",
        "| module | plugin | hand-written | difference |",
        "|---|---:|---:|---:|",
        *(
            f"| {m} | {plugin[m] / requests:,.0f} | {hand[m] / requests:,.0f} | {d:+,.0f} |"
            for d, m in sorted(differences, key=lambda item: -abs(item[0]))[:top]
            if abs(d) >= 1
        ),
        "",
        f"this plugin's functions (bytecodes per request, the {top} most expensive):",
        "",
        *(f"- {n:,.0f} {name}" for n, name in reversed(ours[-top:])),
        "",
    ]


def _positive(text: str) -> int:
    if (number := int(text)) < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handlers", default="b,c", help="comma-separated: b (primary-key read), c (insert)")
    parser.add_argument("--requests", type=int, default=200, help="counted requests per app and handler")
    parser.add_argument("--top", type=int, default=25, help="rows of each list")
    parser.add_argument(
        "--concurrency", type=_positive, default=1, help="requests in flight at once (the pool: 5 + 10 connections)"
    )
    args = parser.parse_args()
    handlers = args.handlers.split(",")
    if unknown := [h for h in handlers if h not in ("b", "c")]:
        sys.exit(f"--handlers: unknown handler {unknown[0]!r}; choose from b, c")
    database = postgres_database()
    if database is None:
        sys.exit("bench.opcodes needs PostgreSQL: set BENCH_POSTGRES_URL")
    url, drop = database
    try:
        asyncio.run(prepare(url))
        print(
            f"python {sys.version.split()[0]}; {args.requests} requests per app and handler, {args.concurrency} "
            f"at a time, after {WARMUP * args.concurrency} uncounted\n"
        )
        for handler in handlers:
            print("\n".join(report(handler, url, args.requests, args.top, args.concurrency)))
    finally:
        drop()


if __name__ == "__main__":
    main()
