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

The marker, the manifest last, the lock and the removal of what dead attempts left are the
protocol all the non-database systems share (:mod:`dr_runbooks.catalog`). Retention keeps
the repository's ``retention_days`` and at least its ``min_keep`` newest backups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from dr_runbooks.catalog import (
    CatalogBackup,
    CatalogManifest,
    StoredObject,
    SystemCatalog,
    check_stored,
)
from dr_runbooks.streams import Digest, hashed

__all__ = ["ROOT", "SecretObject", "VaultBackup", "VaultCatalog", "VaultManifest"]

ROOT = "vault"

#: One secret's backup as stored.
SecretObject = StoredObject


class VaultManifest(CatalogManifest):
    """The commit record of one vault backup."""

    format_version: int = 1
    engine: Literal["keyvault"] = "keyvault"
    vault: str
    secrets: dict[str, SecretObject]
    skipped: dict[str, str] = Field(default_factory=dict, description="Secret → why not")
    protection: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class VaultBackup(CatalogBackup[VaultManifest]):
    """A complete (or damaged) vault backup found in a repository."""


class VaultCatalog(SystemCatalog[VaultManifest, VaultBackup]):
    """One system's vault backups in one repository."""

    root_name = ROOT
    lock_name = "keyvault"
    noun = "vault backups"
    manifest_type = VaultManifest
    backup_type = VaultBackup

    def put_secret(self, prefix: str, name: str, data: bytes) -> SecretObject:
        """Store one secret's backup as Key Vault returned it (already protected by it)."""
        key = f"{prefix}secrets/{name}.kvbackup"
        digest = Digest()
        self.store.put(key, hashed([data], digest))
        return SecretObject(key=key, size=digest.size, sha256=digest.sha256)

    def read_secret(self, stored: SecretObject) -> bytes:
        """A secret's backup, checked against the manifest's size and sha256."""
        data = self.store.read_bytes(stored.key)
        check_stored(stored.key, data, stored.size, stored.sha256)
        return data
