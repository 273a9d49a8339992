"""The file backups' format in a backup repository: content stored once, a manifest per backup.

A system's file backups live under ``files/<system>/`` in a store::

    files/files-app/
        content/3f/3fa9…c2            a blob's content, named by its sha256: stored once,
        content/a0/a07e…19.age        however many backups and blobs hold it (encrypted
                                      when the repository has ``encrypt_to``)
        backups/20261130T013000Z-7f3a/
            _in_progress.json         written first
            manifest.json             written LAST, the commit point: every blob of every
                                      container (name, size, sha256, MD5, ETag, last-modified,
                                      content type, metadata), what was deleted since the
                                      previous backup, and the content objects it references
            verifications/*.json      records of verifications, added later

So every backup is a complete picture of the containers, although an unchanged blob is
stored once. The marker, the manifest last, the lock and the removal of what dead attempts
left are the protocol all the non-database systems share (:mod:`dr_runbooks.catalog`). A
manifest that cannot be read makes that backup damaged: listed, never restored, and, since
nobody can tell which content it references, no content is deleted by retention while it is
there.

Content objects are written before the manifest that references them, and deleted only by
retention, which holds the system's lock (as the backup does) and leaves content younger
than a day alone whatever references it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dr_runbooks import crypto
from dr_runbooks.catalog import (
    GRACE,
    CatalogBackup,
    CatalogManifest,
    StoredObject,
    SystemCatalog,
    check_stored,
)
from dr_runbooks.errors import BackupNotFound, BadInput, ChecksumMismatch, OperationFailed
from dr_runbooks.repository import ObjectEncryption, new_backup_id
from dr_runbooks.streams import Digest, hashed, read_chunks

__all__ = [
    "ENGINE",
    "BlobEntry",
    "ContainerRecord",
    "FileBackup",
    "FileCatalog",
    "FileManifest",
    "FileRetentionPlan",
    "StoredContent",
    "new_backup_id",
]

ENGINE = "blob"
ROOT = "files"
FORMAT_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


#: One content object as stored.
StoredContent = StoredObject


class BlobEntry(BaseModel):
    """One blob as the backup found it; ``sha256`` and ``size`` are of its content."""

    model_config = ConfigDict(extra="allow")

    name: str
    size: int
    sha256: str
    content_md5: str | None = Field(None, description="Azure's MD5 of the content, hex")
    etag: str
    last_modified: datetime
    content_type: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class ContainerRecord(BaseModel):
    """One container in one backup."""

    model_config = ConfigDict(extra="allow")

    blobs: list[BlobEntry]
    #: Blobs of the previous backup that were gone from the source: recorded, not propagated.
    deleted: list[str] = Field(default_factory=list)
    #: Blobs that kept changing while read: the previous backup's version is kept for them.
    unstable: list[str] = Field(default_factory=list)
    copied: int = Field(0, description="Blobs read from the source by this backup")
    reused: int = Field(0, description="Blobs unchanged since the previous backup")

    def entry(self, name: str) -> BlobEntry | None:
        for blob in self.blobs:
            if blob.name == name:
                return blob
        return None


class FileManifest(CatalogManifest):
    """The commit record of one file backup."""

    format_version: int = FORMAT_VERSION
    engine: Literal["blob"] = "blob"
    kind: str = "files"
    account: str
    previous: str | None = None
    containers: dict[str, ContainerRecord]
    content: dict[str, StoredContent] = Field(
        default_factory=dict, description="Content objects by the sha256 of their content"
    )
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def blob_count(self) -> int:
        return sum(len(record.blobs) for record in self.containers.values())

    @property
    def size(self) -> int:
        """The containers' size in bytes, as if every blob were stored on its own."""
        return sum(b.size for record in self.containers.values() for b in record.blobs)

    @property
    def recipients(self) -> list[str]:
        found: list[str] = []
        for stored in self.content.values():
            for recipient in stored.encryption.recipients if stored.encryption else []:
                if recipient not in found:
                    found.append(recipient)
        return found

    def container(self, name: str) -> ContainerRecord:
        try:
            return self.containers[name]
        except KeyError:
            held = ", ".join(sorted(self.containers)) or "none"
            raise BadInput(
                f"backup {self.id} holds no container {name!r} (it holds {held})"
            ) from None


@dataclass(frozen=True)
class FileBackup(CatalogBackup[FileManifest]):
    """A complete (or damaged) file backup found in a repository."""

    def summary(self) -> dict[str, Any]:
        manifest = self.manifest
        return {
            "id": self.id,
            "engine": ENGINE,
            "system": self.system,
            "consistent_point": self.consistent_point.isoformat(),
            "containers": sorted(manifest.containers) if manifest else [],
            "blobs": manifest.blob_count if manifest else 0,
            "size": manifest.size if manifest else 0,
            "kind": "DAMAGED" if self.damaged else manifest.kind if manifest else "files",
            "problem": self.problem,
        }


@dataclass(frozen=True)
class FileRetentionPlan:
    keep: list[FileBackup]
    delete: list[FileBackup]
    damaged: list[FileBackup] = field(default_factory=list)
    #: Content objects no kept backup references (deleted with the backups).
    unreferenced: list[str] = field(default_factory=list)
    #: Why no content is deleted this time (a damaged manifest), or None.
    content_kept_because: str | None = None


class FileCatalog(SystemCatalog[FileManifest, FileBackup]):
    """One system's file backups in one repository."""

    root_name = ROOT
    lock_name = ENGINE
    noun = "file backups"
    shared_folders = ("content/",)
    manifest_type = FileManifest
    backup_type = FileBackup

    def content_key(self, sha256: str, encrypted: bool) -> str:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return f"{self.root}content/{sha256[:2]}/{sha256}" + (crypto.SUFFIX if encrypted else "")

    def content_objects(self) -> dict[str, datetime]:
        """Every stored content object, with when it was written."""
        if not self.store.exists():
            return {}
        return {info.key: info.last_modified for info in self.store.list(self.root + "content/")}

    # -- writing ------------------------------------------------------------------------------

    def check_before_commit(self, prefix: str, manifest: FileManifest) -> None:
        """Every content object the manifest references must be stored with its size."""
        present = {info.key: info.size for info in self.store.list(self.root + "content/")}
        for sha, stored in manifest.content.items():
            if present.get(stored.key) != stored.size:
                raise ChecksumMismatch(
                    f"{stored.key} (content {sha[:12]}…): stored "
                    f"{present.get(stored.key, 'no')} bytes, the manifest says {stored.size}"
                )

    def put_content(self, sha256: str, chunks: Iterable[bytes]) -> StoredContent:
        """Store a blob's content (already checked to have ``sha256``), encrypted to the
        repository's recipients when it has some."""
        recipients = self.repository.encrypt_to
        key = self.content_key(sha256, bool(recipients))
        stored = Digest()
        if recipients:
            chunks = crypto.encrypt(chunks, recipients)
        self.store.put(key, hashed(chunks, stored))
        return StoredContent(
            key=key,
            size=stored.size,
            sha256=stored.sha256,
            encryption=ObjectEncryption(recipients=list(recipients)) if recipients else None,
        )

    # -- reading ------------------------------------------------------------------------------

    def latest(self, kind: str | None = "files") -> FileBackup | None:
        """The newest usable backup (of ``kind``; None: of any kind), or None."""
        return next(
            (
                b
                for b in self.backups()
                if b.manifest is not None and kind in (None, b.manifest.kind)
            ),
            None,
        )

    def find(
        self,
        backup_id: str | None = None,
        before: datetime | None = None,
        kind: str = "files",
    ) -> FileBackup:
        """The backup to restore: by id (of any kind), else the latest of ``kind`` before a
        time, or the latest (an in-place restore's ``pre-restore`` backup only by its id)."""
        everything = self.backups()
        where = self.where
        if backup_id:
            return self._by_id(everything, backup_id)
        good = [b for b in everything if b.manifest is not None and b.manifest.kind == kind]
        if before is not None:
            good = [b for b in good if b.consistent_point < before]
            if not good:
                raise BackupNotFound(f"no file backup before {before.isoformat()} in {where}")
        if not good:
            raise BackupNotFound(f"no file backup in {where}")
        return good[0]

    def identity_for(self, backup: FileBackup) -> crypto.Identity | None:
        """The identity that decrypts ``backup``'s content, None when stored in clear;
        :class:`~dr_runbooks.errors.IdentityRequired` before anything is touched otherwise."""
        assert backup.manifest is not None
        recipients = backup.manifest.recipients
        if not recipients:
            return None
        return self.repository.keyring.identity_for(recipients, f"file backup {backup.id}")

    def read_content(
        self, stored: StoredContent, identity: crypto.Identity | None
    ) -> Iterator[bytes]:
        """A content object's content; raises :class:`ChecksumMismatch` at the end when the
        stored bytes differ from the manifest (check the content's own sha256 as well)."""
        digest = Digest()
        with self.store.open(stored.key) as handle:
            chunks: Iterator[bytes] = hashed(read_chunks(handle), digest)
            if stored.encryption is not None:
                if identity is None:
                    raise BadInput(f"{stored.key} is encrypted and no identity was given")
                chunks = crypto.decrypt(chunks, identity, stored.key)
            yield from chunks
        check_stored(stored.key, digest, stored.size, stored.sha256)

    # -- checking -----------------------------------------------------------------------------

    def verify(self, backup: FileBackup) -> list[str]:
        """Re-read every content object the backup references and compare its size and
        sha256 with the manifest (no key needed); return the problems found."""
        assert backup.manifest is not None
        problems = []
        for sha, stored in sorted(backup.manifest.content.items()):
            digest = Digest()
            try:
                with self.store.open(stored.key) as handle:
                    for chunk in read_chunks(handle):
                        digest.update(chunk)
            except OperationFailed as exc:
                problems.append(f"{stored.key}: {exc}")
                continue
            if digest.size != stored.size or digest.sha256 != stored.sha256:
                problems.append(
                    f"{stored.key} (content {sha[:12]}…): size {digest.size} sha256 "
                    f"{digest.sha256[:12]}…, the manifest says size {stored.size} "
                    f"sha256 {stored.sha256[:12]}…"
                )
        for name, record in backup.manifest.containers.items():
            missing = {b.sha256 for b in record.blobs} - set(backup.manifest.content)
            if missing:
                problems.append(f"{name}: {len(missing)} blobs reference no content object")
        return problems

    # -- retention ----------------------------------------------------------------------------

    def plan_retention(
        self,
        now: datetime | None = None,
        retention_days: int | None = None,
        min_keep: int | None = None,
    ) -> FileRetentionPlan:
        """Backups older than the retention (keeping at least ``min_keep``), and the content
        objects that no kept backup references and that are older than :data:`GRACE`."""
        now = now or datetime.now(UTC)
        days = self.repository.retention_days if retention_days is None else retention_days
        keep_at_least = self.repository.min_keep if min_keep is None else min_keep
        everything = self.backups()
        damaged = [b for b in everything if b.damaged]
        cutoff = now - timedelta(days=days)
        keep: list[FileBackup] = []
        delete: list[FileBackup] = []
        scheduled = 0
        for backup in (b for b in everything if b.manifest is not None):  # newest first
            # min_keep counts the scheduled backups, not what in-place restores kept.
            if backup.consistent_point >= cutoff or (
                backup.manifest is not None
                and backup.manifest.kind == "files"
                and scheduled < keep_at_least
            ):
                keep.append(backup)
                scheduled += backup.manifest is not None and backup.manifest.kind == "files"
            else:
                delete.append(backup)
        if damaged:
            return FileRetentionPlan(
                keep,
                delete,
                damaged,
                content_kept_because=f"{len(damaged)} damaged manifest(s): "
                + ", ".join(b.id for b in damaged),
            )
        referenced = {
            stored.key
            for backup in keep
            if backup.manifest is not None
            for stored in backup.manifest.content.values()
        }
        unreferenced = sorted(
            key
            for key, written in self.content_objects().items()
            if key not in referenced and now - written > GRACE
        )
        return FileRetentionPlan(keep, delete, damaged, unreferenced)

    def apply_retention(self, plan: FileRetentionPlan) -> None:
        """Delete the plan's backups (manifest first), then the unreferenced content."""
        self.delete(plan.delete)
        self.store.delete(plan.unreferenced)
