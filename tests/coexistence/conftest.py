"""These tests need advanced-alchemy, which lives only in the separate ``.venv-aa`` (installing it changes
Litestar's own imports). The main run does not collect them; ``tests/test_coexistence.py`` runs them
in that virtualenv."""

from __future__ import annotations

from importlib.util import find_spec

collect_ignore_glob = [] if find_spec("advanced_alchemy") else ["test_*.py"]
