"""Runbook: PostgreSQL backup (the plan's daily full and hourly backups).

1. Load the system from dr.yaml (or the overrides): connection, databases, repositories.
2. Remove attempts abandoned more than a day ago.
3. For each database, one at a time per database (a Prefect concurrency limit keyed by system and
   database): dump it in an exported snapshot into the first repository, checksummed, manifest last.
4. Copy the committed backup to the other repositories.
5. Apply each repository's retention (older than N days, but never fewer than min_keep).
6. Publish the result as a table artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.concurrency.sync import concurrency
from pydantic import Field

from dr_runbooks.report import Timeline
from tasks._runtime import ensure_concurrency_limit
from tasks.config import dr_load_target
from tasks.notify import notify_on_failure
from tasks.postgres import postgres_backup
from tasks.report import report_publish
from tasks.repository import (
    repository_apply_retention,
    repository_copy_backup,
    repository_remove_abandoned,
)

__all__ = ["backup_postgres"]


@flow(name="backup-postgres", log_prints=True, on_failure=[notify_on_failure])
def backup_postgres(
    system: str | None = Field(None, description="Protected system from dr.yaml."),
    database: str | None = Field(
        None, description="Only this database (default: the system's databases)."
    ),
    connection: str | None = Field(
        None,
        description="Override the connection: a PostgresDatabase block name, or env:VAR "
        "naming an environment variable that holds a DSN.",
    ),
    repositories: list[str] | None = Field(
        None,
        description="Override the repositories: dr.yaml names, directories, container URLs "
        "or block names. The first receives the dump; the rest get copies.",
    ),
    kind: str = Field("full", description="Recorded in the manifest: full, hourly, manual…"),
    retention: bool = Field(True, description="Apply each repository's retention afterwards."),
    retention_dry_run: bool = Field(False, description="Only report what retention would delete."),
    retention_days: int | None = Field(
        None,
        ge=0,
        description="Override: keep backups of this kind only this many days "
        "(e.g. 2 for hourly backups); default: each repository's retention, for all kinds.",
    ),
    retention_include_legacy: bool = Field(
        False, description="Let retention delete the plan's script backups (backup_*.sql.gz) too."
    ),
    role_passwords: bool = Field(
        False, description="Keep role password hashes (needs a superuser connection)."
    ),
    dump_retries: int = Field(1, ge=0, le=5, description="Retries of a failed dump."),
    config_path: str | None = Field(
        None, description="dr.yaml to use (default: DR_CONFIG or ./dr.yaml)."
    ),
) -> list[dict[str, Any]]:
    """Back up a PostgreSQL system's databases into its repositories."""
    timeline = Timeline()
    with timeline.step("load"):
        target = dr_load_target(system, connection, database, repositories, config_path)
    with timeline.step("clean up abandoned attempts"):
        for repository in target.repositories:
            repository_remove_abandoned(repository, "postgres")
    results = []
    for name in target.databases:
        limit = ensure_concurrency_limit(f"dr-backup-postgres-{target.system}-{name}")
        with timeline.step(f"dump {name}"), concurrency(limit, occupy=1, timeout_seconds=6 * 3600):
            manifest = postgres_backup.with_options(retries=dump_retries)(
                target.conninfo, name, target.system, target.primary, kind, role_passwords
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
                            repository,
                            "postgres",
                            target.system,
                            name,
                            dry_run=retention_dry_run,
                            include_legacy=retention_include_legacy,
                            retention_days=retention_days,
                            kind=kind if retention_days is not None else None,
                        )
                    )
        data = manifest.objects[0]
        results.append(
            {
                "system": target.system,
                "database": name,
                "backup_id": manifest.id,
                "consistent_point": manifest.consistent_point.isoformat(),
                "size": data.size,
                "raw_size": data.raw_size,
                "tables": len(manifest.tables),
                "rows": sum(manifest.tables.values()),
                "repositories": ", ".join([target.primary.name, *copies]),
                "retention": pruned,
            }
        )
    report_publish(
        f"backup-postgres-{target.system}",
        f"PostgreSQL backups of {target.system}",
        table=[{k: v for k, v in r.items() if k != "retention"} for r in results],
    )
    return results
