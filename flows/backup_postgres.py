"""Runbook: PostgreSQL backup (the plan's daily full and hourly backups).

1. Load the system from dr.yaml (or the overrides): connection, databases, repositories.
2. Clear attempts abandoned more than a day ago (``backup_steps.clear_abandoned``).
3. Per database, never two at once for one database: pg_dump in an exported snapshot, the
   rows counted in the same snapshot, zstd and sha256 on the fly into the first repository,
   manifest last.
4. Copies to the other repositories, then each one's retention, with ``retention_days`` for
   backups of this ``kind`` (hourly ones) (``backup_steps.copy_and_prune``).
5. A table artifact: id, size, tables and rows of every backup taken.

A system marked ``physical`` skips the hourly dump: its hourly protection is the incremental
base backup (``backup-postgres-physical``) and the archived WAL. Its daily dump stays (a
logical copy restores across versions, one database out of many, one table).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.locks import backups_lock, database_lock
from flows import backup_steps as steps
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.config import dr_load_target
from tasks.postgres import postgres_backup

__all__ = ["backup_postgres"]


@flow(name="backup-postgres", log_prints=True)
@runbook
def backup_postgres(
    system: str = p.SYSTEM,
    database: str = p.BACKUP_DATABASE,
    connection: str = p.CONNECTION,
    repositories: list[str] = p.REPOSITORIES,
    kind: p.Kind = p.KIND,
    retention: bool = p.RETENTION,
    retention_dry_run: bool = p.RETENTION_DRY_RUN,
    retention_days: int = Field(
        0,
        ge=0,
        description="Override: keep backups of this kind only this many days (e.g. 2 for "
        "hourly backups); 0: each repository's own retention, for all kinds.",
    ),
    retention_include_legacy: bool = Field(
        False, description="Let retention delete the plan's script backups (backup_*.sql.gz) too."
    ),
    role_passwords: bool = Field(
        False, description="Keep role password hashes (needs a superuser connection)."
    ),
    dump_retries: int = p.DUMP_RETRIES,
    lock_timeout_seconds: int = p.BACKUP_LOCK_TIMEOUT,
    encrypt_to: list[str] = Field(
        [],
        description="Also encrypt to these age recipients (public keys, `age1…`), besides "
        "each repository's `encrypt_to` in dr.yaml.",
    ),
    config_path: str = p.CONFIG_PATH,
) -> list[dict[str, Any]]:
    """Back up a PostgreSQL system's databases into its repositories."""
    policy = steps.Retention(
        retention, retention_dry_run, retention_include_legacy, retention_days or None, kind
    )
    with Runbook("backup-postgres", system=system, config_path=config_path) as rb:
        with rb.step("load"):
            target = dr_load_target(
                "postgres", system, connection, database, repositories, config_path, encrypt_to
            )
        if kind == "hourly" and target.physical:
            with rb.step("hourly dump") as step:
                step.outcome = "skipped"
                step.detail = (
                    f"{target.system} is physical: its hourly protection is the incremental "
                    "base backup and the archived WAL"
                )
            print(f"skipped: {step.detail}")
            return []
        steps.clear_abandoned(rb, target)
        results = []
        for name in target.databases:
            locks = [
                database_lock(target.conninfo, name),
                backups_lock(target.primary, "postgres", target.system, name),
            ]
            with rb.lock(locks, lock_timeout_seconds):
                try:
                    with rb.step(f"dump {name}"):
                        manifest = postgres_backup.with_options(retries=dump_retries)(
                            target.conninfo,
                            name,
                            target.system,
                            target.primary,
                            kind,
                            role_passwords,
                        )
                finally:
                    steps.remove_leftovers(rb, target, name)
            copies, pruned = steps.copy_and_prune(rb, target, manifest, policy)
            results.append(
                steps.backup_row(
                    target,
                    manifest,
                    copies,
                    pruned,
                    tables=len(manifest.tables),
                    rows=manifest.total_rows,
                )
            )
        steps.publish_backups(rb, f"PostgreSQL backups of {target.system}", results)
        return results
