"""The configuration backups' format in a backup repository: a git bundle and its manifest.

A system's configuration backups live under ``config/<system>/`` in a store::

    config/app-config/
        backups/20261130T013000Z-7f3a/
            _in_progress.json         written first
            config.bundle[.age]       ``git bundle create --all`` of the refs backed up
            manifest.json             written LAST, the commit point: the commit of every
                                      ref, the bundle's size and sha256 (of the stored bytes)
            verifications/*.json      records of verifications, added later
        checked.json                  the last time the remote was seen matching the newest
                                      bundle (overwritten by every check; objects appear whole)

A folder without a manifest is not a backup: listing, restore and retention ignore it, and
:meth:`ConfigCatalog.remove_abandoned` removes it after a day. So a backup killed at any
point leaves nothing a later backup or a listing trips on.

The root is ``config/``, not the engine's name, for the reason ``files/`` is not ``blob/``:
the databases' repository format lays out ``<engine>/<system>/<database>/<backup-id>/`` and
removes folders there that do not look like its backups.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dr_runbooks import crypto
from dr_runbooks.errors import (
    BackupNotFound,
    BadInput,
    ChecksumMismatch,
    LockHeld,
    OperationFailed,
)
from dr_runbooks.repository import ObjectEncryption, Repository
from dr_runbooks.storage.base import Lease
from dr_runbooks.streams import Digest, hashed, read_chunks

__all__ = [
    "ENGINE",
    "ROOT",
    "ConfigBackup",
    "ConfigCatalog",
    "ConfigManifest",
    "StoredBundle",
]

ENGINE = "git"
ROOT = "config"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MARKER = "_in_progress.json"
BUNDLE = "config.bundle"
CHECKED = "checked.json"
VERIFICATIONS = "verifications/"
#: An attempt without a manifest older than this is abandoned.
GRACE = timedelta(days=1)


class StoredBundle(BaseModel):
    """The bundle as stored: ``size`` and ``sha256`` of the stored bytes (encrypted, when it
    is), so checking them needs no key."""

    model_config = ConfigDict(extra="allow")

    key: str
    size: int
    sha256: str
    encryption: ObjectEncryption | None = None


class ConfigManifest(BaseModel):
    """The commit record of one configuration backup."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    engine: Literal["git"] = "git"
    id: str
    system: str
    source: str = Field(description="The remote's URL, without any credential")
    started: datetime
    finished: datetime
    refs: dict[str, str] = Field(description="Every ref in the bundle and its object")
    head: str | None = Field(None, description="The branch the remote's HEAD named")
    bundle: StoredBundle

    @property
    def consistent_point(self) -> datetime:
        return self.started


@dataclass(frozen=True)
class ConfigBackup:
    """A complete (or damaged) configuration backup found in a repository."""

    system: str
    id: str
    prefix: str
    written: datetime
    manifest: ConfigManifest | None = None
    problem: str | None = None

    @property
    def damaged(self) -> bool:
        return self.problem is not None

    @property
    def consistent_point(self) -> datetime:
        return self.manifest.consistent_point if self.manifest is not None else self.written


class ConfigCatalog:
    """One system's configuration backups in one repository."""

    def __init__(self, repository: Repository, system: str) -> None:
        self.repository = repository
        self.system = system
        self.store = repository.store
        self.root = f"{ROOT}/{system}/"

    def __repr__(self) -> str:
        return f"ConfigCatalog({self.system!r}, {self.repository.name!r})"

    def backup_prefix(self, backup_id: str) -> str:
        return f"{self.root}backups/{backup_id}/"

    @contextlib.contextmanager
    def locked(self, holder: str) -> Iterator[Lease]:
        """The system's lock, held by a backup or retention (never both at once)."""
        self.store.create()
        name = f"{ENGINE}-{self.system}"
        record = json.dumps(
            {"holder": holder, "host": socket.gethostname(), "since": _now().isoformat()}
        ).encode()
        lease = self.store.try_lock(name, record)
        if lease is None:
            other = self.store.lock_holder(name) or b"?"
            raise LockHeld(
                f"the configuration backups of {self.system} in {self.repository.name} are "
                f"locked by {other.decode(errors='replace')}"
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

    def put_bundle(self, prefix: str, bundle: Path) -> StoredBundle:
        """Store the bundle file, encrypted to the repository's recipients when it has any."""
        recipients = self.repository.encrypt_to
        key = prefix + BUNDLE + (crypto.SUFFIX if recipients else "")
        stored = Digest()
        with bundle.open("rb") as handle:
            chunks: Iterator[bytes] = read_chunks(handle)
            if recipients:
                chunks = crypto.encrypt(chunks, recipients)
            self.store.put(key, hashed(chunks, stored))
        size = self.store.stat(key).size
        if size != stored.size:
            raise OperationFailed(
                f"{key}: the store holds {size} bytes, {stored.size} were written"
            )
        return StoredBundle(
            key=key,
            size=stored.size,
            sha256=stored.sha256,
            encryption=ObjectEncryption(recipients=list(recipients)) if recipients else None,
        )

    def commit(self, prefix: str, manifest: ConfigManifest) -> None:
        """Write the manifest (the commit point), then drop the marker."""
        self.store.put_bytes(prefix + MANIFEST, manifest.model_dump_json(indent=1).encode())
        self.store.delete([prefix + MARKER])

    def abort(self, prefix: str) -> None:
        """Remove an unfinished attempt's folder, the marker last."""
        keys = [info.key for info in self.store.list(prefix)]
        self.store.delete(k for k in keys if k != prefix + MARKER)
        self.store.delete([prefix + MARKER])
        self.store.delete_partials(prefix)

    def record_check(self, backup: ConfigBackup, at: datetime) -> None:
        """Remember that the remote matched ``backup`` at ``at``."""
        record = {"backup": backup.id, "at": at.isoformat()}
        self.store.put_bytes(self.root + CHECKED, json.dumps(record).encode())

    def last_check(self, backup: ConfigBackup) -> datetime | None:
        """When the remote was last seen matching ``backup`` (None: not since it was taken)."""
        try:
            record = json.loads(self.store.read_bytes(self.root + CHECKED))
            at = datetime.fromisoformat(str(record["at"]))
        except (OperationFailed, ValueError, KeyError, TypeError):
            return None
        return at if record.get("backup") == backup.id else None

    # -- reading ------------------------------------------------------------------------------

    def backups(self) -> list[ConfigBackup]:
        """Complete and damaged backups, newest first (by consistent point)."""
        if not self.store.exists():
            return []
        folders: dict[str, datetime] = {}
        base = self.root + "backups/"
        for info in self.store.list(base):
            backup_id, _, name = info.key[len(base) :].partition("/")
            if name == MANIFEST:
                folders[backup_id] = info.last_modified
        found = []
        for backup_id, written in folders.items():
            prefix = base + backup_id + "/"
            try:
                manifest = ConfigManifest.model_validate_json(
                    self.store.read_bytes(prefix + MANIFEST)
                )
                if manifest.id != backup_id or manifest.system != self.system:
                    raise ValueError(f"manifest names {manifest.system}/{manifest.id}")
            except (ValidationError, ValueError, OperationFailed) as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                found.append(ConfigBackup(self.system, backup_id, prefix, written, problem=message))
                continue
            found.append(ConfigBackup(self.system, backup_id, prefix, written, manifest))
        return sorted(found, key=lambda b: b.consistent_point, reverse=True)

    def latest(self) -> ConfigBackup | None:
        """The newest readable backup."""
        return next((b for b in self.backups() if b.manifest is not None), None)

    def find(self, backup_id: str | None = None) -> ConfigBackup:
        """A readable backup by id, or the newest; :class:`BackupNotFound` otherwise."""
        where = f"{self.root} in {self.repository.name}"
        if backup_id is None:
            newest = self.latest()
            if newest is None:
                raise BackupNotFound(f"no configuration backup of {self.system} in {where}")
            return newest
        for backup in self.backups():
            if backup.id == backup_id:
                if backup.damaged:
                    raise BadInput(f"backup {backup_id} is damaged: {backup.problem}")
                return backup
        raise BackupNotFound(f"no configuration backup {backup_id} in {where}")

    def fetch_bundle(self, backup: ConfigBackup, path: Path) -> Path:
        """Download the bundle to ``path``, decrypted, after checking the stored bytes'
        size and sha256 against the manifest (:class:`ChecksumMismatch` otherwise)."""
        assert backup.manifest is not None
        stored = backup.manifest.bundle
        identity = None
        if stored.encryption is not None:
            identity = self.repository.keyring.identity_for(
                stored.encryption.recipients, f"configuration backup {backup.id}"
            )
        digest = Digest()
        raw = path.with_name(path.name + ".stored")
        with self.store.open(stored.key) as handle, raw.open("wb") as out:
            for chunk in hashed(read_chunks(handle), digest):
                out.write(chunk)
        if digest.size != stored.size or digest.sha256 != stored.sha256:
            raw.unlink()
            raise ChecksumMismatch(
                f"{stored.key}: {digest.size} bytes, sha256 {digest.sha256[:12]}…; the "
                f"manifest says {stored.size} bytes, sha256 {stored.sha256[:12]}…"
            )
        if identity is None:
            raw.replace(path)
            return path
        with raw.open("rb") as handle, path.open("wb") as out:
            for chunk in crypto.decrypt(read_chunks(handle), identity, stored.key):
                out.write(chunk)
        raw.unlink()
        return path

    def record_verification(self, backup: ConfigBackup, record: dict[str, Any]) -> str:
        at = _now()
        key = f"{backup.prefix}{VERIFICATIONS}{at:%Y%m%dT%H%M%S%fZ}.json"
        self.store.put_bytes(key, json.dumps(record, indent=2, default=str).encode())
        return key

    def verifications(self, backup: ConfigBackup) -> list[dict[str, Any]]:
        records = []
        for info in sorted(self.store.list(backup.prefix + VERIFICATIONS), key=lambda i: i.key):
            with contextlib.suppress(ValueError, OperationFailed):
                records.append(json.loads(self.store.read_bytes(info.key)))
        return records

    # -- retention ----------------------------------------------------------------------------

    def expired(
        self,
        now: datetime | None = None,
        retention_days: int | None = None,
        min_keep: int | None = None,
    ) -> list[ConfigBackup]:
        """Backups older than the repository's retention, keeping at least ``min_keep`` of
        the newest readable ones (and never a damaged one: a person looks at it first)."""
        now = now or _now()
        days = self.repository.retention_days if retention_days is None else retention_days
        keep = self.repository.min_keep if min_keep is None else min_keep
        readable = [b for b in self.backups() if b.manifest is not None]
        return [b for b in readable[keep:] if now - b.consistent_point > timedelta(days=days)]

    def delete(self, backups: list[ConfigBackup]) -> None:
        """Delete backups, each manifest first (so a half-deleted one is no backup)."""
        for backup in backups:
            keys = [info.key for info in self.store.list(backup.prefix)]
            self.store.delete([backup.prefix + MANIFEST])
            self.store.delete(k for k in keys if k != backup.prefix + MANIFEST)

    def abandoned(self, now: datetime | None = None) -> list[str]:
        """Backup folders without a manifest whose newest object is older than :data:`GRACE`."""
        now = now or _now()
        if not self.store.exists():
            return []
        latest: dict[str, datetime] = {}
        complete = set()
        base = self.root + "backups/"
        for info in self.store.list(base):
            prefix = base + info.key[len(base) :].split("/", 1)[0] + "/"
            if info.key == prefix + MANIFEST:
                complete.add(prefix)
            latest[prefix] = max(latest.get(prefix, info.last_modified), info.last_modified)
        return sorted(p for p, t in latest.items() if p not in complete and now - t > GRACE)

    def remove_abandoned(self, now: datetime | None = None) -> list[str]:
        removed = self.abandoned(now)
        for prefix in removed:
            self.abort(prefix)
        return removed


def _now() -> datetime:
    return datetime.now(UTC)
