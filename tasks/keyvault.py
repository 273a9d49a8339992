"""Key Vault (``engine: keyvault``) steps: load, audit, back up, verify, restore."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import PREFECT_BLOCKS
from blocks.age import AGE_SECRETS
from blocks.azure import MANAGEMENT_CLIENTS
from blocks.keyvault import vault_client
from dr_runbooks.config import KeyVaultConfig, load_config
from dr_runbooks.errors import ConfigError
from dr_runbooks.keyvault import (
    LIMIT,
    RestoreOutcome,
    VaultAudit,
    VaultBackup,
    VaultCatalog,
    VaultManifest,
    backup_vault,
    read_protection,
    restore_vault,
    vault_protection,
    verify_vault_backup,
)
from dr_runbooks.keyvault.status import SECRETS_ROW, protection_text
from dr_runbooks.repository import Repository
from dr_runbooks.targets import repository_from_config
from dr_runbooks.text import human_duration
from tasks._runtime import logger, transient_only

__all__ = [
    "keyvault_apply_retention",
    "keyvault_audit",
    "keyvault_backup",
    "keyvault_choose_backup",
    "keyvault_load",
    "keyvault_restore",
    "keyvault_verify",
    "keyvault_verify_system",
]


@task(cache_policy=NO_CACHE)
def keyvault_load(
    system: str, site: str = "", config_path: str | None = None, vault_url: str = ""
) -> tuple[Any, KeyVaultConfig, Repository]:
    """The client of the system's vault (or of ``vault_url``, a recovery vault), dr.yaml's
    settings and the system's first repository."""
    config = load_config(config_path)
    declared = config.system(system)
    if declared.keyvault is None:
        raise ConfigError(f"system {system!r} is not Key Vault secrets (engine: keyvault)")
    if not declared.repositories:
        raise ConfigError(f"system {system!r} names no repository in dr.yaml")
    repository = repository_from_config(
        config, declared.repositories[0], PREFECT_BLOCKS, AGE_SECRETS
    )
    client = vault_client(vault_url or declared.keyvault.vault_url, site)
    return client, declared.keyvault, repository


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def keyvault_audit(client: Any, settings: KeyVaultConfig, site: str = "") -> VaultAudit:
    """Soft delete, its retention and purge protection against the plan: through Resource
    Manager when dr.yaml places the vault there (signed in as its ``site``, else as
    ``site``, else the default credential), else from the secrets' recovery levels. A
    shortfall or a setting not read is a warning, never a failed backup."""
    settings = settings.model_copy(update={"site": settings.site or site or None})
    found = read_protection(settings, MANAGEMENT_CLIENTS.keyvault, lambda _url: client)
    log = logger().info if found.compliant else logger().warning
    log("%s (%s): %s; backups are %s", client.vault_url, found.state, found.describe(), LIMIT)
    return found


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def keyvault_backup(
    client: Any, repository: Repository, system: str, names: list[str]
) -> VaultManifest:
    """``backup_secret`` of every secret named (default: all), the manifest last."""
    manifest = backup_vault(client, VaultCatalog(repository, system), names)
    logger().info(
        "vault backup %s of %s: %d secrets%s",
        manifest.id,
        system,
        len(manifest.secrets),
        f"; skipped {', '.join(manifest.skipped)}" if manifest.skipped else "",
    )
    return manifest


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def keyvault_verify(repository: Repository, system: str, backup_id: str) -> dict[str, Any]:
    catalog = VaultCatalog(repository, system)
    return verify_vault_backup(catalog, catalog.find(backup_id))


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def keyvault_verify_system(name: str, config_path: str | None = None) -> dict[str, Any]:
    """verify-backups for a Key Vault system: the newest backup's checksums (recorded), its
    age against ``keyvault.rpo``, and the vault's protection against the plan."""
    config = load_config(config_path)
    declared = config.system(name)
    if declared.keyvault is None:
        raise ConfigError(f"system {name!r} is not Key Vault secrets (engine: keyvault)")
    if not declared.repositories:
        raise ConfigError(f"system {name!r} names no repository in dr.yaml")
    repository = repository_from_config(
        config, declared.repositories[0], PREFECT_BLOCKS, AGE_SECRETS
    )
    settings = declared.keyvault
    protection, problem = vault_protection(
        settings,
        MANAGEMENT_CLIENTS.keyvault,
        lambda url: vault_client(url, settings.site or ""),
    )
    catalog = VaultCatalog(repository, name)
    newest = catalog.latest()
    result: dict[str, Any] = {
        "system": name,
        "database": SECRETS_ROW,
        "repository": repository.name,
        "backup_id": newest.id if newest else None,
        "age": "n/a",
        "outcome": "ok",
        "detail": "",
        "policy": protection.as_dict() if protection else {"state": "unknown", "problem": problem},
    }
    if newest is None:
        result.update(outcome="missing", detail="no vault backup")
        return result
    age = datetime.now(UTC) - newest.consistent_point
    result["age"] = human_duration(age)
    record = verify_vault_backup(catalog, newest)
    if not record["ok"]:
        result.update(outcome="failed", detail=record["problems"][0])
    elif age > settings.rpo:
        result.update(
            outcome="stale", detail=f"older than the objective {human_duration(settings.rpo)}"
        )
    elif protection is not None and protection.state == "POLICY":
        result.update(outcome="policy", detail=f"vault: {protection.describe()}")
    else:
        result["detail"] = f"checksums ok; {LIMIT}; {protection_text(protection, problem)}"
    return result


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def keyvault_choose_backup(
    repository: Repository, system: str, backup_id: str | None
) -> VaultBackup:
    return VaultCatalog(repository, system).find(backup_id)


@task(cache_policy=NO_CACHE)
def keyvault_restore(
    client: Any, repository: Repository, backup: VaultBackup, names: list[str]
) -> RestoreOutcome:
    """``restore_secret_backup`` of each secret the vault does not hold; the others are
    reported, never overwritten. No retries: what a first attempt restored is then there."""
    outcome = restore_vault(client, VaultCatalog(repository, backup.system), backup, names)
    for name, why in outcome.existing.items():
        logger().warning("secret %s not restored into %s: %s", name, outcome.vault, why)
    logger().info(
        "%d secrets restored into %s%s",
        len(outcome.restored),
        outcome.vault,
        f"; already there as in the backup: {', '.join(outcome.already)}"
        if outcome.already
        else "",
    )
    return outcome


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def keyvault_apply_retention(
    repository: Repository, system: str, dry_run: bool, now: datetime | None = None
) -> dict[str, Any]:
    """Delete backups past the repository's retention and attempts abandoned a day ago.
    ``now`` (default: now) pins the clock, so a dry run shown first and the run that follows
    it judge the same backups old."""
    catalog = VaultCatalog(repository, system)
    with catalog.locked("vault retention"):
        expired = catalog.expired(now=now)
        abandoned = catalog.abandoned(now=now) if dry_run else catalog.remove_abandoned(now=now)
        if not dry_run:
            catalog.delete(expired)
    return {"dry_run": dry_run, "deleted": [b.id for b in expired], "abandoned_removed": abandoned}
