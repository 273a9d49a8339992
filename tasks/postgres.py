"""PostgreSQL steps of the runbooks: one server conversation or one program each."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.postgres import backup as pg_backup
from dr_runbooks.postgres import checks, restore, server
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Backup, Manifest, Repository
from tasks._runtime import logger, reported_progress, transient_only

__all__ = [
    "postgres_assess",
    "postgres_backup",
    "postgres_drop_database",
    "postgres_drop_leftovers",
    "postgres_fetch_backup",
    "postgres_restore",
    "postgres_swap",
    "postgres_verify_restore",
]


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def postgres_assess(conninfo: ConnInfo, database: str) -> server.ServerStatus:
    """Step 1 of Scenario 1: is the server up, can we connect, which version."""
    status = server.assess(conninfo, database)
    log = logger()
    if status.reachable:
        log.info(
            "server %s is up (PostgreSQL %s, recovery=%s); database %s %s",
            conninfo.describe("postgres"),
            status.server_version,
            status.in_recovery,
            database,
            "exists" if status.database_exists else "is MISSING",
        )
    else:
        log.warning("server %s is not reachable: %s", conninfo.describe(), status.error)
    return status


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_backup(
    conninfo: ConnInfo,
    database: str,
    system: str,
    repository: Repository,
    kind: str = "full",
    role_passwords: bool = False,
) -> Manifest:
    """pg_dump in an exported snapshot, zstd-compressed and checksummed into the repository."""
    with reported_progress("dump"):
        manifest = pg_backup.backup_database(
            conninfo, database, system, repository, kind=kind, role_passwords=role_passwords
        )
    skew = manifest.details.get("clock_skew_seconds")
    if skew:
        logger().warning(
            "backup %s: its consistent point %s is %d s ahead of this machine's clock; is the "
            "database server's clock wrong? It will not be chosen as the latest backup",
            manifest.id,
            manifest.consistent_point.isoformat(),
            skew,
        )
    data = manifest.objects[0]
    logger().info(
        "backup %s of %s committed to %s: %d bytes (%d before compression), %d tables",
        manifest.id,
        database,
        repository.name,
        data.size,
        data.raw_size or 0,
        len(manifest.tables),
    )
    return manifest


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_fetch_backup(repository: Repository, backup: Backup) -> pg_backup.FetchedBackup:
    """Download the backup and verify every object's size and sha256 before anything else."""
    with reported_progress("download"):
        fetched = pg_backup.fetch_backup(repository, backup)
    logger().info("downloaded %s; every checksum matches the manifest", backup.id)
    return fetched


@task(cache_policy=NO_CACHE)
def postgres_restore(
    conninfo: ConnInfo,
    fetched: pg_backup.FetchedBackup,
    target: str,
    jobs: int = 2,
    no_owner: bool = False,
) -> restore.RestoreOutcome:
    """Restore a fetched backup into a NEW database ``target`` with the database's settings
    (see :func:`dr_runbooks.postgres.restore.restore_database`)."""
    outcome = restore.restore_database(conninfo, fetched, target, jobs=jobs, no_owner=no_owner)
    log = logger()
    if outcome.replaced_leftover:
        log.warning("dropped %s, left by an earlier attempt that did not finish", target)
    if outcome.created_roles:
        log.info("created missing roles: %s", ", ".join(outcome.created_roles))
    log.info("restored %s into %s", fetched.backup.id, target)
    return outcome


@task(cache_policy=NO_CACHE)
def postgres_verify_restore(
    conninfo: ConnInfo,
    database: str,
    expected: dict[str, int],
    checks_file: str | None = None,
) -> dict[str, Any]:
    """Compare row counts with the manifest and run the SQL checks (each must return no rows)."""
    result = checks.verify_database(conninfo, database, expected, checks_file)
    logger().info(
        "verified %s: %d tables, %d rows match the manifest%s",
        database,
        result["tables"],
        result["rows"],
        "; checks passed" if checks_file else "",
    )
    return result


@task(retries=2, retry_delay_seconds=3, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_swap(
    conninfo: ConnInfo,
    database: str,
    restored: restore.RestoreOutcome,
    stamp: str,
    keep_old: bool = True,
) -> str | None:
    """Rename the restored database into place, keeping the old one unless asked not to; only
    if it is still the very database this run restored (its oid)."""
    old = server.swap_databases(
        conninfo, database, restored.database, stamp, keep_old=keep_old, expected_oid=restored.oid
    )
    logger().info(
        "%s is now the restored database%s",
        database,
        f"; the previous one is kept as {old}" if old else "",
    )
    return old


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def postgres_drop_database(conninfo: ConnInfo, name: str) -> None:
    server.drop_database(conninfo, name)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_drop_leftovers(conninfo: ConnInfo, database: str, purpose: str) -> list[str]:
    """Drop the side databases (``<db>__restore_*`` or ``<db>__verify_*``) that runs which died
    left behind. Called with the database's lock held: no live run can own one."""
    leftovers = server.drop_side_databases(conninfo, database, purpose)
    for name in leftovers:
        logger().warning(
            "dropped %s, left by a run that died (no live run holds the lock of %s)",
            name,
            database,
        )
    return leftovers
