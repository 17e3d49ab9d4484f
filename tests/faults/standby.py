"""A private PostgreSQL primary and a streaming hot standby of it, for the read replica tests.

The primary is a :class:`~tests.faults.cluster.PrivateCluster` named ``alchemy_replicas_<port>``; the standby
``alchemy_standby_<port>`` is a ``pg_basebackup -R`` copy of it (run as the ``postgres`` user) streaming
through a physical replication slot, with ``recovery_min_apply_delay`` so that a read on the standby right
after a write on the primary is observably stale. Both use leased ports of ``FAULT_PORTS`` and are kept
between runs (building the pair takes a few seconds; a marker file in the standby's config directory says
which primary it copies, and a standby of another primary, or one that cannot stream, is rebuilt). A
session stops both when it is done. The machine's shared servers are never touched.

``python -m tests.faults.standby`` builds (or checks) the pair and stops it again: what ``.ci/run`` runs.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.faults.cluster import _HBA, VERSION, PrivateCluster, _ctl, _run, cluster_problem
from tests.faults.ports import lease_port, port_is_free

if TYPE_CHECKING:
    from collections.abc import Iterator

APPLY_DELAY = 2.0
"""Seconds the standby waits before applying what the primary committed (``recovery_min_apply_delay``)."""


def standby_problem() -> str | None:
    """Why a primary/standby pair cannot be built here, or None when it can."""
    if problem := cluster_problem():
        return problem
    if shutil.which("pg_basebackup") is None or shutil.which("runuser") is None:
        return "pg_basebackup or runuser is missing: install postgresql-client-15 and util-linux"
    return None


class PrivateStandby(PrivateCluster):
    """A hot standby of ``primary``: read-only, replaying the primary's WAL ``APPLY_DELAY`` seconds late."""

    def __init__(self, port: int, primary: PrivateCluster) -> None:
        super().__init__(port, prefix="alchemy_standby")
        self.primary = primary

    @property
    def data_dir(self) -> Path:
        return Path(f"/var/lib/postgresql/{VERSION}/{self.name}")

    @property
    def _marker(self) -> Path:
        return self.config_dir / "standby-of"

    @property
    def _slot(self) -> str:
        return self.name

    def ensure(self) -> None:
        """Build the standby from a base backup of the primary, unless an up-to-date one exists."""
        wanted = f"{self.primary.name} port {self.primary.port}\n"
        built = (self.config_dir / "postgresql.conf").exists() and (self.data_dir / "standby.signal").exists()
        if built and self._marker.exists() and self._marker.read_text() == wanted:
            self._configure()
            return
        self.drop()
        self.primary.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s", [self._slot]
        )
        # A fresh cluster for the Debian wrappers' configuration, whose data directory is then replaced by a
        # base backup of the primary (standby.signal and primary_conninfo included, from -R).
        _run("pg_createcluster", VERSION, self.name, "--port", str(self.port), "--start-conf", "manual")
        shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(mode=0o700)
        shutil.chown(self.data_dir, "postgres", "postgres")
        source = ("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres")
        _run("runuser", "-u", "postgres", "--", "pg_basebackup", "-D", str(self.data_dir), "-R", "-C", "-S", self._slot,
             "-X", "stream", *source)  # fmt: skip
        self._configure()
        self._marker.write_text(wanted)

    def drop(self) -> None:
        """Remove the standby, its data and its configuration (our own files in it included)."""
        super().drop()
        shutil.rmtree(self.config_dir, ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _configure(self) -> None:
        settings = (
            "# Written by tests/faults/standby.py (read after postgresql.conf: these win).\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            "max_prepared_transactions = 20\n"  # a hot standby needs at least the primary's
            "hot_standby = on\n"
            f"recovery_min_apply_delay = '{int(APPLY_DELAY * 1000)}ms'\n"
            "ssl = off\n"
        )
        files = ((self.config_dir / "conf.d" / "standby.conf", settings), (self.config_dir / "pg_hba.conf", _HBA))
        for path, text in files:
            if not path.exists() or path.read_text() != text:
                path.write_text(text)

    def start(self, timeout: float = 30) -> None:
        """Start the standby and wait until it accepts connections and streams from the primary."""
        if not self.is_running():
            _ctl(self.name, "start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.execute("select pg_is_in_recovery()")[0][0]:
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def caught_up(self) -> bool:
        """Whether the standby has replayed everything the primary had written when this was asked."""
        (target,) = self.primary.execute("select pg_current_wal_lsn()::text")[0]
        (behind,) = self.execute("select pg_last_wal_replay_lsn() < %s::pg_lsn", [target])[0]
        return not behind

    def wait_caught_up(self, timeout: float = 30) -> None:
        """Wait until the standby has replayed everything the primary had written when this was called."""
        (target,) = self.primary.execute("select pg_current_wal_lsn()::text")[0]
        deadline = time.monotonic() + timeout
        while self.execute("select pg_last_wal_replay_lsn() < %s::pg_lsn", [target])[0][0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self!r} did not replay up to {target} within {timeout:g} s")
            time.sleep(0.05)


@contextlib.contextmanager
def leased_pair() -> Iterator[tuple[PrivateCluster, PrivateStandby]]:
    """A running primary and its running standby on two leased ports; both stopped at exit."""
    with PrivateCluster.leased(prefix="alchemy_replicas") as primary:
        primary.start()
        lease = lease_port(lambda port: port_is_free(port) or PrivateStandby(port, primary).is_running())
        standby = PrivateStandby(lease.port, primary)
        try:
            standby.ensure()
            try:
                standby.start()
                standby.wait_caught_up()
            except Exception:  # a standby that cannot stream any more (say, its slot was lost): build it again
                standby.stop("immediate")
                standby.drop()
                standby.ensure()
                standby.start()
                standby.wait_caught_up()
            yield primary, standby
        finally:
            with contextlib.suppress(Exception):
                standby.stop()
            lease.release()


if __name__ == "__main__":
    if problem := standby_problem():
        raise SystemExit(f"cannot build the replica test servers: {problem}")
    with leased_pair() as (built_primary, built_standby):
        print(f"ready: {built_primary!r} and its standby {built_standby!r}")
