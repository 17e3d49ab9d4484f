"""``litestar db``: list, check, explore and change the databases of a Litestar app using ``plugin``.

Loaded through the ``litestar.commands`` entry point (:mod:`alchemy_cli.bridge`). Nothing is exported:
the commands are the interface.
"""

from __future__ import annotations

__all__ = ()
