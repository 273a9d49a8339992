"""Where a Key Vault system (``engine: keyvault``) stands: one row, ``(secrets)``.

In order of precedence: ``MISSING`` (no backup), ``STALE`` (the newest is older than
``keyvault.rpo``, a day by default: the backup runs daily), ``FAILED`` (its latest
checksum verification failed), ``POLICY`` (the vault's soft delete or purge protection is
off), ``DAMAGED`` (a manifest cannot be read), ``OK``. The detail always says that the backup
is restorable only within the same subscription and geography.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dr_runbooks.config import Config, KeyVaultConfig
from dr_runbooks.errors import DRError
from dr_runbooks.keyvault.backup import LIMIT, Protection, audit_vault
from dr_runbooks.keyvault.catalog import VaultCatalog
from dr_runbooks.repository import Repository
from dr_runbooks.statusrow import DatabaseStatus
from dr_runbooks.text import first_line

__all__ = ["SECRETS_ROW", "default_clients", "protection_of", "vault_status"]

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
    keyvault: KeyVaultConfig, clients: ClientFactory | None
) -> tuple[Protection | None, str | None]:
    """The vault's protection, or None and why it could not be read."""
    if clients is None:
        return None, "no credentials for the vault here"
    try:
        return audit_vault(clients(keyvault.vault_url)), None
    except DRError as exc:
        return None, first_line(exc)


def vault_status(
    config: Config,
    name: str,
    repository: Repository,
    protection: Protection | None,
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
    policy = (
        f"vault: {protection.describe()}" if protection else f"vault policy not read ({problem})"
    )
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
    elif protection is not None and not protection.compliant:
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
