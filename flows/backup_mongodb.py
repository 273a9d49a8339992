"""Runbook: MongoDB backup (the plan's daily 03:00 mongodump, without its password in ``ps``).

1. Load the system from dr.yaml (or the overrides); with no databases named, list the
   server's (all but admin, local and config).
2. Clear abandoned attempts, as every backup does (``backup_steps.clear_abandoned``).
3. Per database, one at a time: a mongodump archive (native engine or the tools), the oplog
   captured on a replica set so the backup is consistent to one point; zstd-compressed and
   checksummed into the first repository, manifest last.
4. Copies and retention (``backup_steps.copy_and_prune``).
5. A table artifact: engine, consistency, collections, documents and oplog entries.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from pydantic import Field

from dr_runbooks.locks import backups_lock
from flows import backup_steps as steps
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.config import dr_load_target
from tasks.mongodb import mongodb_backup, mongodb_list_databases

__all__ = ["backup_mongodb"]


@flow(name="backup-mongodb", log_prints=True)
@runbook
def backup_mongodb(
    system: str = p.SYSTEM,
    database: str = p.BACKUP_DATABASE,
    connection: str = p.CONNECTION,
    repositories: list[str] = p.REPOSITORIES,
    engine: Literal["auto", "native", "tools"] = Field(
        "auto",
        description="`native` (pymongo), `tools` (mongodump on PATH) or `auto` (the tools "
        "when installed).",
    ),
    kind: p.Kind = p.KIND,
    retention: bool = p.RETENTION,
    retention_dry_run: bool = p.RETENTION_DRY_RUN,
    dump_retries: int = p.DUMP_RETRIES,
    lock_timeout_seconds: int = p.BACKUP_LOCK_TIMEOUT,
    encrypt_to: list[str] = Field(
        [],
        description="Also encrypt to these age recipients (public keys, `age1…`), besides "
        "each repository's `encrypt_to` in dr.yaml.",
    ),
    config_path: str = p.CONFIG_PATH,
) -> list[dict[str, Any]]:
    """Back up a MongoDB system's databases into its repositories."""
    with Runbook("backup-mongodb", system=system, config_path=config_path) as rb:
        with rb.step("load"):
            target = dr_load_target(
                "mongodb", system, connection, database, repositories, config_path, encrypt_to
            )
        steps.clear_abandoned(rb, target)
        databases = target.databases
        if not databases:
            with rb.step("list databases"):
                databases = mongodb_list_databases(target.conninfo)
        results = []
        for name in databases:
            locks = [backups_lock(target.primary, "mongodb", target.system, name)]
            with rb.lock(locks, lock_timeout_seconds):
                try:
                    with rb.step(f"dump {name}"):
                        manifest = mongodb_backup.with_options(retries=dump_retries)(
                            target.conninfo, name, target.system, target.primary, engine, kind
                        )
                finally:
                    steps.remove_leftovers(rb, target, name)
            copies, pruned = steps.copy_and_prune(
                rb, target, manifest, steps.Retention(retention, retention_dry_run)
            )
            oplog = manifest.details.get("oplog") or {}
            results.append(
                steps.backup_row(
                    target,
                    manifest,
                    copies,
                    pruned,
                    engine=manifest.details.get("engine"),
                    consistency=manifest.consistency,
                    collections=len(manifest.tables),
                    documents=manifest.total_rows,
                    oplog_entries=oplog.get("entries"),
                )
            )
        steps.publish_backups(rb, f"MongoDB backups of {target.system}", results)
        return results
