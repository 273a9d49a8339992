"""Backup repository steps: choose, fetch and verify, copy, retention, clean-up."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks import pg_backup
from dr_runbooks.repository import Backup, Manifest, Repository
from tasks._runtime import logger, reported_progress, transient_only

__all__ = [
    "backup_fetch_verified",
    "repository_apply_retention",
    "repository_choose_backup",
    "repository_copy_backup",
    "repository_remove_abandoned",
]


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def repository_choose_backup(
    repository: Repository,
    engine: str,
    system: str,
    database: str,
    backup_id: str | None = None,
    before: datetime | None = None,
) -> Backup:
    """The backup to restore: an id, the latest before a time, or the latest (by consistent
    point, never by listing order)."""
    backup = repository.find(engine, system, database, backup_id=backup_id, before=before)
    logger().info(
        "chose backup %s (consistent point %s, %d bytes) from %s",
        backup.id,
        backup.consistent_point.isoformat(),
        backup.size,
        repository.name,
    )
    return backup


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def backup_fetch_verified(repository: Repository, backup: Backup) -> pg_backup.FetchedBackup:
    """Download the backup and verify every object's size and sha256 before anything else."""
    with reported_progress("download"):
        fetched = pg_backup.fetch_backup(repository, backup)
    logger().info("downloaded %s; every checksum matches the manifest", backup.id)
    return fetched


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def repository_copy_backup(source: Repository, manifest: Manifest, target: Repository) -> str:
    """Copy a committed backup to another repository (checksums re-checked on the way)."""
    backup = source.find(
        manifest.engine,
        manifest.system,
        manifest.database,
        backup_id=manifest.id,
        include_legacy=False,
    )
    with reported_progress("copy"):
        pg_backup.copy_backup(source, backup, target)
    logger().info("copied %s to %s", manifest.id, target.name)
    return target.name


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def repository_apply_retention(
    repository: Repository,
    engine: str,
    system: str,
    database: str,
    dry_run: bool = False,
    include_legacy: bool = False,
    retention_days: int | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Delete backups older than the repository's retention (or ``retention_days`` for backups
    of ``kind``), keeping at least ``min_keep``."""
    plan = repository.plan_retention(
        engine,
        system,
        database,
        include_legacy=include_legacy,
        retention_days=retention_days,
        kind=kind,
    )
    log = logger()
    for backup in plan.delete:
        if dry_run:
            log.info("retention (dry run) would delete %s from %s", backup.id, repository.name)
        else:
            repository.delete_backup(backup)
            log.info("retention deleted %s from %s", backup.id, repository.name)
    return {
        "repository": repository.name,
        "kept": [b.id for b in plan.keep],
        "deleted" if not dry_run else "would_delete": [b.id for b in plan.delete],
    }


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def repository_remove_abandoned(repository: Repository, engine: str) -> list[str]:
    """Remove attempts that died more than a day ago (marker, no manifest)."""
    if not repository.store.exists():
        return []
    removed = repository.remove_abandoned(engine)
    for prefix in removed:
        logger().warning("removed abandoned backup attempt %s in %s", prefix, repository.name)
    return removed
