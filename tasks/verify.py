"""Steps of the daily verification: newest backup, checksums, test restore, the record."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks import postgres
from dr_runbooks.pgconn import ConnInfo
from dr_runbooks.repository import Backup, Repository
from tasks._runtime import logger, transient_only

__all__ = [
    "postgres_drop_leftover_verifications",
    "repository_newest_backup",
    "repository_record_verification",
    "repository_verify_checksums",
]

VERIFY_MARK = "__verify_"


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
def postgres_drop_leftover_verifications(conninfo: ConnInfo) -> list[str]:
    """Drop temporary verification databases a crashed run left behind."""
    pattern = "%" + VERIFY_MARK.replace("_", "\\_") + "%"
    leftovers = postgres.list_databases(conninfo, pattern)
    for name in leftovers:
        postgres.drop_database(conninfo, name)
        logger().warning("dropped leftover verification database %s", name)
    return leftovers
