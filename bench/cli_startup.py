"""Start-up cost of ``litestar db binds`` against ``litestar routes`` on the same app.

Run::

    .venv/bin/python -m bench.cli_startup                    # --runs 15 --app examples.app:app

Both commands load the app through Litestar's CLI; ``db binds`` also imports typer, creates the engines
(no connection) and renders its table. The runs alternate between the two commands (so drift hits both
alike); the figure is the median wall time of each and their ratio. Target: <= 1.15x. The CPU time each
child used is printed too: it is what to read when the machine is busy with other work.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

LITESTAR = Path(sys.executable).with_name("litestar")


def wall_and_cpu_time(args: list[str]) -> tuple[float, float]:
    """Wall time of one run, and the CPU time (user + system) the child used: on a busy machine the
    wall time mostly measures the other processes, the CPU time much less so."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(
        [str(LITESTAR), *args], capture_output=True, check=False, env={**os.environ, "COLUMNS": "200"}
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"litestar {' '.join(args)} failed:\n{completed.stderr.decode()}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (plus one warm-up each)")
    parser.add_argument("--app", default="examples.app:app")
    args = parser.parse_args()
    commands = {
        "litestar routes": ["--app", args.app, "routes"],
        "litestar db binds": ["--app", args.app, "db", "binds"],
    }
    for command in commands.values():  # warm the filesystem and bytecode caches
        wall_and_cpu_time(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for run in range(args.runs):
        order = list(commands.items()) if run % 2 == 0 else list(reversed(commands.items()))
        for name, command in order:
            wall, used = wall_and_cpu_time(command)
            times[name].append(wall)
            cpu[name].append(used)
    routes, binds = (statistics.median(times[name]) for name in commands)
    routes_cpu, binds_cpu = (statistics.median(cpu[name]) for name in commands)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; app {args.app}; {args.runs} runs each, interleaved; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| command | median | min | max | CPU time (median) |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        median, low, high = (round(f(values) * 1000) for f in (statistics.median, min, max))
        print(f"| `{name}` | {median} ms | {low} ms | {high} ms | {round(statistics.median(cpu[name]) * 1000)} ms |")
    print(f"\nratio db binds / routes (medians): {binds / routes:.2f}x (target <= 1.15x)")
    print(f"ratio of CPU time (medians): {binds_cpu / routes_cpu:.2f}x")


if __name__ == "__main__":
    main()
