"""The test-isolation benchmark runs (``python -m bench.sandbox_tests``): a tiny version on SQLite.

Timings are reported by the benchmark, never asserted here: this only shows that every way of isolating
runs the generated suite to the end with a schema of several tables per bind, and that bad sizes are
refused with one line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import sandbox_tests


def test_every_variant_runs_the_suite_with_a_larger_schema() -> None:
    medians, per_round = sandbox_tests.measure("sqlite", tests=3, rounds=1, extra=2)

    assert set(medians) == set(sandbox_tests.VARIANTS)
    for variant, (test, fixtures, sandbox) in medians.items():
        assert test > 0, variant
        assert 0 < fixtures <= test, variant
        assert (sandbox > 0) == (variant in ("sandbox", "per-test")), variant
    assert len(per_round) == 1


def test_a_schema_size_below_one_is_refused_with_one_line() -> None:
    # Sized so that a refusal that stopped working runs a tiny benchmark, not the default one.
    command = ["--tables", "1,0", "--databases", "sqlite", "--tests", "1", "--rounds", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.sandbox_tests", *command],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert done.returncode == 2, done.stdout
    refusal = done.stderr.strip().splitlines()[-1]
    assert refusal.endswith("--tables 1,0: give whole numbers of 1 or more, e.g. --tables 1,10,25")
    assert "Traceback" not in done.stderr
