"""Backup repository steps: choose, copy, retention, clean-up, checksums, verification records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.repository import Backup, Manifest, Repository, copy_backup
from tasks._runtime import logger, reported_progress, transient_only

__all__ = [
    "repository_apply_retention",
    "repository_choose_backup",
    "repository_copy_backup",
    "repository_list_databases",
    "repository_newest_backup",
    "repository_record_verification",
    "repository_remove_abandoned",
    "repository_remove_leftovers",
    "repository_verify_checksums",
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
    point, never by listing order). An encrypted one only with an identity that decrypts it,
    found now, before anything is touched."""
    backup = repository.find(engine, system, database, backup_id=backup_id, before=before)
    logger().info(
        "chose backup %s (consistent point %s, %d bytes) from %s",
        backup.id,
        backup.consistent_point.isoformat(),
        backup.size,
        repository.name,
    )
    identity = repository.identity_for(backup)
    if identity is not None:
        logger().info("backup %s is encrypted; it decrypts with %s", backup.id, identity)
    return backup


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
        copy_backup(source, backup, target)
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
    deleted, protected = [], {b.id: reason for b, reason in plan.protected}
    for backup in plan.delete:
        if dry_run:
            log.info("retention (dry run) would delete %s from %s", backup.id, repository.name)
            deleted.append(backup.id)
        elif reason := repository.delete_backup(backup):
            protected[backup.id] = reason
        else:
            log.info("retention deleted %s from %s", backup.id, repository.name)
            deleted.append(backup.id)
    for backup_id, reason in protected.items():
        log.info("retention leaves %s in %s: %s", backup_id, repository.name, reason)
    return {
        "repository": repository.name,
        "kept": [b.id for b in plan.keep],
        "deleted" if not dry_run else "would_delete": deleted,
        "protected": protected,
    }


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def repository_remove_leftovers(
    repository: Repository, engine: str, system: str, database: str
) -> list[str]:
    """Remove every unfinished folder of ``system``/``database`` and what its failed writes
    left. Called with that database's backups lock held: no live run can own one."""
    removed = repository.remove_leftovers(engine, system, database)
    for prefix in removed:
        logger().warning(
            "removed %s from %s: left by a backup that did not finish, and no live run holds "
            "its lock",
            prefix,
            repository.name,
        )
    return removed


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def repository_remove_abandoned(repository: Repository, engine: str) -> list[str]:
    """Remove attempts that died more than a day ago (marker, no manifest)."""
    if not repository.store.exists():
        return []
    removed = repository.remove_abandoned(engine)
    for prefix in removed:
        logger().warning("removed abandoned backup attempt %s in %s", prefix, repository.name)
    return removed


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def repository_newest_backup(
    repository: Repository, engine: str, system: str, database: str | None
) -> Backup | None:
    """The newest complete backup by consistent point (legacy ones included), or None."""
    if not repository.store.exists():
        return None
    backups = repository.backups(engine, system, database)
    return backups[0] if backups else None


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def repository_verify_checksums(repository: Repository, backup: Backup) -> list[str]:
    """Re-read every object of the backup and compare size and sha256 with its manifest."""
    if backup.manifest is None:
        return []  # a legacy file has no manifest; its gzip stream is checked by the restore
    problems = repository.verify_objects(backup)
    log = logger()
    for problem in problems:
        log.error("backup %s in %s: %s", backup.id, repository.name, problem)
    if not problems:
        log.info("every checksum of %s matches its manifest", backup.id)
    return problems


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def repository_record_verification(
    repository: Repository, backup: Backup, record: dict[str, Any]
) -> str:
    """Store the verification record next to the backup, so it outlives this run."""
    key = repository.record_verification(backup, record)
    logger().info("recorded verification of %s: %s", backup.id, record["outcome"])
    return key


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def repository_list_databases(repository: Repository, engine: str, system: str) -> list[str]:
    """The databases a repository holds backups of, for a system declared without any."""
    if not repository.store.exists():
        return []
    return sorted({b.database for b in repository.backups(engine, system, None)})
