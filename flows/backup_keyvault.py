"""Runbook: Key Vault backup (the secrets of a vault, with Key Vault's own backup).

1. Load the vault (its client signs in as the worker's Azure identity, or a site block's) and
   the backup repository.
2. Audit the vault's own protection against the plan: soft delete kept ≥ 90 days and
   purge protection; read through Azure Resource Manager when dr.yaml names the vault's
   subscription and resource group, else from the secrets' recovery levels (the retention
   then unverified). A shortfall is reported (state POLICY) and does not stop the backup.
3. Back up every secret (or those dr.yaml names) with ``backup_secret``: each one's output
   stored as Key Vault returned it (already encrypted by the service, restorable only into
   a vault of the same subscription and geography), the manifest last.
4. Verify the new backup's checksums.
5. Retention: backups past the repository's retention go (its ``min_keep`` newest stay).
6. Table artifacts: the secrets and what was skipped, with the limit; the vault's
   protection, setting by setting.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import ChecksumMismatch
from dr_runbooks.keyvault import LIMIT
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.keyvault import (
    keyvault_apply_retention,
    keyvault_audit,
    keyvault_backup,
    keyvault_load,
    keyvault_verify,
)

__all__ = ["SITE", "backup_keyvault"]

SITE: Any = Field(
    "",
    description="A saved Azure site block whose credentials sign in to the vault (default: "
    "the worker's own Azure identity).",
)


@flow(name="backup-keyvault", log_prints=True)
@runbook
def backup_keyvault(
    system: str = p.SYSTEM,
    site: str = SITE,
    retention: bool = p.RETENTION,
    retention_dry_run: bool = p.RETENTION_DRY_RUN,
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Back up a Key Vault's secrets with Key Vault's own backup."""
    with Runbook("backup-keyvault", system=system, config_path=config_path) as rb:
        with rb.step("load"):
            client, settings, store = keyvault_load(system, site, config_path or None)
        with rb.step("audit protection") as step:
            protection = keyvault_audit(client, settings, site)
            step.detail = f"{protection.state}: {protection.describe()}"
        with rb.step("back up"):
            manifest = keyvault_backup(client, store, system, list(settings.secrets))
        with rb.step("verify checksums"):
            record = keyvault_verify(store, system, manifest.id)
            if not record["ok"]:
                raise ChecksumMismatch(f"vault backup {manifest.id}: {record['problems'][0]}")
        pruned = None
        if retention:
            with rb.step("retention"):
                pruned = keyvault_apply_retention(store, system, retention_dry_run)
        rows = [{"secret": name, "outcome": "backed up"} for name in manifest.secrets] + [
            {"secret": name, "outcome": f"skipped: {why}"} for name, why in manifest.skipped.items()
        ]
        rb.publish(
            f"backup-keyvault-{system}",
            f"Vault backup {manifest.id} of {system}: {len(manifest.secrets)} secrets; "
            f"{protection.describe()}; {LIMIT}",
            table=rows or None,
        )
        rb.publish(
            f"backup-keyvault-{system}-protection",
            f"Vault {protection.vault} against the plan ({protection.source}): {protection.state}",
            table=protection.rows(),
        )
        return {
            "system": system,
            "backup_id": manifest.id,
            "secrets": sorted(manifest.secrets),
            "skipped": manifest.skipped,
            "protection": protection.as_dict(),
            "limit": LIMIT,
            "retention": pruned,
        }
