"""Where a Key Vault system (``engine: keyvault``) stands: one row, ``(secrets)``.

In order of precedence: ``MISSING`` (no backup), ``STALE`` (the newest is older than
``keyvault.rpo``, a day by default: the backup runs daily), ``FAILED`` (its latest
checksum verification failed), ``POLICY`` (the vault's soft delete is off or keeps deleted
secrets for fewer days than the plan's, or purge protection is off: each with the plan's
value), ``DAMAGED`` (a manifest cannot be read), ``OK``. The detail always says that the
backup is restorable only within the same subscription and geography.

The vault's protection is read through Azure Resource Manager when the system names its
subscription and resource group, else (or when Resource Manager refuses) from its secrets'
recovery levels (:mod:`dr_runbooks.keyvault.protection`). A setting that could not be read
is said in the detail, with why, and does not change the state; it is never reported as
meeting the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dr_runbooks.config import Config, KeyVaultConfig
from dr_runbooks.keyvault.backup import LIMIT
from dr_runbooks.keyvault.catalog import VaultCatalog
from dr_runbooks.keyvault.protection import VaultAudit, VaultClients, vault_protection
from dr_runbooks.repository import Repository
from dr_runbooks.statusrow import DatabaseStatus

__all__ = ["SECRETS_ROW", "default_clients", "protection_of", "protection_text", "vault_status"]

SECRETS_ROW = "(secrets)"

#: Builds a ``SecretClient`` for a vault URL (the tasks and the CLI pass one; the engine
#: never imports Prefect or builds credentials).
ClientFactory = Callable[[str], Any]


def default_clients(vault_url: str) -> Any:
    """A ``SecretClient`` signing in with ``DefaultAzureCredential`` (what ``dr status``
    uses; the flows get theirs from a block)."""
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    return SecretClient(vault_url, DefaultAzureCredential())


def protection_of(
    keyvault: KeyVaultConfig,
    clients: ClientFactory | None,
    management: VaultClients | None = None,
) -> tuple[VaultAudit | None, str | None]:
    """The vault's protection, or None and why it could not be read."""
    return vault_protection(keyvault, management, clients)


def vault_status(
    config: Config,
    name: str,
    repository: Repository,
    protection: VaultAudit | None,
    problem: str | None = None,
    now: datetime | None = None,
    rpo: timedelta = timedelta(hours=24),
) -> DatabaseStatus:
    """The status row of the Key Vault system ``name``; ``rpo``: dr.yaml's ``keyvault.rpo``."""
    now = now or datetime.now(UTC)
    catalog = VaultCatalog(repository, name)
    backups = catalog.backups()
    status = DatabaseStatus(
        system=name,
        engine="keyvault",
        database=SECRETS_ROW,
        repository=repository.name,
        state="MISSING",
        detail="no vault backup",
        rpo_seconds=rpo.total_seconds(),
        damaged=[b.id for b in backups if b.damaged],
    )
    policy = protection_text(protection, problem)
    newest = catalog.latest()
    if newest is None or newest.manifest is None:
        status.detail = f"no vault backup; {policy}"
        return status
    age = now - newest.consistent_point
    status.newest_backup = newest.id
    status.newest_point = newest.consistent_point
    status.age_seconds = age.total_seconds()
    records = [r for r in catalog.verifications(newest) if r.get("kind") == "checksums"]
    last = records[-1] if records else None
    if last is not None and last.get("ok"):
        status.verified_backup = newest.id
        status.verified_point = newest.consistent_point
    summary = f"{len(newest.manifest.secrets)} secrets, {LIMIT}"
    if age > rpo:
        status.state, detail = (
            "STALE",
            f"newest vault backup {age.total_seconds() / 3600:.1f} h old",
        )
    elif last is not None and not last.get("ok"):
        status.state, detail = "FAILED", f"backup {newest.id}: {(last.get('problems') or ['?'])[0]}"
    elif protection is not None and protection.state == "POLICY":
        status.state, detail = (
            "POLICY",
            f"the vault falls short of the plan: {protection.describe()}",
        )
    elif status.damaged:
        status.state, detail = "DAMAGED", f"unreadable manifest(s): {', '.join(status.damaged)}"
    else:
        status.state, detail = "OK", summary
    status.detail = "; ".join(dict.fromkeys([detail, summary, policy]))
    return status


def protection_text(protection: VaultAudit | None, problem: str | None) -> str:
    """The vault's protection as a status detail or a verification result says it."""
    if protection is None:
        return f"vault policy not read ({problem})"
    if protection.state == "UNVERIFIED":
        return f"vault policy not fully verified: {protection.describe()}"
    return f"vault: {protection.describe()}"
