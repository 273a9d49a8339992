"""Runbook: Scenario 1, database failure (MongoDB).

The plan's steps (stop, restore with mongorestore, start), in an order that cannot make things
worse:

1. Assess: is the server up, which version, replica set or standalone, does the database exist.
2. Choose the backup: the latest, an id, or the latest before a time (by consistent point) —
   or mongodump output given as a path (an archive, a directory, a legacy tar.gz).
3. Show the plan; wait for approval unless approved in advance (``dry_run`` stops here). Stop
   the application before approving: the swap in step 9 is not atomic.
4. Download the backup and verify its checksum, before touching the server.
5. Read the dump and plan the restore: every CRC and bucket checked when there is no manifest;
   an index no server can build refused.
6. Restore into a new database ``<db>__restore_<id>``: options, documents, indexes, views.
   With an oplog to replay, the indexes wait until after it, as mongorestore does.
7. Verify: document counts and index names of every collection against the manifest.
8. Replay the oplog captured during the backup, to its consistent point; build the indexes
   that waited and verify their names.
9. Swap collection by collection, keeping the old ones in ``<db>__pre_restore_<timestamp>``.
10. Health check: poll the application's health URL until it answers.
11. Report the RTO and RPO achieved as a table artifact.

A failure at any step before 9 leaves the original database exactly as it was.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import BadInput
from dr_runbooks.report import Timeline, human_duration, markdown_table
from dr_runbooks.repository import parse_time
from tasks.approval import approval_gate
from tasks.health import http_wait_healthy
from tasks.mongodb import (
    mongodb_assess,
    mongodb_drop_database,
    mongodb_fetch_verified,
    mongodb_load_target,
    mongodb_open_dump,
    mongodb_plan_restore,
    mongodb_replay_oplog,
    mongodb_restore,
    mongodb_swap,
    mongodb_verify_restore,
)
from tasks.notify import notify_on_failure
from tasks.report import report_publish
from tasks.repository import repository_choose_backup

__all__ = ["database_failure_mongodb"]


@flow(name="database-failure-mongodb", log_prints=True, on_failure=[notify_on_failure])
def database_failure_mongodb(
    system: str | None = Field(None, description="Protected system from dr.yaml."),
    database: str | None = Field(
        None, description="Database to restore (default: the system's first)."
    ),
    connection: str | None = Field(
        None, description="Override the target server: a MongoDatabase block name, or env:VAR."
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
    source_path: str | None = Field(
        None,
        description="Restore from mongodump output on disk instead of a backup: an --archive "
        "file (plain or gzip), a dump directory, or a legacy backup_*.tar.gz.",
    ),
    source_database: str | None = Field(
        None, description="The database of the dump to restore (default: the same name)."
    ),
    replay_oplog: bool = Field(True, description="Replay the oplog the backup captured."),
    health_url: str | None = Field(None, description="URL polled until it answers 2xx."),
    health_timeout_seconds: int = Field(300, description="How long to wait for the health URL."),
    keep_old: bool = Field(
        True, description="Keep the replaced collections in <db>__pre_restore_<ts>."
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
    config_path: str | None = Field(None, description="dr.yaml to use."),
) -> dict[str, Any]:
    """Restore a MongoDB database from its repository and verify it (the plan's Scenario 1)."""
    timeline = Timeline()
    cutoff = parse_time(before) if before else None
    incident = parse_time(incident_time) if incident_time else timeline.started
    if source_path and (backup_id or cutoff):
        raise BadInput("give a source path or a backup (id, before), not both")
    with timeline.step("load"):
        target = mongodb_load_target(
            system, connection, database, [repository] if repository else None, config_path
        )
    if not target.databases:
        raise BadInput("name the database to restore (database, or databases: in dr.yaml)")
    name = target.databases[0]
    source = target.primary
    with timeline.step("assess"):
        status = mongodb_assess(target.conninfo, name)
    if not status.reachable:
        raise BadInput(f"the target server is not reachable: {status.error}")
    backup = None
    with timeline.step("choose backup"):
        if not source_path:
            backup = repository_choose_backup(
                source, "mongodb", target.system, name, backup_id=backup_id, before=cutoff
            )
    label = backup.id if backup else secrets.token_hex(3)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    plan = _plan(
        target.system,
        name,
        status.database_exists,
        backup,
        source_path,
        stamp,
        keep_old,
        source.name,
        replay_oplog,
    )
    with timeline.step("approval"):
        if dry_run:
            report_publish(
                f"plan-restore-{target.system}-{name}", "Restore plan (dry run)", markdown=plan
            )
            return {
                "dry_run": True,
                "plan": plan,
                "backup_id": backup.id if backup else None,
                "database": name,
            }
        approval = approval_gate(
            f"restore-{target.system}-{name}", plan, approved, approval_timeout_seconds
        )
    with timeline.step("download and verify checksums"):
        fetched = (
            mongodb_fetch_verified(source, backup)
            if backup is not None
            else mongodb_open_dump(source_path or "")
        )
    try:
        with timeline.step("read the dump and plan"):
            restore_plan = mongodb_plan_restore(fetched, name, source_database, label)
        side = restore_plan.databases[0].side
        # Indexes wait for the oplog (see restore_into_side); the counts are checked before it.
        deferred = replay_oplog and restore_plan.oplog_entries is not None
        with timeline.step("restore into side database", detail=side):
            mongodb_restore(target.conninfo, fetched, restore_plan, indexes=not deferred)
        try:
            with timeline.step("verify"):
                verification = mongodb_verify_restore(
                    target.conninfo, restore_plan, indexes=not deferred
                )
            replayed: dict[str, Any] = {"applied": 0}
            if deferred:
                with timeline.step("replay oplog and build indexes"):
                    replayed = mongodb_replay_oplog(target.conninfo, fetched, restore_plan)
                with timeline.step("verify indexes"):
                    mongodb_verify_restore(target.conninfo, restore_plan, counts=False)
        except BaseException:
            _drop_quietly(target.conninfo, side)
            raise
    finally:
        fetched.cleanup()
    with timeline.step("swap"):
        kept = mongodb_swap(target.conninfo, name, side, stamp, keep_old=keep_old)
    url = health_url or target.health_url
    if url:
        with timeline.step("health check"):
            http_wait_healthy(url, health_timeout_seconds)
    rto = timeline.elapsed()
    objective = target.config.objectives.rto_for(target.tier)
    rpo_objective = target.config.objectives.rpo.database
    rpo = incident - backup.consistent_point if backup is not None else None
    result = {
        "system": target.system,
        "database": name,
        "backup_id": backup.id if backup else None,
        "source_path": source_path,
        "consistent_point": backup.consistent_point.isoformat() if backup else None,
        "consistency": backup.manifest.consistency if backup and backup.manifest else None,
        "kept_old_database": kept,
        "rto_seconds": round(rto.total_seconds(), 3),
        "rto_objective_seconds": objective.total_seconds(),
        "rto_met": rto <= objective,
        "rpo_seconds": round(rpo.total_seconds(), 3) if rpo is not None else None,
        "rpo_objective_seconds": rpo_objective.total_seconds(),
        "rpo_met": rpo <= rpo_objective if rpo is not None else None,
        "approval": approval,
        "verification": verification,
        "oplog": replayed,
        "steps": timeline.rows(),
    }
    rpo_row = {
        "step": "RPO achieved",
        "started": backup.consistent_point.isoformat() if backup else "",
        "seconds": result["rpo_seconds"],
        "outcome": "unknown" if rpo is None else "met" if result["rpo_met"] else "MISSED",
        "detail": f"objective {human_duration(rpo_objective)}",
    }
    report_publish(
        f"database-failure-mongodb-{target.system}-{name}",
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
            rpo_row,
        ],
    )
    return result


def _drop_quietly(conninfo: Any, name: str) -> None:
    # The verification failure is what matters; a leftover is reported by the next attempt.
    with contextlib.suppress(Exception):
        mongodb_drop_database(conninfo, name)


def _plan(
    system: str,
    database: str,
    exists: bool | None,
    backup: Any,
    source_path: str | None,
    stamp: str,
    keep_old: bool,
    repository: str,
    replay_oplog: bool,
) -> str:
    origin = (
        f"backup {backup.id} from {repository}, verify its checksum"
        if backup is not None
        else f"mongodump output {source_path}, check every CRC"
    )
    old = f"{database}__pre_restore_{stamp}"
    rows = [
        {"step": "download", "what": origin},
        {"step": "restore", "what": f"into NEW database {database}__restore_…"},
        {"step": "verify", "what": "document counts and index names against the manifest"},
        {"step": "oplog", "what": "replay to the consistent point" if replay_oplog else "skip"},
        {
            "step": "swap",
            "what": (
                f"move the collections of {database} to {old}" + ("" if keep_old else " (dropped)")
                if exists
                else f"{database} does not exist yet"
            )
            + f"; move the restored collections into {database}",
        },
    ]
    heading = (
        f"Backup **{backup.id}**, consistent point {backup.consistent_point.isoformat()}."
        if backup is not None
        else f"mongodump output **{source_path}** (its consistent point is unknown)."
    )
    return (
        f"# Restore plan: {system} / {database} (MongoDB)\n\n"
        f"{heading} Stop the application first: the swap is collection by collection.\n\n"
        + markdown_table(rows)
    )
