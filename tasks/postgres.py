"""PostgreSQL steps of the runbooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks import pg_backup, postgres
from dr_runbooks.errors import RestoreFailed, RestoreVerificationFailed
from dr_runbooks.pgconn import ConnInfo
from dr_runbooks.repository import Manifest, Repository
from tasks._runtime import logger, reported_progress, transient_only

__all__ = [
    "postgres_assess",
    "postgres_backup",
    "postgres_drop_database",
    "postgres_restore",
    "postgres_swap",
    "postgres_verify_restore",
]


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def postgres_assess(conninfo: ConnInfo, database: str) -> postgres.ServerStatus:
    """Step 1 of Scenario 1: is the server up, can we connect, which version."""
    status = postgres.assess(conninfo, database)
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


@task(cache_policy=NO_CACHE)
def postgres_restore(
    conninfo: ConnInfo,
    fetched: pg_backup.FetchedBackup,
    target: str,
    jobs: int = 2,
    no_owner: bool = False,
) -> str:
    """Restore a fetched backup into a NEW database ``target`` with the database's settings.

    The target must not exist. On failure the half-restored database is dropped, so nothing is
    left behind and the original database was never touched.
    """
    if postgres.database_exists(conninfo, target):
        if "__restore_" not in target and "__verify_" not in target:
            raise RestoreFailed(f"database {target} already exists; refusing to restore over it")
        # Our own side database, left by an attempt that crashed: it never became live.
        logger().warning("dropping %s, left by an earlier attempt that did not finish", target)
        postgres.drop_database(conninfo, target)
    created = postgres.ensure_roles(conninfo, fetched.roles)
    if created:
        logger().info("created missing roles: %s", ", ".join(created))
    settings = fetched.settings or postgres.DatabaseSettings(
        owner=conninfo.user or "postgres", encoding="UTF8", collate="", ctype=""
    )
    try:
        if fetched.settings is None:
            postgres.create_plain_database(conninfo, target)
            postgres.psql_file(conninfo, target, fetched.dump)
        else:
            postgres.prepare_database(conninfo, target, settings)
            postgres.pg_restore(conninfo, target, fetched.dump, jobs=jobs, no_owner=no_owner)
            postgres.finish_database(conninfo, target, settings)
    except BaseException:
        postgres.drop_database(conninfo, target)
        raise
    logger().info("restored %s into %s", fetched.backup.id, target)
    return target


@task(cache_policy=NO_CACHE)
def postgres_verify_restore(
    conninfo: ConnInfo,
    database: str,
    expected: dict[str, int],
    checks_file: str | None = None,
) -> dict[str, Any]:
    """Compare row counts with the manifest and run the SQL checks (each must return no rows)."""
    actual = postgres.table_counts(conninfo, database)
    problems = postgres.compare_counts(expected, actual) if expected else []
    check_failures: list[str] = []
    if checks_file:
        text = Path(checks_file).read_text()
        check_failures = postgres.run_checks(conninfo, database, text)
    result = {
        "tables": len(actual),
        "rows": sum(actual.values()),
        "count_problems": problems,
        "check_failures": check_failures,
        "checks": checks_file is not None,
    }
    if problems or check_failures:
        raise RestoreVerificationFailed(
            f"restored database {database} failed verification: "
            + "; ".join((problems + check_failures)[:5])
        )
    logger().info(
        "verified %s: %d tables, %d rows match the manifest%s",
        database,
        len(actual),
        sum(actual.values()),
        "; checks passed" if checks_file else "",
    )
    return result


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def postgres_swap(
    conninfo: ConnInfo, database: str, restored: str, stamp: str, keep_old: bool = True
) -> str | None:
    """Rename the restored database into place, keeping the old one unless asked not to."""
    old = postgres.swap_databases(conninfo, database, restored, stamp, keep_old=keep_old)
    logger().info(
        "%s is now the restored database%s",
        database,
        f"; the previous one is kept as {old}" if old else "",
    )
    return old


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def postgres_drop_database(conninfo: ConnInfo, name: str) -> None:
    postgres.drop_database(conninfo, name)
