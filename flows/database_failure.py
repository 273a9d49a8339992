"""Runbook: Scenario 1, database failure (PostgreSQL).

The plan's steps, in an order that cannot make things worse:

1. Assess: is the server up, can we connect, which version, does the database exist.
2. Choose the backup: the latest, an id, or the latest before a time (by consistent point).
3. Show the plan; wait for approval unless approved in advance (``dry_run`` stops here).
   From here to the swap the run holds the database's lock: no other restore or backup of it
   runs meanwhile, and the lock dies with this run.
4. Download the backup and verify every checksum, before touching the server.
5. Restore into a new database ``<db>__restore_<run>``, named for this run, with the
   database's own settings (side databases of runs that died are dropped first).
6. Verify: row counts against the manifest, the SQL checks (each returns no rows).
7. Swap by rename, keeping the old database as ``<db>__pre_restore_<timestamp>``, only if the
   lock is still held and the side database is the very one restored and verified.
8. Health check: poll the application's health URL until it answers.
9. Report the RTO and RPO achieved as a table artifact.

A failure at any step before 7 leaves the original database exactly as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import BadInput
from dr_runbooks.locks import database_lock
from dr_runbooks.postgres.server import ServerStatus, side_name
from dr_runbooks.repository import Backup, parse_time
from dr_runbooks.text import human_duration, human_size, markdown_table
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.config import dr_load_target
from tasks.health import http_wait_healthy
from tasks.postgres import (
    postgres_assess,
    postgres_drop_database,
    postgres_drop_leftovers,
    postgres_fetch_backup,
    postgres_restore,
    postgres_swap,
    postgres_verify_restore,
)
from tasks.repository import repository_choose_backup
from tasks.runs import workdir_remove_stale

__all__ = ["database_failure"]


@flow(name="database-failure", log_prints=True)
@runbook
def database_failure(
    system: str = p.SYSTEM,
    database: str = p.DATABASE,
    connection: str = p.CONNECTION,
    repository: str = p.REPOSITORY,
    backup_id: str = p.BACKUP_ID,
    before: str = p.BEFORE,
    checks_file: str = Field(
        "", description="SQL file whose queries must each return no rows after the restore."
    ),
    health_url: str = p.HEALTH_URL,
    health_timeout_seconds: int = p.HEALTH_TIMEOUT,
    keep_old: bool = Field(
        True, description="Keep the replaced database as `<db>__pre_restore_<ts>`."
    ),
    restore_as: str = Field(
        "",
        description="Restore the database's backup under this name instead (a drill's sandbox "
        "copy, e.g. `drill_shop`); the database of that name is the one replaced.",
    ),
    dry_run: bool = p.DRY_RUN,
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    incident_time: str = p.INCIDENT_TIME,
    severity: p.Severity = p.severity("Critical"),
    jobs: int = Field(2, ge=1, le=32, description="Parallel pg_restore jobs."),
    lock_timeout_seconds: int = p.RESTORE_LOCK_TIMEOUT,
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Restore a PostgreSQL database from its repository and verify it (the plan's Scenario 1)."""
    with Runbook(
        "database-failure", system=system, config_path=config_path, incident_time=incident_time
    ) as rb:
        cutoff = parse_time(before) if before else None
        with rb.step("load"):
            repositories = [repository] if repository else None
            target = dr_load_target(
                "postgres", system, connection, database, repositories, config_path
            )
        name, source = target.databases[0], target.primary
        live = restore_as or name  # the database replaced; the backup is always name's
        with rb.step("assess"):
            status = postgres_assess(target.conninfo, live)
            if not status.reachable:
                raise BadInput(f"the target server is not reachable: {status.error}")
        with rb.step("choose backup"):
            backup = repository_choose_backup(
                source, "postgres", target.system, name, backup_id=backup_id, before=cutoff
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        side = side_name(live, "restore", rb.token)
        plan = _plan(target.system, live, status, backup, side, stamp, keep_old, source.name)
        # One restore or backup of the database at a time, from before the approval to the
        # swap; a dry run changes nothing and takes no lock.
        locks = [] if dry_run else [database_lock(target.conninfo, live)]
        with rb.lock(locks, lock_timeout_seconds):
            approval = rb.gate(
                f"restore-{target.system}-{name}", plan, dry_run, approved, approval_timeout_seconds
            )
            if approval is None:
                return {"dry_run": True, "plan": plan, "backup_id": backup.id, "database": name}
            with rb.step("remove leftovers of runs that died"):
                postgres_drop_leftovers(target.conninfo, live, "restore")
                workdir_remove_stale()
            with rb.step("download and verify checksums"):
                fetched = postgres_fetch_backup(source, backup)
            try:
                with rb.step("restore into side database", detail=side):
                    restored = postgres_restore(target.conninfo, fetched, side, jobs=jobs)
            finally:
                fetched.cleanup()
            with rb.step("verify"):
                expected = backup.manifest.tables if backup.manifest else {}
                try:
                    verification = postgres_verify_restore(
                        target.conninfo, side, expected, checks_file or target.checks_file
                    )
                except BaseException:
                    # The failed verification is what matters; a leftover goes with the next run.
                    postgres_drop_database(target.conninfo, side, return_state=True)
                    raise
            with rb.step("swap"):
                rb.still_locked()
                kept = postgres_swap(target.conninfo, live, restored, stamp, keep_old=keep_old)
        if health_url or target.health_url:
            with rb.step("health check"):
                http_wait_healthy(health_url or target.health_url or "", health_timeout_seconds)
        return rb.recovered(
            target,
            backup.consistent_point,
            key=f"database-failure-{target.system}-{live}",
            system=target.system,
            database=live,
            backup_id=backup.id,
            consistent_point=backup.consistent_point.isoformat(),
            kept_old_database=kept,
            approval=approval,
            verification=verification,
        )


def _plan(
    system: str,
    database: str,
    status: ServerStatus,
    backup: Backup,
    side: str,
    stamp: str,
    keep_old: bool,
    repository: str,
) -> str:
    """What the approver needs: what the assessment found, how old the backup is and so what
    is lost, and every step that changes something."""
    old = f"{database}__pre_restore_{stamp}"
    replaced = (
        f"rename {database} → {old}" + ("" if keep_old else " (dropped)")
        if status.database_exists
        else f"{database} does not exist: {side} becomes {database}"
    )
    age = datetime.now(UTC) - backup.consistent_point
    found = (
        f"{database} exists ({human_size(status.database_size or 0)})"
        if status.database_exists
        else f"{database} is **missing**"
    )
    rows = [
        {"step": "download", "what": f"backup {backup.id} from {repository}, verify checksums"},
        {"step": "restore", "what": f"into NEW database {side}"},
        {"step": "verify", "what": "row counts against the manifest; SQL checks"},
        {"step": "swap", "what": f"{replaced}; {side} → {database}"},
    ]
    return (
        f"# Restore plan: {system} / {database}\n\n"
        f"**Assessment**: the server answers (PostgreSQL {status.server_version}"
        f"{', in recovery' if status.in_recovery else ''}); {found}.\n\n"
        f"**Backup** {backup.id}: consistent point {backup.consistent_point:%Y-%m-%d %H:%M:%S} "
        f"UTC, **{human_duration(age)} old**, {human_size(backup.size)}.\n\n"
        f"**Data lost**: everything written to {database} after "
        f"{backup.consistent_point:%Y-%m-%d %H:%M:%S} UTC is not in this backup"
        + (
            f"; the current database is kept as `{old}` to recover it from."
            if keep_old and status.database_exists
            else "."
        )
        + "\n\n"
        + markdown_table(rows)
    )
