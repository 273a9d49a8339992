"""Steps of the data-corruption runbook (the plan's Scenario 3): one engine call each
(:mod:`dr_runbooks.postgres.corruption`), with its logging and retries."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.postgres import corruption, pitr
from dr_runbooks.postgres.backup import work_base
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.restore import RestoreOutcome
from dr_runbooks.repository import Repository
from dr_runbooks.targets import Target
from tasks._runtime import logger, transient_only

__all__ = [
    "dr_load_integrity",
    "postgres_check_integrity",
    "postgres_compare_tables",
    "postgres_copy_database",
    "postgres_export_changes",
    "postgres_keyed_tables",
    "postgres_repair_rows",
    "postgres_resolve_tables",
    "recovery_point_logical",
    "recovery_point_pitr",
    "workdir_recovery_make",
    "workdir_recovery_remove",
    "workdir_recovery_remove_stale",
]


@task(cache_policy=NO_CACHE)
def dr_load_integrity(target: Target) -> corruption.Integrity:
    """The system's integrity checks and validation queries from dr.yaml (no retries: a
    missing file or an undeclared check is bad input)."""
    declared = target.config.systems.get(target.system)
    integrity = corruption.load_integrity(
        target.config, target.system, declared.integrity if declared else None
    )
    logger().info(
        "%s: %d integrity checks, %d validation queries",
        target.system,
        len(integrity.checks),
        len(integrity.validation),
    )
    return integrity


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_check_integrity(
    conninfo: ConnInfo, database: str, checks: list[corruption.Check], where: str
) -> list[corruption.CheckResult]:
    """Run the checks read-only; log each one's outcome (counts only: rows may hold personal
    data and never reach a log)."""
    results = corruption.run_checks(conninfo, database, checks)
    log = logger()
    for result in results:
        if result.error:
            log.warning("%s: check %r could not run: %s", where, result.name, result.error)
        elif result.failed:
            log.warning(
                "%s: check %r FAILS: %d violating row(s)%s",
                where,
                result.name,
                result.rows,
                f", the earliest written {result.earliest.isoformat()}" if result.earliest else "",
            )
        else:
            log.info("%s: check %r passes", where, result.name)
    return results


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def recovery_point_pitr(
    repository: Repository, system: str, began: datetime, proposed: bool
) -> corruption.RecoveryPoint:
    """The recovery window of a WAL-archived system, and the point just before ``began``."""
    window = pitr.recovery_window(repository, system)
    point = corruption.pitr_point(began, proposed, window)
    logger().info(
        "%s is recoverable from %s to %s; the copy is recovered to %s",
        system,
        point.earliest,
        point.latest,
        point.target.isoformat(),
    )
    return point


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def recovery_point_logical(
    repository: Repository, system: str, database: str, began: datetime, proposed: bool
) -> corruption.RecoveryPoint:
    """The logical backups' span, and the newest backup before ``began``."""
    backups = repository.backups("postgres", system, database)
    point = corruption.logical_point(began, proposed, backups)
    logger().warning(
        "%s/%s has logical backups only: the copy is backup %s (%s), %s before the corruption "
        "began; what was written in between is not in it",
        system,
        database,
        point.backup_id,
        point.target.isoformat(),
        point.more_lost,
    )
    return point


@task(cache_policy=NO_CACHE)
def workdir_recovery_make() -> str:
    """A work directory for a cluster recovered beside the live one (``DR_WORK_DIR``)."""
    return str(corruption.recovery_workdir(work_base()))


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def workdir_recovery_remove(workdir: str) -> None:
    """Stop the cluster this run recovered and remove its work directory."""
    corruption.remove_recovery(Path(workdir))
    logger().info("stopped the recovered cluster and removed %s", workdir)


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def workdir_recovery_remove_stale() -> list[str]:
    """Stop the recovered clusters of runs that died and remove their work directories."""
    removed = corruption.remove_stale_recoveries(work_base())
    for path in removed:
        logger().warning("stopped and removed %s, left by a run whose process died", path)
    return [str(path) for path in removed]


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_resolve_tables(conninfo: ConnInfo, database: str, names: list[str]) -> list[str]:
    """The tables to repair as ``schema.table``; unknown or keyless ones are bad input."""
    return corruption.resolve_tables(conninfo, database, names)


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_keyed_tables(conninfo: ConnInfo, database: str) -> tuple[list[str], list[str]]:
    """The tables with a primary key (compared row by row) and those without."""
    return corruption.keyed_tables(conninfo, database)


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_compare_tables(
    live: ConnInfo,
    database: str,
    recovered: ConnInfo,
    recovered_database: str,
    tables: list[str],
) -> list[corruption.TableDiff]:
    """Each table live against the recovered copy by primary key (changes nothing)."""
    diffs = corruption.compare_tables(live, database, recovered, recovered_database, tables)
    for diff in diffs:
        logger().info(
            "%s: %d missing, %d changed, %d added since the recovery point",
            diff.table,
            diff.missing,
            diff.changed,
            diff.added,
        )
    return diffs


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_export_changes(
    live: ConnInfo,
    database: str,
    recovered: ConnInfo,
    recovered_database: str,
    tables: list[str],
    repository: Repository,
    key: str,
    header: list[str],
) -> corruption.Export:
    """What differs in the live database from the recovered copy, as SQL in the repository."""
    export = corruption.export_changes(
        live, database, recovered, recovered_database, tables, repository, key, header
    )
    logger().info("%d changed row(s) of %s exported to %s", export.rows, database, export.location)
    return export


@task(retries=0, cache_policy=NO_CACHE)
def postgres_repair_rows(
    live: ConnInfo,
    database: str,
    recovered: ConnInfo,
    recovered_database: str,
    tables: list[str],
    approved: list[corruption.TableDiff],
    checks: list[corruption.Check],
    repository: Repository,
    key: str,
    header: list[str],
    delete_added: bool = False,
) -> corruption.RepairOutcome:
    """Copy the missing and changed rows back in one transaction, the replaced values exported
    first (see :func:`dr_runbooks.postgres.corruption.repair_rows`). Not retried: a second
    attempt needs a plan a person approved again."""
    outcome = corruption.repair_rows(
        live,
        database,
        recovered,
        recovered_database,
        tables,
        approved,
        checks,
        repository,
        key,
        header,
        delete_added=delete_added,
    )
    logger().warning(
        "repaired %s: %d row(s) restored, %d replaced, %d deleted, %d written since kept; the "
        "replaced values are in %s",
        database,
        outcome.restored,
        outcome.replaced,
        outcome.deleted,
        outcome.kept,
        outcome.export.location,
    )
    return outcome


@task(retries=0, cache_policy=NO_CACHE)
def postgres_copy_database(
    source: ConnInfo, database: str, target: ConnInfo, side: str, workdir: str, jobs: int = 2
) -> RestoreOutcome:
    """Copy the recovered database into a NEW side database of the live server."""
    outcome = corruption.copy_database(source, database, target, side, Path(workdir), jobs)
    logger().info("copied the recovered %s into %s on the live server", database, side)
    return outcome
