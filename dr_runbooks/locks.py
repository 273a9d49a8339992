"""Locks that die with their holder: one backup or restore of a database at a time, across
processes and machines, released when the holder ends however it ends.

- :class:`PostgresLock`: a session advisory lock on the server being backed up or restored,
  held by a connection of its own. PostgreSQL drops it when that connection ends: a crash, a
  ``kill -9``, a lost network. Who holds it is read from ``pg_stat_activity``.
- :class:`StoreLock`: a lock in a repository's store (a ``flock``ed file, a renewed blob
  lease; see :meth:`dr_runbooks.storage.base.Store.try_lock`), for what several machines
  share: the repository a backup writes into, the place a restore writes to.

:func:`hold` takes several in a fixed order, waiting up to a timeout (reporting who holds the
lock meanwhile), and raises :class:`~dr_runbooks.errors.LockHeld` naming the holder when the
wait ends. Correctness never depends on Prefect's concurrency limits, whose slots outlive a
killed holder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from dr_runbooks.errors import DRError, LockHeld
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.storage.base import Lease, Store

__all__ = [
    "Holder",
    "Lock",
    "PostgresLock",
    "StoreLock",
    "backups_lock",
    "base_backups_lock",
    "database_lock",
    "hold",
    "lock_name",
    "restore_lock",
    "verification_lock",
]


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough for a person to find the run (and for us to tell if it died)."""

    flow: str
    run_id: str | None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    since: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Holder | None:
        try:
            raw = json.loads(data or b"")
            return cls(**{k: raw[k] for k in ("flow", "run_id", "host", "pid", "since")})
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        run = f"run {self.run_id} of {self.flow}" if self.run_id else self.flow
        return f"{run} on {self.host} (pid {self.pid}) since {self.since}"


def lock_name(*parts: str) -> str:
    """A lock name from its parts (engine, system, database…), safe as a file or blob name."""
    text = "-".join(parts)
    clean = "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_-")
    if len(clean) > 120 or clean != text:
        # Distinct inputs must not share a name once cleaned or cut.
        clean = f"{clean[:100]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    return clean


class Lock(ABC):
    """One lock; ``label`` says what it protects, for messages."""

    label: str

    @abstractmethod
    def try_acquire(self, holder: Holder) -> bool:
        """Take the lock now, or return False while someone else holds it."""

    @abstractmethod
    def holder(self) -> Holder | None:
        """Who holds it now, when that can be told."""

    @abstractmethod
    def alive(self) -> bool:
        """Whether we still hold it."""

    @abstractmethod
    def release(self) -> None:
        """Let it go (idempotent)."""


class StoreLock(Lock):
    """A named lock in a store (a file lock, a blob lease)."""

    def __init__(self, store: Store, name: str, label: str) -> None:
        self.store, self.name, self.label = store, name, label
        self._lease: Lease | None = None

    def try_acquire(self, holder: Holder) -> bool:
        self._lease = self.store.try_lock(self.name, holder.to_bytes())
        return self._lease is not None

    def holder(self) -> Holder | None:
        return Holder.from_bytes(self.store.lock_holder(self.name))

    def alive(self) -> bool:
        return self._lease is not None and self._lease.alive()

    def release(self) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            lease.release()


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock(bigint)``."""
    digest = hashlib.blake2b(f"dr-runbooks:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresLock(Lock):
    """A session advisory lock named ``name`` on the server ``conninfo`` connects to."""

    _APP = "dr-runbooks lock"

    def __init__(self, conninfo: ConnInfo, name: str, label: str) -> None:
        self.conninfo, self.name, self.label = conninfo, name, label
        self.key = _advisory_key(name)
        self._conn: Any = None

    def try_acquire(self, holder: Holder) -> bool:
        # application_name (63 bytes at most) lets others see who holds the lock.
        app = f"{self._APP} {holder.run_id or holder.flow}"[:63]
        conn = self.conninfo.with_options(application_name=app).connect(dbname="postgres")
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except BaseException:
            conn.close()
            raise
        if not (row and row[0]):
            conn.close()
            return False
        self._conn = conn
        return True

    def holder(self) -> Holder | None:
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        try:
            with self.conninfo.connect(dbname="postgres") as conn:
                row = conn.execute(
                    """SELECT a.application_name, a.client_hostname, a.client_addr::text,
                              a.backend_start
                       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                       WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                         AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid""",
                    (high, low),
                ).fetchone()
        except DRError:
            return None
        if row is None:
            return None
        app, hostname, address, started = row
        run = str(app or "").removeprefix(self._APP).strip() or None
        return Holder(
            flow="a dr-runbooks run",
            run_id=run,
            host=str(hostname or address or "local socket"),
            pid=0,
            since=started.isoformat(timespec="seconds") if started else "?",
        )

    def alive(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
        except Exception:
            return False
        return True

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            with contextlib.suppress(Exception):
                conn.close()


#: Called while waiting: (the lock, who holds it when known, seconds waited so far).
WaitReport = Callable[[Lock, Holder | None, float], None]


@contextmanager
def hold(
    locks: Sequence[Lock],
    holder: Holder,
    timeout_seconds: float = 0.0,
    on_wait: WaitReport | None = None,
    poll_seconds: float = 1.0,
    report_every: float = 30.0,
) -> Iterator[list[Lock]]:
    """Hold every lock of ``locks`` (taken in that order, released in reverse), waiting up to
    ``timeout_seconds`` for each; raise :class:`LockHeld` naming the holder after that."""
    taken: list[Lock] = []
    try:
        for lock in locks:
            begun = time.monotonic()
            reported = -report_every
            while not lock.try_acquire(holder):
                waited = time.monotonic() - begun
                current = lock.holder()
                if waited >= timeout_seconds:
                    who = current.describe() if current else "another run"
                    raise LockHeld(f"{lock.label} is locked by {who}; try again when it ends")
                if on_wait is not None and waited - reported >= report_every:
                    on_wait(lock, current, waited)
                    reported = waited
                time.sleep(min(poll_seconds, max(timeout_seconds - waited, 0.05)))
            taken.append(lock)
        yield taken
    finally:
        for lock in reversed(taken):
            lock.release()


def database_lock(conninfo: ConnInfo, database: str) -> PostgresLock:
    """The lock every backup and restore of ``database`` takes on its server."""
    return PostgresLock(
        conninfo, f"database {database}", f"database {database} on {conninfo.describe('')}"
    )


def verification_lock(conninfo: ConnInfo, database: str) -> PostgresLock:
    """The lock a test restore of ``database``'s backups takes on the verification server."""
    return PostgresLock(
        conninfo,
        f"verify {database}",
        f"test restores of {database} on {conninfo.describe('')}",
    )


class _BackupsLock(StoreLock):
    """The repository lock of one system's database, which only a backup takes: the store
    is created first (a first backup may be the one that makes it)."""

    def try_acquire(self, holder: Holder) -> bool:
        self.store.create()
        return super().try_acquire(holder)


def base_backups_lock(repository: Repository, system: str) -> StoreLock:
    """The lock of ``system``'s base backups in ``repository``: taking one (an incremental
    needs its parent) and physical retention (which deletes whole chains) never overlap."""
    return backups_lock(repository, "postgres", system, "base backups")


def backups_lock(repository: Repository, engine: str, system: str, database: str) -> StoreLock:
    """The lock of ``system``/``database``'s backups in ``repository`` (for every machine that
    writes there)."""
    return _BackupsLock(
        repository.store,
        lock_name(engine, system, database),
        f"backups of {system}/{database} in {repository.name}",
    )


def restore_lock(repository: Repository, engine: str, system: str, target: str) -> StoreLock:
    """The lock of restores of ``system`` into ``target`` (a container, a path, a remote, a
    vault), in the repository they restore from: one restore writes there at a time, from
    before its approval to its end. The lock dies with its holder, so a restore killed
    half-way keeps nobody out of finishing it."""
    return StoreLock(
        repository.store,
        lock_name(engine, system, "restore", target),
        f"the restore target {target} of {system}",
    )
