"""Request path over real HTTP under concurrency: this plugin, advanced-alchemy and hand-written code.

Run (needs ``.[bench]``, wrk on the PATH: ``apt-get install wrk``, and PostgreSQL at
``BENCH_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``)::

    .venv-bench/bin/python -m bench.http    # --servers uvicorn,granian --concurrency 1,16,64 --rounds 3
    .venv-bench/bin/python -m bench.http --servers uvicorn --routes "primary-key read,insert" --concurrency 16

``bench/http_app.py`` runs under a real ASGI server (uvicorn, then granian) on 127.0.0.1, on two fresh
PostgreSQL databases (created here, dropped at the end), in three variants side by side: this plugin,
advanced-alchemy's plugin (``before_send_handler="autocommit"``) and a hand-written yield dependency per
bind. wrk, a real HTTP load generator, drives four routes (no session, a primary-key read, an insert, a
request touching two binds) at each concurrency. With two or more cores the servers are pinned to one
core and wrk to another (``taskset``); the PostgreSQL server is shared and not pinned.

Each run is bounded by ``--duration`` seconds and ``--max-requests`` responses. Every round starts new
server processes and warms every route up (unmeasured); then every (server, route, concurrency) cell runs
each variant once, in a rotating order. Rates and latencies are medians over rounds, and each ratio is the
median of the per-round ratios (this plugin / the other variant, for p99 too), so the machine drifting
between rounds, and one process's luck (see :func:`_round`), cancel out.
Any non-2xx answer or socket error makes the run invalid (exit code 1). Nothing here is a pass/fail
test of speed: the targets are printed next to the measured ratios.

The control: a second server of the hand-written app runs in the same rotation, and the last column
gives the hand-written app's ratios to it (throughput, p99, CPU per response). Two identical apps differ by
that much in that cell of that run; each missed target is printed with it, as "beyond" when the plugin's
ratio is further from 1.0 than the control's, "within" when it is not.

Beside each run, the server's CPU time per response: user and system time of the server's processes
(:meth:`Server.cpu_seconds`), which throughput mixes with PostgreSQL's and wrk's on the other core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, insert
from sqlalchemy.engine import make_url

from bench.http_app import ROWS, Base, Item, LogsBase
from bench.request_path import postgres_database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).parents[1]
CONTROL = "hand-written, again"
"""A second server of the hand-written app, measured like the others: its ratio to the first is what two
identical apps differ by in that cell of that run, the noise a ratio of the plugin's is read against."""
VARIANTS = ("plugin", "advanced-alchemy", "hand-written", CONTROL)
OTHERS = ("advanced-alchemy", "hand-written")
"""What the plugin is compared with (the targets)."""
ROUTES = {
    "no session": ("GET", "/nothing"),
    "primary-key read": ("GET", "/read"),
    "insert": ("POST", "/insert"),
    "two binds": ("POST", "/two-binds"),
}
TARGET_THROUGHPUT = 1.0
"""Throughput of this plugin / each other variant, at every concurrency."""
TARGET_P99 = 1.10
"""p99 latency of this plugin / each other variant: no worse by more than 10 %."""


def server_command(server: str, port: int, app: str = "bench.http_app:create_app") -> list[str]:
    """The command line of one ASGI server serving the factory ``app`` with default options."""
    common = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    if server == "uvicorn":
        # keep-alive longer than any run: wrk holds its connections open throughout
        return [sys.executable, "-m", "uvicorn", app, "--factory", *common,
                "--timeout-keep-alive", "300"]  # fmt: skip
    if server == "granian":
        granian = str(Path(sys.executable).with_name("granian"))
        return [granian, "--interface", "asgi", "--factory", "--workers", "1", "--no-ws", *common,
                app]  # fmt: skip
    raise SystemExit(f"unknown server {server!r}; use uvicorn or granian")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pinned(cpus: str | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


class Server:
    """One ASGI server process serving one variant, pinned to ``cpus``."""

    def __init__(
        self, server: str, variant: str, urls: dict[str, str], cpus: str | None, app: str = "bench.http_app:create_app"
    ) -> None:
        self.variant, self.port = variant, _free_port()
        env = {
            **os.environ,
            "HTTP_VARIANT": "hand-written" if variant == CONTROL else variant,
            "HTTP_DEFAULT_URL": urls["default"],
            "HTTP_LOGS_URL": urls["logs"],
        }
        self.process = subprocess.Popen(
            _pinned(cpus, server_command(server, self.port, app)), cwd=ROOT, env=env, start_new_session=True
        )

    def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/nothing", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.variant} app did not start on port {self.port}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGINT to the server (granian passes it to its worker): the lifespan disposes the engines."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only this server and its workers
            self.process.wait()

    def cpu_seconds(self) -> float:
        """User and system CPU time used so far by every process of the server (granian's worker too): the
        processes of its session."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            except OSError:  # a process that ended meanwhile
                continue
            if int(fields[3]) == self.process.pid:  # field 6, the session; 14 and 15, user and system time
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """What wrk measured for one variant in one cell of one round, and the server's CPU time meanwhile."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        """The server's CPU time per response, in microseconds."""
        return self.cpu_seconds / self.requests * 1e6


def load(server: Server, route: str, concurrency: int, args: argparse.Namespace) -> Run:
    """One bounded wrk run against one route of ``server``."""
    method, path = ROUTES[route]
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{args.duration}s", "--timeout", "10s",
               "-s", str(ROOT / "bench" / "http.lua"), f"http://127.0.0.1:{server.port}{path}"]  # fmt: skip
    env = {**os.environ, "WRK_METHOD": method, "WRK_MAX_REQUESTS": str(args.max_requests)}
    cpu = server.cpu_seconds()
    done = subprocess.run(
        _pinned(args.client_cpus, command), check=False, env=env, capture_output=True, text=True,
        timeout=args.duration + 60,
    )  # fmt: skip
    cpu = server.cpu_seconds() - cpu
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"wrk failed on {method} {path}: {done.stderr.strip() or done.stdout.strip()}")
    if not cpu:
        raise RuntimeError(f"{method} {path}: the server's CPU time was under one clock tick; use a longer --duration")
    summary = json.loads(lines[-1])
    if errors := {kind: n for kind, n in summary["errors"].items() if n}:
        raise RuntimeError(f"{method} {path} at concurrency {concurrency}: {errors}; the benchmark is invalid")
    seconds, p50, p99 = summary["duration_us"] / 1e6, summary["p50_us"] / 1e3, summary["p99_us"] / 1e3
    return Run(summary["requests"], seconds, p50, p99, cpu)


def prepare(urls: dict[str, str]) -> None:
    """Tables in both databases and ``ROWS`` items to read."""
    for key, base in (("default", Base), ("logs", LogsBase)):
        engine = create_engine(make_url(urls[key]).set(drivername="postgresql+psycopg"))
        with engine.begin() as connection:
            base.metadata.create_all(connection)
            if key == "default":
                connection.execute(insert(Item), [{"name": f"item-{n}"} for n in range(ROWS)])
        engine.dispose()


Results = dict[tuple[str, int], dict[str, list[Run]]]


def measure(server: str, urls: dict[str, str], args: argparse.Namespace) -> Results:
    """Every cell, ``args.rounds`` times, each round on new server processes (see :func:`_round`)."""
    results: Results = {(route, c): {v: [] for v in VARIANTS} for route in args.routes for c in args.concurrency}
    for round_number in range(1, args.rounds + 1):
        _round(server, urls, args, round_number, results)
        print(f"  {server}: round {round_number}/{args.rounds} done", file=sys.stderr)
    return results


def _round(server: str, urls: dict[str, str], args: argparse.Namespace, round_number: int, results: Results) -> None:
    """One round: a new server process per variant, every route warmed up (unmeasured) at the highest
    concurrency, then every cell, the variants in an order that rotates from cell to cell and round to round.

    New processes each round, because one process's speed is partly luck: CPython caches attribute lookups
    in a table of 4,096 entries indexed by the type's version tag and the name's address, and which hot
    lookups collide there depends on the order its classes were made and on where its names were
    allocated. Counted with callgrind, that alone moved one app's primary-key read by up to 4.6 % between
    runs that differed only in one unused class or in ``PYTHONHASHSEED`` (docs/benchmarks.md). A server
    kept for the whole run kept its luck in every round; the median over rounds of new processes does not.
    """
    servers: list[Server] = []
    try:
        for variant in VARIANTS:
            servers.append(Server(server, variant, urls, args.server_cpus))
        for each in servers:
            each.ready()
        for route in args.routes:
            for each in servers:
                load(each, route, max(args.concurrency), args)
        for cell_number, cell in enumerate(results):
            shift = (round_number + cell_number) % len(servers)  # rotate who goes first
            for each in servers[shift:] + servers[:shift]:
                results[cell][each.variant].append(load(each, cell[0], cell[1], args))
    finally:
        for each in servers:
            each.stop()


def _ratios(mine: list[Run], theirs: list[Run], value: Callable[[Run], float]) -> list[float]:
    return [value(m) / value(t) for m, t in zip(mine, theirs, strict=True)]


def _fmt(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _beyond(ratio: float, control: float, *, throughput: bool) -> bool:
    """Whether a missed ratio is further from 1.0 than the control's ratio in the same cell (either way round:
    the control's two servers are interchangeable), so the noise of that cell does not explain it."""
    spread = min(control, 1 / control) if throughput else max(control, 1 / control)
    return ratio < spread if throughput else ratio > spread


def report(server: str, results: Results) -> tuple[list[str], list[str]]:
    """The markdown table of one server, and the cells where a target was missed."""
    lines = [
        f"### {server}",
        "",
        "| route | c | req/s: plugin / advanced-alchemy / hand-written | p50 ms | p99 ms | server CPU µs/req "
        + "".join(f"| req/s vs {o} " for o in OTHERS)
        + "".join(f"| p99 vs {o} " for o in OTHERS)
        + "| CPU/req vs hand-written | control: req/s, p99, CPU/req |",
        "|---|---:|---:|---:|---:|---:" + "|---:" * 2 * len(OTHERS) + "|---:|---:|",
    ]
    missed: list[str] = []
    for (route, concurrency), runs in results.items():

        def medians(value: Callable[[Run], float], spec: str, runs: dict[str, list[Run]] = runs) -> str:
            return " / ".join(format(statistics.median(value(r) for r in runs[v]), spec) for v in VARIANTS[:3])

        cells = [
            medians(lambda r: r.rate, ",.0f"),
            medians(lambda r: r.p50_ms, ".1f"),
            medians(lambda r: r.p99_ms, ".1f"),
            medians(lambda r: r.cpu_us, ",.0f"),
        ]
        control_rate = statistics.median(_ratios(runs["hand-written"], runs[CONTROL], lambda r: r.rate))
        control_p99 = statistics.median(_ratios(runs["hand-written"], runs[CONTROL], lambda r: r.p99_ms))
        for label, value, throughput, control in (
            ("throughput", lambda r: r.rate, True, control_rate),
            ("p99", lambda r: r.p99_ms, False, control_p99),
        ):
            for other in OTHERS:
                ratios = _ratios(runs["plugin"], runs[other], value)
                cells.append(_fmt(ratios))
                ratio = statistics.median(ratios)
                if (ratio < TARGET_THROUGHPUT) if throughput else (ratio > TARGET_P99):
                    noise = "beyond" if _beyond(ratio, control, throughput=throughput) else "within"
                    missed.append(
                        f"{server} {route} c={concurrency}: {label} {ratio:.2f}x {other} "
                        f"({noise} the control's {control:.2f}x)"
                    )
        cells.append(_fmt(_ratios(runs["plugin"], runs["hand-written"], lambda r: r.cpu_us)))
        control_cpu = statistics.median(_ratios(runs["hand-written"], runs[CONTROL], lambda r: r.cpu_us))
        cells.append(f"{control_rate:.2f}x, {control_p99:.2f}x, {control_cpu:.2f}x")
        lines.append(f"| {route} | {concurrency} | {' | '.join(cells)} |")
    return [*lines, ""], missed


def _postgres_databases() -> Iterator[tuple[str, Callable[[], None]]]:
    for _ in ("default", "logs"):
        database = postgres_database()
        if database is None:
            raise SystemExit("PostgreSQL is unreachable; set BENCH_POSTGRES_URL")
        yield database


def describe(args: argparse.Namespace) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    wrk = subprocess.run(["wrk", "-v"], check=False, capture_output=True, text=True).stdout.split("[")[0].strip()
    servers = ", ".join(f"{name} {version(name)}" for name in args.servers)
    placement = (
        f"servers on CPU {args.server_cpus}, wrk on CPU {args.client_cpus} (taskset); PostgreSQL not pinned"
        if args.server_cpus
        else "not pinned (fewer than 2 cores)"
    )
    return (
        f"{cpu}, {os.cpu_count()} cores; python {platform.python_version()}, litestar {version('litestar')}, "
        f"sqlalchemy {version('sqlalchemy')}, advanced-alchemy {version('advanced-alchemy')}, {servers}, {wrk}\n"
        f"placement: {placement}; load average {os.getloadavg()[0]:.2f} at start\n"
        f"{args.rounds} rounds (each on new, warmed-up server processes) x {len(args.routes)} routes x "
        f"concurrency {args.concurrency} x "
        f"{len(VARIANTS)} variants (the control included); "
        f"each run {args.duration} s or {args.max_requests:,} responses"
    )


def _routes(names: str) -> list[str]:
    routes = [name.strip() for name in names.split(",")]
    if unknown := [name for name in routes if name not in ROUTES]:
        raise argparse.ArgumentTypeError(f"unknown route {unknown[0]!r}; use some of: {', '.join(ROUTES)}")
    return routes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="uvicorn,granian", type=lambda s: s.split(","))
    parser.add_argument("--concurrency", default="1,16,64", type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument(
        "--routes", default=",".join(ROUTES), type=_routes, help=f"a comma-separated subset of: {', '.join(ROUTES)}"
    )
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds, each on new server processes")
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--max-requests", type=int, default=50_000, help="responses per wrk run, at most")
    two_cores = (os.cpu_count() or 1) >= 2
    parser.add_argument("--server-cpus", default="0" if two_cores else None, help="taskset list for the servers")
    parser.add_argument("--client-cpus", default="1" if two_cores else None, help="taskset list for wrk")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed; on Debian: apt-get install wrk")
    print(describe(args), "\n", sep="")
    started = time.monotonic()
    databases = list(_postgres_databases())
    missed: list[str] = []
    try:
        urls = dict(zip(("default", "logs"), (url for url, _ in databases), strict=True))
        prepare(urls)
        for server in args.servers:
            lines, server_missed = report(server, measure(server, urls, args))
            print("\n".join(lines))
            missed += server_missed
    finally:
        for _, drop in databases:
            drop()
    print(f"Targets: throughput >= {TARGET_THROUGHPUT:.2f}x and p99 <= {TARGET_P99:.2f}x of advanced-alchemy and")
    print(f"the hand-written dependency, in every cell: {'all met' if not missed else f'{len(missed)} missed'}")
    beyond = sum("(beyond the control" in line for line in missed)
    if missed:
        print(f"{beyond} of them further from 1.0 than the control (hand-written / hand-written, again) in their cell:")
    for line in missed:
        print(f"- {line}")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end; {time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
