"""File storage steps: load the account, audit its policy, back up, verify, retain, restore."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import PREFECT_BLOCKS
from blocks.age import AGE_SECRETS
from blocks.azure import MANAGEMENT_CLIENTS
from blocks.files import AzureFileStorage
from blocks.loading import load_block
from dr_runbooks.config import load_config
from dr_runbooks.errors import ConfigError
from dr_runbooks.files import (
    BlobAccount,
    FileBackup,
    FileCatalog,
    FileManifest,
    FileRestorePlan,
    FileRestoreResult,
    PolicyAudit,
    audit,
    backup_files,
    plan_restore,
    read_settings,
    restore_files,
)
from dr_runbooks.files.status import FILES_ROW, policy_of, policy_text, read_policy
from dr_runbooks.repository import Repository
from dr_runbooks.targets import repository_from_config, repository_from_spec
from dr_runbooks.text import human_duration
from tasks._runtime import logger, transient_only

__all__ = [
    "files_apply_retention",
    "files_audit_policy",
    "files_backup",
    "files_choose_backup",
    "files_load_account",
    "files_load_repository",
    "files_plan_restore",
    "files_restore",
    "files_verify",
    "files_verify_system",
]


@task(cache_policy=NO_CACHE)
def files_load_account(spec: str) -> tuple[BlobAccount, list[str]]:
    """The storage account and its containers: a saved ``AzureFileStorage`` block's name, or
    ``env:VAR``, a variable holding a connection string (no retries: bad input)."""
    if spec.startswith("env:"):
        value = os.environ.get(spec[4:])
        if not value:
            raise ConfigError(f"{spec}: the environment variable {spec[4:]} is not set")
        account, containers = BlobAccount.from_connection_string(value), []
    else:
        block = load_block(spec, AzureFileStorage, "file storage block")
        if not isinstance(block, AzureFileStorage):
            raise ConfigError(f"block {spec!r} is not a file storage block")
        account, containers = block.get_blob_account(), list(block.containers)
    logger().info("storage account %s, containers %s", account.location, containers or "-")
    return account, containers


@task(cache_policy=NO_CACHE)
def files_load_repository(spec: str, config_path: str | None = None) -> Repository:
    """The backup repository: a dr.yaml name, a container URL, a directory, a block name."""
    return repository_from_spec(spec, load_config(config_path), PREFECT_BLOCKS, secrets=AGE_SECRETS)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def files_audit_policy(
    account: BlobAccount, containers: list[str], system: str = "", config_path: str | None = None
) -> PolicyAudit:
    """Soft delete, container soft delete, versioning and redundancy against the plan: through
    Resource Manager when dr.yaml places the system's account there, else through the blob
    data plane. A shortfall or a setting not read is logged as a warning and reported, never
    a failure of the backup."""
    declared = load_config(config_path).systems.get(system) if system else None
    if declared is not None and declared.files is not None:
        result = read_policy(declared.files, MANAGEMENT_CLIENTS.storage, account, None, containers)
    else:
        why = f"{system or 'the system'} is not a file storage system in dr.yaml"
        result = audit(read_settings(account, containers, management=why))
    if result.compliant:
        logger().info("%s: %s", account.location, result.describe())
    elif result.state == "POLICY":
        logger().warning(
            "%s falls short of the plan (POLICY): %s", account.location, result.describe()
        )
    else:
        logger().warning("%s: not every setting was read: %s", account.location, result.describe())
    return result


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def files_backup(
    account: BlobAccount, repository: Repository, system: str, containers: list[str]
) -> FileManifest:
    """An incremental backup of the containers (blobs changed since the last one are read)."""
    manifest = backup_files(account, FileCatalog(repository, system), containers)
    for name, record in manifest.containers.items():
        logger().info(
            "%s: %d blobs, %d read, %d unchanged, %d deleted since the last backup%s",
            name,
            len(record.blobs),
            record.copied,
            record.reused,
            len(record.deleted),
            f"; kept changing: {', '.join(record.unstable)}" if record.unstable else "",
        )
    return manifest


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def files_verify(repository: Repository, system: str, backup_id: str) -> list[str]:
    """Re-read every content object of a backup against its manifest; record the outcome."""
    catalog = FileCatalog(repository, system)
    backup = catalog.find(backup_id=backup_id)
    problems = catalog.verify(backup)
    catalog.record_verification(
        backup, {"kind": "checksums", "ok": not problems, "problems": problems}
    )
    if problems:
        logger().error("file backup %s: %s", backup_id, "; ".join(problems[:5]))
    return problems


def _block_account(name: str) -> BlobAccount:
    block = load_block(name, AzureFileStorage, "file storage block")
    if not isinstance(block, AzureFileStorage):
        raise ConfigError(f"block {name!r} is not a file storage block")
    return block.get_blob_account()


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def files_verify_system(name: str, config_path: str | None = None) -> dict[str, Any]:
    """verify-backups for a file storage system declared in dr.yaml: the newest backup's
    checksums (recorded), its age against the file-storage RPO, and the account's policy."""
    config = load_config(config_path)
    system = config.system(name)
    if system.files is None:
        raise ConfigError(f"system {name!r} is not file storage (engine: blob)")
    repository = repository_from_config(config, system.repositories[0], PREFECT_BLOCKS, AGE_SECRETS)
    policy, problem = policy_of(system.files, _block_account, MANAGEMENT_CLIENTS.storage)
    catalog = FileCatalog(repository, name)
    newest = catalog.latest()
    result: dict[str, Any] = {
        "system": name,
        "database": FILES_ROW,
        "repository": repository.name,
        "backup_id": newest.id if newest else None,
        "age": "n/a",
        "outcome": "ok",
        "detail": "",
        "policy": policy.summary() if policy else {"state": "unknown", "problem": problem},
    }
    if newest is None:
        result.update(outcome="missing", detail="no complete file backup")
        return result
    age = datetime.now(UTC) - newest.consistent_point
    rpo = config.objectives.rpo.file_storage
    result["age"] = human_duration(age)
    problems = catalog.verify(newest)
    catalog.record_verification(
        newest, {"kind": "checksums", "ok": not problems, "problems": problems}
    )
    if problems:
        result.update(outcome="failed", detail=problems[0])
    elif age > rpo:
        result.update(outcome="stale", detail=f"older than the objective {human_duration(rpo)}")
    elif policy is not None and policy.state == "POLICY":
        result.update(outcome="policy", detail=policy.describe())
    else:
        result["detail"] = f"checksums ok; {policy_text(policy, problem)}"
    return result


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def files_apply_retention(
    repository: Repository, system: str, dry_run: bool, now: datetime | None = None
) -> dict[str, Any]:
    """Delete backups past the repository's retention and the content only they held.
    ``now`` (default: now) pins the clock, so a dry run shown first and the run that follows
    it judge the same backups old."""
    catalog = FileCatalog(repository, system)
    with catalog.locked("file retention"):
        plan = catalog.plan_retention(now=now)
        removed = catalog.remove_abandoned(now=now) if not dry_run else catalog.abandoned(now=now)
        if not dry_run:
            catalog.apply_retention(plan)
    return {
        "dry_run": dry_run,
        "kept": [b.id for b in plan.keep],
        "deleted": [b.id for b in plan.delete],
        "content_deleted": len(plan.unreferenced),
        "content_kept_because": plan.content_kept_because,
        "abandoned_removed": removed,
    }


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def files_choose_backup(
    repository: Repository, system: str, backup_id: str | None, before: datetime | None
) -> FileBackup:
    return FileCatalog(repository, system).find(backup_id=backup_id, before=before)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def files_plan_restore(
    account: BlobAccount,
    repository: Repository,
    backup: FileBackup,
    container: str,
    prefix: str | None,
    blob: str | None,
    target: str | None,
    in_place: bool,
) -> FileRestorePlan:
    catalog = FileCatalog(repository, backup.system)
    return plan_restore(
        account,
        catalog,
        backup,
        container,
        prefix=prefix,
        blob=blob,
        target=target,
        in_place=in_place,
    )


@task(cache_policy=NO_CACHE)
def files_restore(
    account: BlobAccount, repository: Repository, plan: FileRestorePlan, approved: bool
) -> FileRestoreResult:
    """Write the backup's blobs into the target and read them back against the manifest.
    No retries: in place, a second attempt would keep the first one's half-restored state."""
    catalog = FileCatalog(repository, plan.backup.system)
    result = restore_files(account, catalog, plan, approved=approved)
    if result.earlier_kept_in:
        logger().warning(
            "earlier runs of this restore kept what they overwrote in backup(s) %s",
            ", ".join(result.earlier_kept_in),
        )
    logger().info(
        "%d blobs restored into %s and verified%s",
        result.verified,
        result.target,
        f"; what was there is kept in backup {result.kept_in}" if result.kept_in else "",
    )
    return result
