"""One system's backups in a repository, for the systems that are not databases.

File storage (``files/``), configuration (``config/``) and Key Vault (``vault/``) keep their
backups the same way; only what a backup holds differs. The shared protocol::

    <root>/<system>/
        backups/<backup-id>/
            _in_progress.json     written first (:meth:`SystemCatalog.begin`)
            …                     the backup's objects
            manifest.json         written LAST, the commit point (:meth:`SystemCatalog.commit`)
            verifications/*.json  records of verifications, added later

A folder without a manifest is not a backup: listing, restore and retention ignore it. Who
holds the system's lock (:meth:`SystemCatalog.locked`: a backup or retention, never two at
once; the lock dies with its holder) removes every such folder at once
(:meth:`SystemCatalog.remove_leftovers`): no live run can own one then, so what a run killed
with ``kill -9`` left is gone by the end of the next one. Anyone may remove folders without a
manifest older than :data:`GRACE` (:meth:`SystemCatalog.remove_abandoned`).

A manifest that cannot be read makes that backup damaged: listed, never restored, never
deleted by retention (a person looks at it first).

The roots are not the engines' names: the databases' repository format lays out
``<engine>/<system>/<database>/<backup-id>/`` and removes folders there that do not look like
its backups.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dr_runbooks.errors import (
    BackupDamaged,
    BackupNotFound,
    BadInput,
    ChecksumMismatch,
    LockHeld,
    OperationFailed,
)
from dr_runbooks.repository import ObjectEncryption, Repository
from dr_runbooks.storage.base import Lease
from dr_runbooks.streams import Digest

__all__ = [
    "GRACE",
    "MANIFEST",
    "MARKER",
    "CatalogBackup",
    "CatalogManifest",
    "StoredObject",
    "SystemCatalog",
    "check_stored",
]

MANIFEST = "manifest.json"
MARKER = "_in_progress.json"
VERIFICATIONS = "verifications/"
#: A folder without a manifest older than this is abandoned, whoever holds the lock.
GRACE = timedelta(days=1)


class StoredObject(BaseModel):
    """One object a manifest references, as stored: ``size`` and ``sha256`` are of the stored
    bytes (encrypted, when it is), so checking them needs no key."""

    model_config = ConfigDict(extra="allow")

    key: str
    size: int
    sha256: str
    encryption: ObjectEncryption | None = None


class CatalogManifest(BaseModel):
    """What every manifest of these systems records; each system adds what its backup holds."""

    model_config = ConfigDict(extra="allow")

    id: str
    system: str
    started: datetime
    finished: datetime
    leftovers_removed: list[str] = Field(
        default_factory=list,
        description="Folders of dead attempts this backup removed before it began",
    )

    @property
    def consistent_point(self) -> datetime:
        """A backup holds every change made before it started (later ones may be in it too)."""
        return self.started


M = TypeVar("M", bound=CatalogManifest)


@dataclass(frozen=True)
class CatalogBackup(Generic[M]):
    """A complete (or damaged) backup found in a repository."""

    system: str
    id: str
    prefix: str
    written: datetime
    manifest: M | None = None
    problem: str | None = None

    @property
    def damaged(self) -> bool:
        return self.problem is not None

    @property
    def consistent_point(self) -> datetime:
        return self.manifest.consistent_point if self.manifest is not None else self.written


B = TypeVar("B", bound=CatalogBackup[Any])


class SystemCatalog(Generic[M, B]):
    """One system's backups in one repository. A subclass names its root, its lock, what
    its backups are called, and its manifest and backup types."""

    #: The folder under which every system of this kind keeps its backups.
    root_name: ClassVar[str]
    #: The lock's name is ``<lock_name>-<system>``.
    lock_name: ClassVar[str]
    #: How messages call these backups: "file backups", "configuration backups"…
    noun: ClassVar[str]
    #: Folders beside ``backups/`` that backups write into (the files' ``content/``): what a
    #: dead backup's half-written objects left there goes with :meth:`remove_leftovers`.
    shared_folders: ClassVar[tuple[str, ...]] = ()
    manifest_type: type[M]
    backup_type: type[B]

    def __init__(self, repository: Repository, system: str) -> None:
        if not system or "/" in system or system in (".", ".."):
            raise BadInput(f"invalid system name: {system!r}")
        self.repository = repository
        self.store = repository.store
        self.system = system
        self.root = f"{self.root_name}/{system}/"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.system!r}, {self.repository.name!r})"

    @property
    def where(self) -> str:
        return f"{self.root} in {self.repository.name}"

    def backup_prefix(self, backup_id: str) -> str:
        if not backup_id or "/" in backup_id or backup_id in (".", ".."):
            raise BadInput(f"invalid backup id: {backup_id!r}")
        return f"{self.root}backups/{backup_id}/"

    # -- locking ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, holder: str) -> Iterator[Lease]:
        """The system's lock, held by a backup or retention; :class:`LockHeld` naming the
        holder when another run has it."""
        self.store.create()
        name = f"{self.lock_name}-{self.system}"
        record = json.dumps(
            {"holder": holder, "host": socket.gethostname(), "since": _now().isoformat()}
        ).encode()
        lease = self.store.try_lock(name, record)
        if lease is None:
            other = self.store.lock_holder(name) or b"?"
            raise LockHeld(
                f"the {self.noun} of {self.system} in {self.repository.name} are locked by "
                f"{other.decode(errors='replace')}"
            )
        try:
            yield lease
        finally:
            lease.release()

    # -- writing ------------------------------------------------------------------------------

    def begin(self, backup_id: str, now: datetime | None = None) -> str:
        """Write the in-progress marker; return the backup's folder."""
        self.store.create()
        prefix = self.backup_prefix(backup_id)
        if any(True for _ in self.store.list(prefix)):
            raise OperationFailed(
                f"backup folder {prefix} already exists in {self.repository.name}"
            )
        marker = {"started": (now or _now()).isoformat(), "host": socket.gethostname()}
        self.store.put_bytes(prefix + MARKER, json.dumps(marker).encode())
        return prefix

    def check_before_commit(self, prefix: str, manifest: M) -> None:
        """Raise when what ``manifest`` references is not stored as it says (a subclass's
        check; nothing by default)."""

    def commit(self, prefix: str, manifest: M) -> None:
        """Check what the manifest references, write it (the commit point), drop the marker."""
        self.check_before_commit(prefix, manifest)
        self.store.put_bytes(prefix + MANIFEST, manifest.model_dump_json(indent=1).encode())
        self.store.delete([prefix + MARKER])

    def abort(self, prefix: str) -> None:
        """Remove an unfinished attempt's folder, the marker last (never a committed one)."""
        keys = [info.key for info in self.store.list(prefix)]
        if prefix + MANIFEST in keys:
            raise OperationFailed(f"refusing to remove committed backup {prefix}")
        self.store.delete(k for k in keys if k != prefix + MARKER)
        self.store.delete([prefix + MARKER])
        self.store.delete_partials(prefix)

    # -- reading ------------------------------------------------------------------------------

    def _folders(self) -> dict[str, dict[str, datetime]]:
        """Every backup folder: its objects' names (relative) and when each was written."""
        folders: dict[str, dict[str, datetime]] = {}
        if not self.store.exists():
            return folders
        base = self.root + "backups/"
        for info in self.store.list(base):
            backup_id, _, name = info.key[len(base) :].partition("/")
            if name:
                folders.setdefault(backup_id, {})[name] = info.last_modified
        return folders

    def backups(self) -> list[B]:
        """Complete and damaged backups, newest first (by consistent point)."""
        found = []
        for backup_id, objects in self._folders().items():
            if MANIFEST not in objects:
                continue
            prefix = self.backup_prefix(backup_id)
            written = objects[MANIFEST]
            try:
                manifest = self.manifest_type.model_validate_json(
                    self.store.read_bytes(prefix + MANIFEST)
                )
                if manifest.id != backup_id or manifest.system != self.system:
                    raise ValueError(f"manifest names {manifest.system}/{manifest.id}")
            except (ValidationError, ValueError, OperationFailed) as exc:
                problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                broken = self.backup_type(self.system, backup_id, prefix, written, None, problem)
                found.append(broken)
                continue
            found.append(self.backup_type(self.system, backup_id, prefix, written, manifest))
        return sorted(found, key=lambda b: b.consistent_point, reverse=True)

    def latest(self) -> B | None:
        """The newest readable backup, or None."""
        return next((b for b in self.backups() if b.manifest is not None), None)

    def find(self, backup_id: str | None = None) -> B:
        """A readable backup by id, or the newest; :class:`BackupNotFound` when there is none,
        :class:`BackupDamaged` when the one named cannot be read."""
        everything = self.backups()
        if backup_id is None:
            newest = next((b for b in everything if b.manifest is not None), None)
            if newest is None:
                raise BackupNotFound(f"no {self.noun[:-1]} of {self.system} in {self.where}")
            return newest
        return self._by_id(everything, backup_id)

    def _by_id(self, everything: list[B], backup_id: str) -> B:
        for backup in everything:
            if backup.id == backup_id:
                if backup.damaged:
                    raise BackupDamaged(f"backup {backup_id} is damaged: {backup.problem}")
                return backup
        held = ", ".join(b.id for b in everything[:3]) or "none"
        raise BackupNotFound(f"no {self.noun[:-1]} {backup_id!r} in {self.where} (newest: {held})")

    # -- verification records -----------------------------------------------------------------

    def record_verification(self, backup: B, record: dict[str, Any]) -> str:
        """Keep a verification's outcome beside the backup (``finished``: now, unless said);
        return its key."""
        now = _now()
        key = f"{backup.prefix}{VERIFICATIONS}{now:%Y%m%dT%H%M%S%fZ}.json"
        record = {"finished": now.isoformat(), **record}
        self.store.put_bytes(key, json.dumps(record, indent=2, default=str).encode())
        return key

    def verifications(self, backup: B) -> list[dict[str, Any]]:
        """Verification records of a backup, oldest first."""
        records = []
        for info in sorted(self.store.list(backup.prefix + VERIFICATIONS), key=lambda i: i.key):
            with contextlib.suppress(ValueError, OperationFailed):
                records.append(json.loads(self.store.read_bytes(info.key)))
        return records

    # -- retention and leftovers --------------------------------------------------------------

    def expired(
        self,
        now: datetime | None = None,
        retention_days: int | None = None,
        min_keep: int | None = None,
    ) -> list[B]:
        """Backups older than the repository's retention, keeping at least ``min_keep`` of
        the newest readable ones (and never a damaged one)."""
        now = now or _now()
        days = self.repository.retention_days if retention_days is None else retention_days
        keep = self.repository.min_keep if min_keep is None else min_keep
        readable = [b for b in self.backups() if b.manifest is not None]
        return [b for b in readable[keep:] if now - b.consistent_point > timedelta(days=days)]

    def delete(self, backups: list[B]) -> None:
        """Delete backups, each manifest first (so a half-deleted one is no backup)."""
        for backup in backups:
            keys = [info.key for info in self.store.list(backup.prefix)]
            self.store.delete([backup.prefix + MANIFEST])
            self.store.delete(k for k in keys if k != backup.prefix + MANIFEST)

    def leftovers(self) -> list[str]:
        """Every backup folder without a manifest, whatever its age. Only for a caller that
        holds the system's lock: no live run can own one then."""
        return sorted(
            self.backup_prefix(backup_id)
            for backup_id, objects in self._folders().items()
            if MANIFEST not in objects
        )

    def remove_leftovers(self) -> list[str]:
        """Remove :meth:`leftovers`, and the partial writes dead runs left in the shared
        folders (under the system's lock); return the removed backups' ids."""
        removed = self.leftovers()
        for prefix in removed:
            self.abort(prefix)
        if self.shared_folders and self.store.exists():
            for folder in self.shared_folders:
                self.store.delete_partials(self.root + folder)
        return [prefix.rstrip("/").rsplit("/", 1)[-1] for prefix in removed]

    def abandoned(self, now: datetime | None = None) -> list[str]:
        """Backup folders without a manifest whose newest object is older than :data:`GRACE`."""
        now = now or _now()
        return sorted(
            self.backup_prefix(backup_id)
            for backup_id, objects in self._folders().items()
            if MANIFEST not in objects and now - max(objects.values()) > GRACE
        )

    def remove_abandoned(self, now: datetime | None = None) -> list[str]:
        removed = self.abandoned(now)
        for prefix in removed:
            self.abort(prefix)
        return removed


def check_stored(key: str, data: bytes | Digest, size: int, sha256: str) -> None:
    """Raise :class:`ChecksumMismatch` when what was read of ``key`` is not the manifest's
    ``size`` and ``sha256``."""
    digest = data if isinstance(data, Digest) else Digest()
    if isinstance(data, bytes):
        digest.update(data)
    if digest.size != size or digest.sha256 != sha256:
        raise ChecksumMismatch(
            f"{key}: {digest.size} bytes, sha256 {digest.sha256[:12]}…; the manifest says "
            f"{size} bytes, sha256 {sha256[:12]}…"
        )


def _now() -> datetime:
    return datetime.now(UTC)
