"""Runbook: Scenario 1, database failure (MongoDB).

The plan stops the database, runs mongorestore and starts it again. Here, as for PostgreSQL
(``flows/database_failure.py``), the server is assessed, a backup chosen by consistent point,
the plan approved and the download's checksum verified before anything is written; then the
MongoDB middle:

1. The source may instead be mongodump output on disk (an archive, a directory, the plan's
   legacy tar.gz); read it and plan the restore, checking every CRC and time-series bucket
   when there is no manifest and refusing an index no server can build.
2. Into a new database ``<db>__restore_<run>``, named for this run: options, documents,
   indexes, views; with an oplog to replay the indexes wait for it, as mongorestore does.
3. Document counts and index names of every collection against the manifest.
4. The oplog captured during the backup replayed to its consistent point; the waiting indexes
   built and their names checked.
5. Collection by collection into place, the old ones kept in ``<db>__pre_restore_<ts>``. This
   is not atomic: the plan shown for approval says to stop the application first.

Then the health URL, and the RTO and RPO achieved. A failure before step 5 leaves the
database exactly as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import BadInput
from dr_runbooks.mongo.server import ServerStatus
from dr_runbooks.repository import Backup, parse_time
from dr_runbooks.text import human_duration, human_size, markdown_table
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.config import dr_load_target
from tasks.health import http_wait_healthy
from tasks.mongodb import (
    mongodb_assess,
    mongodb_drop_database,
    mongodb_fetch_verified,
    mongodb_open_dump,
    mongodb_plan_restore,
    mongodb_replay_oplog,
    mongodb_restore,
    mongodb_swap,
    mongodb_verify_restore,
)
from tasks.repository import repository_choose_backup

__all__ = ["database_failure_mongodb"]


@flow(name="database-failure-mongodb", log_prints=True)
@runbook
def database_failure_mongodb(
    system: str = p.SYSTEM,
    database: str = p.DATABASE,
    connection: str = p.CONNECTION,
    source_path: str = Field(
        "",
        description="Restore from mongodump output on disk instead of a backup: an --archive "
        "file (plain or gzip), a dump directory, or a legacy backup_*.tar.gz.",
    ),
    source_database: str = Field(
        "", description="The database of the dump to restore (default: the same name)."
    ),
    repository: str = p.REPOSITORY,
    backup_id: str = p.BACKUP_ID,
    before: str = p.BEFORE,
    replay_oplog: bool = Field(True, description="Replay the oplog the backup captured."),
    health_url: str = p.HEALTH_URL,
    health_timeout_seconds: int = p.HEALTH_TIMEOUT,
    keep_old: bool = Field(
        True, description="Keep the replaced collections in `<db>__pre_restore_<ts>`."
    ),
    dry_run: bool = p.DRY_RUN,
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    incident_time: str = p.INCIDENT_TIME,
    severity: p.Severity = p.severity("Critical"),
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Restore a MongoDB database from its repository and verify it (the plan's Scenario 1)."""
    with Runbook(
        "database-failure-mongodb",
        system=system,
        config_path=config_path,
        incident_time=incident_time,
    ) as rb:
        cutoff = parse_time(before) if before else None
        if source_path and (backup_id or cutoff):
            raise BadInput("give a source path or a backup (id, before), not both")
        with rb.step("load"):
            repositories = [repository] if repository else None
            target = dr_load_target(
                "mongodb", system, connection, database, repositories, config_path
            )
            if not target.databases:
                raise BadInput("name the database to restore (database, or databases: in dr.yaml)")
        name, source = target.databases[0], target.primary
        with rb.step("assess"):
            status = mongodb_assess(target.conninfo, name)
            if not status.reachable:
                raise BadInput(f"the target server is not reachable: {status.error}")
        backup = None
        with rb.step("choose backup"):
            if not source_path:
                backup = repository_choose_backup(
                    source, "mongodb", target.system, name, backup_id=backup_id, before=cutoff
                )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        plan = _plan(
            target.system,
            name,
            status,
            backup,
            source_path,
            stamp,
            keep_old,
            source.name,
            replay_oplog,
        )
        approval = rb.gate(
            f"restore-{target.system}-{name}", plan, dry_run, approved, approval_timeout_seconds
        )
        if approval is None:
            chosen = backup.id if backup else None
            return {"dry_run": True, "plan": plan, "backup_id": chosen, "database": name}
        with rb.step("download and verify checksums"):
            fetched = (
                mongodb_fetch_verified(source, backup)
                if backup is not None
                else mongodb_open_dump(source_path or "")
            )
        try:
            with rb.step("read the dump and plan"):
                # Side databases are named for this run, never shared with another.
                restore_plan = mongodb_plan_restore(fetched, name, source_database, rb.token)
            side = restore_plan.databases[0].side
            # Indexes wait for the oplog (see restore_into_side); the counts are checked before.
            deferred = replay_oplog and restore_plan.oplog_entries is not None
            with rb.step("restore into side database", detail=side):
                mongodb_restore(target.conninfo, fetched, restore_plan, indexes=not deferred)
            try:
                with rb.step("verify"):
                    verification = mongodb_verify_restore(
                        target.conninfo, restore_plan, indexes=not deferred
                    )
                replayed: dict[str, Any] = {"applied": 0}
                if deferred:
                    with rb.step("replay oplog and build indexes"):
                        replayed = mongodb_replay_oplog(target.conninfo, fetched, restore_plan)
                    with rb.step("verify indexes"):
                        mongodb_verify_restore(target.conninfo, restore_plan, counts=False)
            except BaseException:
                # The failed step is what matters; a leftover is reported by the next attempt.
                mongodb_drop_database(target.conninfo, side, return_state=True)
                raise
        finally:
            fetched.cleanup()
        with rb.step("swap"):
            kept = mongodb_swap(target.conninfo, name, side, stamp, keep_old=keep_old)
        if health_url or target.health_url:
            with rb.step("health check"):
                http_wait_healthy(health_url or target.health_url or "", health_timeout_seconds)
        return rb.recovered(
            target,
            backup.consistent_point if backup else None,
            key=f"database-failure-mongodb-{target.system}-{name}",
            system=target.system,
            database=name,
            backup_id=backup.id if backup else None,
            source_path=source_path,
            consistent_point=backup.consistent_point.isoformat() if backup else None,
            consistency=backup.manifest.consistency if backup and backup.manifest else None,
            kept_old_database=kept,
            approval=approval,
            verification=verification,
            oplog=replayed,
        )


def _plan(
    system: str,
    database: str,
    status: ServerStatus,
    backup: Backup | None,
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
    moved = (
        f"move the collections of {database} to {old}" + ("" if keep_old else " (dropped)")
        if status.database_exists
        else f"{database} does not exist yet"
    )
    rows = [
        {"step": "download", "what": origin},
        {"step": "restore", "what": f"into NEW database {database}__restore_…"},
        {"step": "verify", "what": "document counts and index names against the manifest"},
        {"step": "oplog", "what": "replay to the consistent point" if replay_oplog else "skip"},
        {"step": "swap", "what": f"{moved}; move the restored collections into {database}"},
    ]
    kind = f"replica set {status.replica_set}" if status.replica_set else "standalone"
    found = (
        f"{database} has {status.collections} collections"
        if status.database_exists
        else f"{database} is **missing**"
    )
    if backup is not None:
        age = datetime.now(UTC) - backup.consistent_point
        point = f"{backup.consistent_point:%Y-%m-%d %H:%M:%S} UTC"
        heading = (
            f"**Backup** {backup.id}: consistent point {point}, **{human_duration(age)} old**, "
            f"{human_size(backup.size)}.\n\n**Data lost**: everything written to {database} "
            f"after {point} is not in this backup."
        )
    else:
        heading = f"mongodump output **{source_path}** (its consistent point is unknown)."
    heading = f"**Assessment**: MongoDB {status.server_version} ({kind}); {found}.\n\n{heading}"
    return (
        f"# Restore plan: {system} / {database} (MongoDB)\n\n"
        f"{heading} Stop the application first: the swap is collection by collection.\n\n"
        + markdown_table(rows)
    )
