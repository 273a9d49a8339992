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

The marker, the manifest last, the lock and the removal of what dead attempts left are the
protocol all the non-database systems share (:mod:`dr_runbooks.catalog`): a backup killed at
any point leaves nothing a later backup or a listing trips on, and the next backup removes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from dr_runbooks import crypto
from dr_runbooks.catalog import (
    CatalogBackup,
    CatalogManifest,
    StoredObject,
    SystemCatalog,
    check_stored,
)
from dr_runbooks.errors import OperationFailed
from dr_runbooks.repository import ObjectEncryption
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
BUNDLE = "config.bundle"
CHECKED = "checked.json"


#: The bundle as stored.
StoredBundle = StoredObject


class ConfigManifest(CatalogManifest):
    """The commit record of one configuration backup."""

    format_version: int = FORMAT_VERSION
    engine: Literal["git"] = "git"
    source: str = Field(description="The remote's URL, without any credential")
    refs: dict[str, str] = Field(description="Every ref in the bundle and its object")
    head: str | None = Field(None, description="The branch the remote's HEAD named")
    bundle: StoredBundle


@dataclass(frozen=True)
class ConfigBackup(CatalogBackup[ConfigManifest]):
    """A complete (or damaged) configuration backup found in a repository."""


class ConfigCatalog(SystemCatalog[ConfigManifest, ConfigBackup]):
    """One system's configuration backups in one repository."""

    root_name = ROOT
    lock_name = ENGINE
    noun = "configuration backups"
    manifest_type = ConfigManifest
    backup_type = ConfigBackup

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
        try:
            check_stored(stored.key, digest, stored.size, stored.sha256)
        except OperationFailed:
            raw.unlink()
            raise
        if identity is None:
            raw.replace(path)
            return path
        with raw.open("rb") as handle, path.open("wb") as out:
            for chunk in crypto.decrypt(read_chunks(handle), identity, stored.key):
                out.write(chunk)
        raw.unlink()
        return path
