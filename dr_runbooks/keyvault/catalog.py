"""Key Vault backups' format in a backup repository: one object per secret, a manifest last.

A system's vault backups live under ``vault/<system>/`` in a store::

    vault/app-vault/
        backups/20261130T013000Z-7f3a/
            _in_progress.json            written first
            secrets/<name>.kvbackup      what ``backup_secret`` returned: every version of the
                                         secret, encrypted by Key Vault itself and restorable
                                         only into a vault of the same subscription and
                                         geography
            manifest.json                written LAST: the vault, each secret's object (size,
                                         sha256), what was skipped and why, the vault's
                                         protection as read
            verifications/*.json

A folder without a manifest is not a backup (listing and restore ignore it; retention removes
it after a day). Retention keeps the repository's ``retention_days`` and at least its
``min_keep`` newest backups.

The root is ``vault/``, not the engine's name, for the reason ``files/`` is not ``blob/``:
the databases' format removes folders under ``<engine>/`` it does not know.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dr_runbooks.errors import BackupNotFound, BadInput, LockHeld, OperationFailed
from dr_runbooks.repository import Repository
from dr_runbooks.storage.base import Lease
from dr_runbooks.streams import Digest, hashed

__all__ = ["ROOT", "SecretObject", "VaultBackup", "VaultCatalog", "VaultManifest"]

ROOT = "vault"
MANIFEST = "manifest.json"
MARKER = "_in_progress.json"
VERIFICATIONS = "verifications/"
GRACE = timedelta(days=1)


class SecretObject(BaseModel):
    """One secret's backup as stored."""

    model_config = ConfigDict(extra="allow")

    key: str
    size: int
    sha256: str


class VaultManifest(BaseModel):
    """The commit record of one vault backup."""

    model_config = ConfigDict(extra="allow")

    format_version: int = 1
    engine: Literal["keyvault"] = "keyvault"
    id: str
    system: str
    vault: str
    started: datetime
    finished: datetime
    secrets: dict[str, SecretObject]
    skipped: dict[str, str] = Field(default_factory=dict, description="Secret → why not")
    protection: dict[str, Any] = Field(default_factory=dict)

    @property
    def consistent_point(self) -> datetime:
        return self.started


@dataclass(frozen=True)
class VaultBackup:
    system: str
    id: str
    prefix: str
    written: datetime
    manifest: VaultManifest | None = None
    problem: str | None = None

    @property
    def damaged(self) -> bool:
        return self.problem is not None

    @property
    def consistent_point(self) -> datetime:
        return self.manifest.consistent_point if self.manifest is not None else self.written


class VaultCatalog:
    """One system's vault backups in one repository."""

    def __init__(self, repository: Repository, system: str) -> None:
        self.repository = repository
        self.system = system
        self.store = repository.store
        self.root = f"{ROOT}/{system}/"

    def backup_prefix(self, backup_id: str) -> str:
        return f"{self.root}backups/{backup_id}/"

    @contextlib.contextmanager
    def locked(self, holder: str) -> Iterator[Lease]:
        self.store.create()
        name = f"keyvault-{self.system}"
        record = json.dumps({"holder": holder, "host": socket.gethostname()}).encode()
        lease = self.store.try_lock(name, record)
        if lease is None:
            other = self.store.lock_holder(name) or b"?"
            raise LockHeld(
                f"the vault backups of {self.system} in {self.repository.name} are locked by "
                f"{other.decode(errors='replace')}"
            )
        try:
            yield lease
        finally:
            lease.release()

    def begin(self, backup_id: str, now: datetime) -> str:
        self.store.create()
        prefix = self.backup_prefix(backup_id)
        if any(True for _ in self.store.list(prefix)):
            raise OperationFailed(
                f"backup folder {prefix} already exists in {self.repository.name}"
            )
        marker = {"started": now.isoformat(), "host": socket.gethostname()}
        self.store.put_bytes(prefix + MARKER, json.dumps(marker).encode())
        return prefix

    def put_secret(self, prefix: str, name: str, data: bytes) -> SecretObject:
        """Store one secret's backup as Key Vault returned it (already protected by it)."""
        key = f"{prefix}secrets/{name}.kvbackup"
        digest = Digest()
        self.store.put(key, hashed([data], digest))
        return SecretObject(key=key, size=digest.size, sha256=digest.sha256)

    def commit(self, prefix: str, manifest: VaultManifest) -> None:
        self.store.put_bytes(prefix + MANIFEST, manifest.model_dump_json(indent=1).encode())
        self.store.delete([prefix + MARKER])

    def abort(self, prefix: str) -> None:
        keys = [info.key for info in self.store.list(prefix)]
        self.store.delete(k for k in keys if k != prefix + MARKER)
        self.store.delete([prefix + MARKER])
        self.store.delete_partials(prefix)

    def read_secret(self, stored: SecretObject) -> bytes:
        """A secret's backup, checked against the manifest's size and sha256."""
        from dr_runbooks.errors import ChecksumMismatch

        data = self.store.read_bytes(stored.key)
        digest = Digest()
        digest.update(data)
        if digest.size != stored.size or digest.sha256 != stored.sha256:
            raise ChecksumMismatch(
                f"{stored.key}: {digest.size} bytes, sha256 {digest.sha256[:12]}…; the manifest "
                f"says {stored.size} bytes, sha256 {stored.sha256[:12]}…"
            )
        return data

    def backups(self) -> list[VaultBackup]:
        """Complete and damaged backups, newest first."""
        if not self.store.exists():
            return []
        base = self.root + "backups/"
        written: dict[str, datetime] = {}
        for info in self.store.list(base):
            backup_id, _, name = info.key[len(base) :].partition("/")
            if name == MANIFEST:
                written[backup_id] = info.last_modified
        found = []
        for backup_id, at in written.items():
            prefix = base + backup_id + "/"
            try:
                manifest = VaultManifest.model_validate_json(
                    self.store.read_bytes(prefix + MANIFEST)
                )
                if manifest.id != backup_id or manifest.system != self.system:
                    raise ValueError(f"manifest names {manifest.system}/{manifest.id}")
            except (ValidationError, ValueError, OperationFailed) as exc:
                problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                found.append(VaultBackup(self.system, backup_id, prefix, at, problem=problem))
                continue
            found.append(VaultBackup(self.system, backup_id, prefix, at, manifest))
        return sorted(found, key=lambda b: b.consistent_point, reverse=True)

    def latest(self) -> VaultBackup | None:
        return next((b for b in self.backups() if b.manifest is not None), None)

    def find(self, backup_id: str | None = None) -> VaultBackup:
        if backup_id is None:
            newest = self.latest()
            if newest is None:
                raise BackupNotFound(f"no vault backup of {self.system} in {self.repository.name}")
            return newest
        for backup in self.backups():
            if backup.id == backup_id:
                if backup.damaged:
                    raise BadInput(f"backup {backup_id} is damaged: {backup.problem}")
                return backup
        raise BackupNotFound(
            f"no vault backup {backup_id} of {self.system} in {self.repository.name}"
        )

    def record_verification(self, backup: VaultBackup, record: dict[str, Any]) -> None:
        key = f"{backup.prefix}{VERIFICATIONS}{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.json"
        self.store.put_bytes(key, json.dumps(record, indent=2, default=str).encode())

    def verifications(self, backup: VaultBackup) -> list[dict[str, Any]]:
        records = []
        for info in sorted(self.store.list(backup.prefix + VERIFICATIONS), key=lambda i: i.key):
            with contextlib.suppress(ValueError, OperationFailed):
                records.append(json.loads(self.store.read_bytes(info.key)))
        return records

    def expired(self, now: datetime | None = None) -> list[VaultBackup]:
        """Backups older than the repository's ``retention_days``, keeping its ``min_keep``
        newest readable ones (a damaged one is left for a person to look at)."""
        now = now or datetime.now(UTC)
        readable = [b for b in self.backups() if b.manifest is not None]
        keep = self.repository.min_keep
        limit = timedelta(days=self.repository.retention_days)
        return [b for b in readable[keep:] if now - b.consistent_point > limit]

    def delete(self, backups: list[VaultBackup]) -> None:
        """Delete backups, each manifest first (so a half-deleted one is no backup)."""
        for backup in backups:
            keys = [info.key for info in self.store.list(backup.prefix)]
            self.store.delete([backup.prefix + MANIFEST])
            self.store.delete(k for k in keys if k != backup.prefix + MANIFEST)

    def remove_abandoned(self, now: datetime | None = None) -> list[str]:
        removed = self.abandoned(now)
        for prefix in removed:
            self.abort(prefix)
        return removed

    def abandoned(self, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(UTC)
        if not self.store.exists():
            return []
        base = self.root + "backups/"
        latest: dict[str, datetime] = {}
        complete = set()
        for info in self.store.list(base):
            prefix = base + info.key[len(base) :].split("/", 1)[0] + "/"
            if info.key == prefix + MANIFEST:
                complete.add(prefix)
            latest[prefix] = max(latest.get(prefix, info.last_modified), info.last_modified)
        return sorted(p for p, t in latest.items() if p not in complete and now - t > GRACE)
