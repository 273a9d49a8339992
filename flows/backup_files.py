"""Runbook: file storage backup (the plan's daily file-storage backup, 24 h RPO).

1. Load the storage account (a saved `DR Azure File Storage` block, or `env:VAR` with a
   connection string) and the backup repository.
2. Audit the account's own protection against the plan: blob soft delete ≥ 30 days,
   container soft delete, versioning, zone- or geo-redundancy; read through Azure Resource
   Manager when dr.yaml names the account's subscription and resource group, else through
   the blob data plane (container soft delete then unverified). A shortfall is reported
   (state POLICY) and does not stop the backup.
3. Back up each container incrementally: blobs whose ETag and MD5 are unchanged since the
   last backup are carried over; the others are read whole, pinned to their ETag, and stored
   once under their sha256; the manifest (every blob, what was deleted) is written last.
4. Verify the new backup: every content object it references, re-read against its checksum.
5. Retention: backups past the repository's retention go, with the content only they held.
6. Table artifacts: blobs, read, unchanged, deleted; the policy audit, setting by setting.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import BadInput, ChecksumMismatch
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.files import (
    files_apply_retention,
    files_audit_policy,
    files_backup,
    files_load_account,
    files_load_repository,
    files_verify,
)

__all__ = ["backup_files"]

ACCOUNT: Any = Field(
    description="The storage account: a saved `DR Azure File Storage` block's name, or "
    "`env:VAR`, an environment variable holding its connection string."
)
CONTAINERS: Any = Field([], description="Containers to back up (default: the block's).")
FILE_REPOSITORY: Any = Field(
    description="Where the backups go: a dr.yaml repository name, a directory, a container "
    "URL, a repository block's name, or `env:VAR`."
)


@flow(name="backup-files", log_prints=True)
@runbook
def backup_files(
    system: str = p.SYSTEM,
    account: str = ACCOUNT,
    repository: str = FILE_REPOSITORY,
    containers: list[str] = CONTAINERS,
    retention: bool = p.RETENTION,
    retention_dry_run: bool = p.RETENTION_DRY_RUN,
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Back up a storage account's containers into a backup repository."""
    with Runbook("backup-files", system=system, config_path=config_path) as rb:
        with rb.step("load"):
            blob_account, declared = files_load_account(account)
            names = list(containers) or declared
            if not names:
                raise BadInput(f"no containers named for {system} (in the run or the block)")
            store = files_load_repository(repository, config_path or None)
        with rb.step("audit policy") as step:
            policy = files_audit_policy(blob_account, names, system, config_path or None)
            step.detail = f"{policy.state}: {policy.describe()}"
        with rb.step("back up", detail=", ".join(names)):
            manifest = files_backup(blob_account, store, system, names)
        with rb.step("verify checksums"):
            problems = files_verify(store, system, manifest.id)
            if problems:
                raise ChecksumMismatch(f"file backup {manifest.id}: {problems[0]}")
        pruned = None
        if retention:
            with rb.step("retention"):
                pruned = files_apply_retention(store, system, retention_dry_run)
        rows = [
            {
                "container": name,
                "blobs": len(record.blobs),
                "read": record.copied,
                "unchanged": record.reused,
                "deleted since last": len(record.deleted),
                "kept changing": len(record.unstable),
            }
            for name, record in manifest.containers.items()
        ]
        rb.publish(
            f"backup-files-{system}",
            f"File backup {manifest.id} of {system}; account policy {policy.state}: "
            f"{policy.describe()}",
            table=rows,
        )
        rb.publish(
            f"backup-files-{system}-policy",
            f"Storage account {policy.account} against the plan ({policy.source}): {policy.state}",
            table=policy.rows(),
        )
        return {
            "backup_id": manifest.id,
            "system": system,
            "consistent_point": manifest.consistent_point.isoformat(),
            "containers": rows,
            "policy": policy.summary(),
            "retention": pruned,
        }
