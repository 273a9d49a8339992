"""Key Vault secrets: back up with Key Vault's own ``backup_secret``, audit the vault's
protection, restore with ``restore_secret_backup``.

What ``backup_secret`` returns is every version of the secret, encrypted by Key Vault: it
is protected without our encryption, and it can be restored only into a vault of the same
subscription and Azure geography. That limit is said in the manifest, ``dr status`` and
the docs: this backup covers a deleted or damaged secret or vault, not the loss of the
subscription or the geography.

A restore never overwrites: a secret the target vault already holds (or holds deleted, in
its soft-delete retention) is reported and left alone. One it holds with exactly the versions
the backup recorded (a restored secret is a replica, its versions included: what a restore
killed half-way restored) is reported as already restored, not as a conflict.

``client`` is an ``azure.keyvault.secrets.SecretClient`` (the blocks build it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from dr_runbooks.azure.errors import error_code, translated
from dr_runbooks.errors import BadInput, DRError
from dr_runbooks.keyvault.catalog import VaultBackup, VaultCatalog, VaultManifest
from dr_runbooks.repository import new_backup_id
from dr_runbooks.text import first_line

__all__ = [
    "LIMIT",
    "Protection",
    "RestoreOutcome",
    "audit_vault",
    "backup_vault",
    "restore_vault",
    "verify_vault_backup",
]

#: What a Key Vault backup can and cannot do, said wherever its state is shown.
LIMIT = "restorable only into a vault of the same subscription and geography"


@dataclass(frozen=True)
class Protection:
    """The vault's soft delete and purge protection, as its secrets' recovery level says."""

    soft_delete: bool | None
    purge_protection: bool | None
    recovery_levels: list[str] = field(default_factory=list)

    @property
    def compliant(self) -> bool:
        return bool(self.soft_delete and self.purge_protection)

    def describe(self) -> str:
        if self.soft_delete is None:
            return "not read (the vault holds no secret to read it from)"
        missing = [
            what
            for on, what in (
                (self.soft_delete, "soft delete"),
                (self.purge_protection, "purge protection"),
            )
            if not on
        ]
        return (
            "soft delete and purge protection on" if not missing else f"{' and '.join(missing)} OFF"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "soft_delete": self.soft_delete,
            "purge_protection": self.purge_protection,
            "recovery_levels": self.recovery_levels,
        }


def _protection(levels: Sequence[str]) -> Protection:
    """``Purgeable``: no soft delete; ``…Recoverable+Purgeable``: soft delete without purge
    protection; ``Recoverable``, ``…+ProtectedSubscription``: both."""
    found = sorted(set(levels))
    if not found:
        return Protection(None, None)
    soft = all("Recoverable" in level for level in found)
    purge = soft and all("Purgeable" not in level for level in found)
    return Protection(soft, purge, found)


def _names(client: Any, vault: str) -> tuple[list[str], dict[str, str], list[str]]:
    """Every secret's name, those skipped (with why), and the recovery levels seen."""
    names: list[str] = []
    skipped: dict[str, str] = {}
    levels: list[str] = []
    with translated(f"listing the secrets of {vault}"):
        for properties in client.list_properties_of_secrets():
            if properties.recovery_level:
                level = properties.recovery_level
                levels.append(str(getattr(level, "value", level)))
            if properties.managed:
                skipped[properties.name] = "managed by a certificate: back up the certificate"
            else:
                names.append(properties.name)
    return sorted(names), skipped, levels


def audit_vault(client: Any) -> Protection:
    """The vault's soft delete and purge protection."""
    vault = str(client.vault_url)
    _, _, levels = _names(client, vault)
    return _protection(levels)


def backup_vault(
    client: Any,
    catalog: VaultCatalog,
    names: Sequence[str] = (),
    now: Callable[[], datetime] | None = None,
) -> VaultManifest:
    """Back up ``names`` (default: every secret) of the vault: each secret's
    ``backup_secret`` output stored, the manifest last. A secret named that the vault does
    not hold is bad input, found before anything is written."""
    clock = now or (lambda: datetime.now(UTC))
    vault = str(client.vault_url)
    available, skipped, levels = _names(client, vault)
    chosen = list(names) or available
    unknown = [n for n in chosen if n not in available and n not in skipped]
    if unknown:
        raise BadInput(f"{vault} holds no secret {', '.join(unknown)}")
    with catalog.locked("vault-backup"):
        leftovers = catalog.remove_leftovers()
        started = clock()
        backup_id = new_backup_id(started)
        prefix = catalog.begin(backup_id, started)
        try:
            stored = {}
            for name in chosen:
                if name in skipped:
                    continue
                with translated(f"backing up secret {name} of {vault}"):
                    # Listed first: a version added meanwhile makes them differ, which a
                    # restore then reads as "not the backup's" (the safe side).
                    versions = _versions(client, name)
                    data = client.backup_secret(name)
                stored[name] = catalog.put_secret(prefix, name, bytes(data)).model_copy(
                    update={"versions": versions}
                )
            manifest = VaultManifest(
                id=backup_id,
                system=catalog.system,
                vault=vault,
                started=started,
                finished=clock(),
                secrets=stored,
                skipped={n: why for n, why in skipped.items() if n in chosen or not names},
                protection={**_protection(levels).as_dict(), "limit": LIMIT},
                leftovers_removed=leftovers,
            )
            catalog.commit(prefix, manifest)
        except BaseException:
            catalog.abort(prefix)
            raise
    return manifest


def verify_vault_backup(catalog: VaultCatalog, backup: VaultBackup) -> dict[str, Any]:
    """Every secret object re-read against the manifest's sha256 (the content is Key
    Vault's own, readable only by Key Vault); the outcome is recorded beside the backup."""
    assert backup.manifest is not None
    problems = []
    for stored in backup.manifest.secrets.values():
        try:
            catalog.read_secret(stored)
        except DRError as exc:
            problems.append(first_line(exc))
    record = {
        "kind": "checksums",
        "ok": not problems,
        "problems": problems,
        "finished": datetime.now(UTC).isoformat(),
    }
    catalog.record_verification(backup, record)
    return record


def _versions(client: Any, name: str) -> list[str]:
    """The ids of every version of a secret (its properties only: no value is read)."""
    return sorted(
        str(properties.version)
        for properties in client.list_properties_of_secret_versions(name)
        if properties.version
    )


@dataclass
class RestoreOutcome:
    """What a restore did, secret by secret."""

    vault: str
    restored: list[str] = field(default_factory=list)
    #: Secrets left alone because the target holds them (or holds them deleted), with why.
    existing: dict[str, str] = field(default_factory=dict)
    #: Secrets the target already holds with exactly the backup's versions (an earlier
    #: restore's): nothing to do.
    already: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "vault": self.vault,
            "restored": self.restored,
            "already": self.already,
            "existing": self.existing,
        }


def restore_vault(
    client: Any, catalog: VaultCatalog, backup: VaultBackup, names: Sequence[str] = ()
) -> RestoreOutcome:
    """Restore ``names`` (default: every secret in the backup) into the client's vault; a
    secret already there is reported, never overwritten. The objects' checksums are checked
    before anything is sent."""
    assert backup.manifest is not None
    chosen = list(names) or sorted(backup.manifest.secrets)
    unknown = [n for n in chosen if n not in backup.manifest.secrets]
    if unknown:
        raise BadInput(f"backup {backup.id} holds no secret {', '.join(unknown)}")
    data = {name: catalog.read_secret(backup.manifest.secrets[name]) for name in chosen}
    vault = str(client.vault_url)
    outcome = RestoreOutcome(vault)
    for name in chosen:
        with translated(f"reading secret {name} of {vault}"):
            try:
                client.get_secret(name)
            except ResourceNotFoundError:
                pass
            else:
                recorded = (backup.manifest.secrets[name].model_extra or {}).get("versions")
                if recorded and _versions(client, name) == recorded:
                    outcome.already.append(name)
                else:
                    outcome.existing[name] = "the vault holds it: left as it is"
                continue
        with translated(f"restoring secret {name} into {vault}"):
            try:
                client.restore_secret_backup(data[name])
            except ResourceExistsError as exc:
                code = error_code(exc) or "Conflict"
                outcome.existing[name] = f"{code}: recover or purge the deleted secret first"
                continue
        outcome.restored.append(name)
    return outcome
