"""Runs tests/coexistence (advanced-alchemy next to this plugin, and the migration guide's two apps) in
the separate ``.venv-aa`` virtualenv that ``.ci/run`` builds: advanced-alchemy cannot be installed in
the main test virtualenv, because it changes what Litestar itself imports.

Without ``.venv-aa`` the test is skipped, unless ``REQUIRE_AA_VENV=1`` (CI sets it) makes that a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PYTHON = ROOT / ".venv-aa" / "bin" / "python"


def test_coexistence_suite_passes_in_the_advanced_alchemy_virtualenv() -> None:
    if not PYTHON.exists():
        if os.environ.get("REQUIRE_AA_VENV") == "1":
            pytest.fail(f"REQUIRE_AA_VENV=1 but {PYTHON} does not exist; .ci/run builds it")
        pytest.skip(f"{PYTHON} does not exist; build it with .ci/run (or see tests/test_coexistence.py)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    done = subprocess.run(
        # Not our own pytest plugin (tests/coexistence uses none of its fixtures): loading it imports Litestar
        # at pytest's start, and there Litestar imports advanced-alchemy, whose SQLAlchemy 2.1 deprecation
        # warning the project's filterwarnings=error would turn into a start-up failure.
        [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:litestar_alchemy", "tests/coexistence"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in summary
    assert "skipped" not in summary
    assert "deselected" not in summary
