"""Runbook: Scenario 1, database failure (PostgreSQL).

The plan's steps, in an order that cannot make things worse:

1. Assess: is the server up, can we connect, which version, does the database exist.
2. Choose the backup: the latest, an id, or the latest before a time (by consistent point).
3. Show the plan; wait for approval unless approved in advance (``dry_run`` stops here).
4. Download the backup and verify every checksum, before touching the server.
5. Restore into a new database ``<db>__restore_<id>`` with the database's own settings.
6. Verify: row counts against the manifest, the SQL checks (each returns no rows).
7. Swap by rename, keeping the old database as ``<db>__pre_restore_<timestamp>``.
8. Health check: poll the application's health URL until it answers.
9. Report the RTO and RPO achieved as a table artifact.

A failure at any step before 7 leaves the original database exactly as it was.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import BadInput
from dr_runbooks.report import Timeline, human_duration, markdown_table
from dr_runbooks.repository import parse_time
from tasks.approval import approval_gate
from tasks.config import dr_load_target
from tasks.health import http_wait_healthy
from tasks.notify import notify_on_failure
from tasks.postgres import (
    postgres_assess,
    postgres_restore,
    postgres_swap,
    postgres_verify_restore,
)
from tasks.report import report_publish
from tasks.repository import backup_fetch_verified, repository_choose_backup

__all__ = ["database_failure"]


@flow(name="database-failure", log_prints=True, on_failure=[notify_on_failure])
def database_failure(
    system: str | None = Field(None, description="Protected system from dr.yaml."),
    database: str | None = Field(
        None, description="Database to restore (default: the system's first)."
    ),
    connection: str | None = Field(
        None, description="Override the target server: a PostgresDatabase block name, or env:VAR."
    ),
    repository: str | None = Field(
        None, description="Repository to restore from (default: the system's first)."
    ),
    backup_id: str | None = Field(None, description="Restore this backup id."),
    before: str | None = Field(
        None,
        description="Restore the latest backup whose consistent point is before this time "
        "(ISO 8601; UTC when no zone is given).",
    ),
    checks_file: str | None = Field(
        None, description="SQL file whose queries must each return no rows after the restore."
    ),
    health_url: str | None = Field(None, description="URL polled until it answers 2xx."),
    health_timeout_seconds: int = Field(300, description="How long to wait for the health URL."),
    keep_old: bool = Field(
        True, description="Keep the replaced database as <db>__pre_restore_<ts>."
    ),
    dry_run: bool = Field(False, description="Assess, choose and show the plan; change nothing."),
    approved: bool = Field(
        False, description="Approved in advance; otherwise the run pauses for approval in the UI."
    ),
    approval_timeout_seconds: int = Field(3600, description="How long to wait for approval."),
    incident_time: str | None = Field(
        None,
        description="When the failure happened (ISO 8601); default: when this run started. "
        "The RPO achieved is measured from it.",
    ),
    jobs: int = Field(2, ge=1, le=32, description="Parallel pg_restore jobs."),
    config_path: str | None = Field(None, description="dr.yaml to use."),
) -> dict[str, Any]:
    """Restore a PostgreSQL database from its repository and verify it (the plan's Scenario 1)."""
    timeline = Timeline()
    cutoff = parse_time(before) if before else None
    incident = parse_time(incident_time) if incident_time else timeline.started
    with timeline.step("load"):
        target = dr_load_target(
            system, connection, database, [repository] if repository else None, config_path
        )
    name = target.databases[0]
    source = target.primary
    with timeline.step("assess"):
        status = postgres_assess(target.conninfo, name)
    if not status.reachable:
        raise BadInput(f"the target server is not reachable: {status.error}")
    with timeline.step("choose backup"):
        backup = repository_choose_backup(
            source, "postgres", target.system, name, backup_id=backup_id, before=cutoff
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    side = f"{name}__restore_{backup.id}"[:63]
    plan = _plan(
        target.system, name, status.database_exists, backup, side, stamp, keep_old, source.name
    )
    with timeline.step("approval"):
        if dry_run:
            report_publish(
                f"plan-restore-{target.system}-{name}", "Restore plan (dry run)", markdown=plan
            )
            return {"dry_run": True, "plan": plan, "backup_id": backup.id, "database": name}
        approval = approval_gate(
            f"restore-{target.system}-{name}", plan, approved, approval_timeout_seconds
        )
    with timeline.step("download and verify checksums"):
        fetched = backup_fetch_verified(source, backup)
    try:
        with timeline.step("restore into side database", detail=side):
            postgres_restore(target.conninfo, fetched, side, jobs=jobs)
    finally:
        fetched.cleanup()
    expected = backup.manifest.tables if backup.manifest else {}
    with timeline.step("verify"):
        try:
            verification = postgres_verify_restore(
                target.conninfo, side, expected, checks_file or target.checks_file
            )
        except BaseException:
            _drop_quietly(target.conninfo, side)
            raise
    with timeline.step("swap"):
        kept = postgres_swap(target.conninfo, name, side, stamp, keep_old=keep_old)
    url = health_url or target.health_url
    if url:
        with timeline.step("health check"):
            http_wait_healthy(url, health_timeout_seconds)
    rto = timeline.elapsed()
    objective = target.config.objectives.rto_for(target.tier)
    rpo = incident - backup.consistent_point
    result = {
        "system": target.system,
        "database": name,
        "backup_id": backup.id,
        "consistent_point": backup.consistent_point.isoformat(),
        "kept_old_database": kept,
        "rto_seconds": round(rto.total_seconds(), 3),
        "rto_objective_seconds": objective.total_seconds(),
        "rto_met": rto <= objective,
        "rpo_seconds": round(rpo.total_seconds(), 3),
        "rpo_objective_seconds": target.config.objectives.rpo.database.total_seconds(),
        "rpo_met": rpo <= target.config.objectives.rpo.database,
        "approval": approval,
        "verification": verification,
        "steps": timeline.rows(),
    }
    report_publish(
        f"database-failure-{target.system}-{name}",
        f"RTO {human_duration(rto)} (objective {human_duration(objective)}), "
        f"RPO {human_duration(rpo)}",
        table=[
            *timeline.rows(),
            {
                "step": "RTO achieved",
                "started": timeline.started.isoformat(),
                "seconds": round(rto.total_seconds(), 3),
                "outcome": "met" if result["rto_met"] else "MISSED",
                "detail": f"objective {human_duration(objective)}",
            },
            {
                "step": "RPO achieved",
                "started": backup.consistent_point.isoformat(),
                "seconds": round(rpo.total_seconds(), 3),
                "outcome": "met" if result["rpo_met"] else "MISSED",
                "detail": f"objective {human_duration(target.config.objectives.rpo.database)}",
            },
        ],
    )
    return result


def _drop_quietly(conninfo: Any, name: str) -> None:
    from tasks.postgres import postgres_drop_database

    # The verification failure is what matters; a leftover is removed by the next run.
    with contextlib.suppress(Exception):
        postgres_drop_database(conninfo, name)


def _plan(
    system: str,
    database: str,
    exists: bool | None,
    backup: Any,
    side: str,
    stamp: str,
    keep_old: bool,
    repository: str,
) -> str:
    rows = [
        {"step": "download", "what": f"backup {backup.id} from {repository}, verify checksums"},
        {"step": "restore", "what": f"into NEW database {side}"},
        {"step": "verify", "what": "row counts against the manifest; SQL checks"},
        {
            "step": "swap",
            "what": (
                f"rename {database} → {database}__pre_restore_{stamp}"
                + ("" if keep_old else " (dropped)")
                if exists
                else f"{database} does not exist: {side} becomes {database}"
            )
            + f"; {side} → {database}",
        },
    ]
    return (
        f"# Restore plan: {system} / {database}\n\n"
        f"Backup **{backup.id}**, consistent point {backup.consistent_point.isoformat()}.\n\n"
        + markdown_table(rows)
    )
