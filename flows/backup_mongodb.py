"""Runbook: MongoDB backup (the plan's daily 03:00 mongodump, without its password in ``ps``).

1. Load the system from dr.yaml (or the overrides): connection, databases, repositories.
2. Remove attempts abandoned more than a day ago.
3. When the system names no databases, list them on the server (all but admin/local/config).
4. For each database, one at a time per database (a Prefect concurrency limit keyed by system and
   database): write a mongodump archive — with the oplog on a replica set — into the first
   repository, zstd-compressed and checksummed, manifest last.
5. Copy the committed backup to the other repositories.
6. Apply each repository's retention (older than N days, but never fewer than min_keep).
7. Publish the result as a table artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.concurrency.sync import concurrency
from pydantic import Field

from dr_runbooks.report import Timeline
from tasks._runtime import ensure_concurrency_limit
from tasks.mongodb import mongodb_backup, mongodb_list_databases, mongodb_load_target
from tasks.notify import notify_on_failure
from tasks.report import report_publish
from tasks.repository import (
    repository_apply_retention,
    repository_copy_backup,
    repository_remove_abandoned,
)

__all__ = ["backup_mongodb"]


@flow(name="backup-mongodb", log_prints=True, on_failure=[notify_on_failure])
def backup_mongodb(
    system: str | None = Field(None, description="Protected system from dr.yaml."),
    database: str | None = Field(
        None, description="Only this database (default: the system's databases, else all)."
    ),
    connection: str | None = Field(
        None,
        description="Override the connection: a MongoDatabase block name (slug/name for "
        "another block type), or env:VAR naming an environment variable that holds a URI.",
    ),
    repositories: list[str] | None = Field(
        None,
        description="Override the repositories: dr.yaml names, directories, container URLs "
        "or block names. The first receives the archive; the rest get copies.",
    ),
    engine: str = Field(
        "auto",
        description="native (pymongo), tools (mongodump on PATH) or auto (the tools when "
        "installed).",
    ),
    kind: str = Field("full", description="Recorded in the manifest: full, manual…"),
    retention: bool = Field(True, description="Apply each repository's retention afterwards."),
    retention_dry_run: bool = Field(False, description="Only report what retention would delete."),
    dump_retries: int = Field(1, ge=0, le=5, description="Retries of a failed dump."),
    config_path: str | None = Field(
        None, description="dr.yaml to use (default: DR_CONFIG or ./dr.yaml)."
    ),
) -> list[dict[str, Any]]:
    """Back up a MongoDB system's databases into its repositories."""
    timeline = Timeline()
    with timeline.step("load"):
        target = mongodb_load_target(system, connection, database, repositories, config_path)
    with timeline.step("clean up abandoned attempts"):
        for repository in target.repositories:
            repository_remove_abandoned(repository, "mongodb")
    databases = target.databases
    if not databases:
        with timeline.step("list databases"):
            databases = mongodb_list_databases(target.conninfo)
    results = []
    for name in databases:
        limit = ensure_concurrency_limit(f"dr-backup-mongodb-{target.system}-{name}")
        with timeline.step(f"dump {name}"), concurrency(limit, occupy=1, timeout_seconds=6 * 3600):
            manifest = mongodb_backup.with_options(retries=dump_retries)(
                target.conninfo, name, target.system, target.primary, engine, kind
            )
        copies = []
        with timeline.step(f"copy {name}"):
            for repository in target.repositories[1:]:
                copies.append(repository_copy_backup(target.primary, manifest, repository))
        pruned: list[dict[str, Any]] = []
        if retention:
            with timeline.step(f"retention {name}"):
                for repository in target.repositories:
                    pruned.append(
                        repository_apply_retention(
                            repository, "mongodb", target.system, name, dry_run=retention_dry_run
                        )
                    )
        data = manifest.objects[0]
        oplog = manifest.details.get("oplog") or {}
        results.append(
            {
                "system": target.system,
                "database": name,
                "backup_id": manifest.id,
                "engine": manifest.details.get("engine"),
                "consistency": manifest.consistency,
                "consistent_point": manifest.consistent_point.isoformat(),
                "size": data.size,
                "raw_size": data.raw_size,
                "collections": len(manifest.tables),
                "documents": sum(manifest.tables.values()),
                "oplog_entries": oplog.get("entries"),
                "repositories": ", ".join([target.primary.name, *copies]),
                "retention": pruned,
            }
        )
    report_publish(
        f"backup-mongodb-{target.system}",
        f"MongoDB backups of {target.system}",
        table=[{k: v for k, v in r.items() if k != "retention"} for r in results],
    )
    return results
