"""Runbook: physical base backup of a WAL-archived PostgreSQL system (``physical: true``).

1. Load the system from dr.yaml (or the overrides).
2. Holding the lock of the system's base backups in its first repository (a second copy waits,
   and retention never deletes the parent an incremental is being taken against):
   ``pg_basebackup`` over a replication connection, tar streamed through zstd and sha256 into
   the first repository, marker first, commit record last, committed only once the WAL its
   consistency needs is archived. ``incremental``: against the newest base backup
   (PostgreSQL 17+, ``summarize_wal = on``); a full one when there is none to build on.
3. Copies to the other repositories, then each one's physical retention: whole chains, and
   the WAL older than the oldest kept base backup; never a segment a kept backup needs.
4. A table artifact: the backup, its WAL range and the recovery window it opens.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.locks import base_backups_lock
from dr_runbooks.text import human_size
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.config import dr_load_target
from tasks.physical import (
    base_backup_copy,
    base_backup_take,
    physical_retention_apply,
    physical_retention_plan,
    pitr_window,
)

__all__ = ["backup_postgres_physical"]


@flow(name="backup-postgres-physical", log_prints=True)
@runbook
def backup_postgres_physical(
    system: str = p.SYSTEM,
    connection: str = p.CONNECTION,
    repositories: list[str] = p.REPOSITORIES,
    incremental: bool = Field(
        False,
        description="Incremental against the newest base backup (PostgreSQL 17+ with "
        "`summarize_wal = on`); a full one when there is none to build on.",
    ),
    retention: bool = p.RETENTION,
    retention_dry_run: bool = p.RETENTION_DRY_RUN,
    lock_timeout_seconds: int = p.BACKUP_LOCK_TIMEOUT,
    encrypt_to: list[str] = Field(
        [],
        description="Also encrypt to these age recipients (public keys, `age1…`), besides "
        "each repository's `encrypt_to` in dr.yaml.",
    ),
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Take a physical base backup of a PostgreSQL cluster into the system's repositories."""
    with Runbook("backup-postgres-physical", system=system, config_path=config_path) as rb:
        with rb.step("load"):
            target = dr_load_target(
                "postgres", system, connection, None, repositories, config_path, encrypt_to
            )
        lock = base_backups_lock(target.primary, target.system)
        with rb.lock([lock], lock_timeout_seconds):
            with rb.step("base backup") as step:
                manifest = base_backup_take(
                    target.conninfo, target.system, target.primary, incremental
                )
                step.detail = f"{manifest.id} ({manifest.kind}), {human_size(manifest.size)}"
            with rb.step("copy"):
                copies = [
                    base_backup_copy(target.primary, manifest, repository)
                    for repository in target.repositories[1:]
                ]
            pruned: list[dict[str, Any]] = []
            if retention:
                with rb.step("retention"):
                    now = datetime.now(UTC)
                    for repository in target.repositories:
                        plan = physical_retention_plan(
                            repository,
                            target.system,
                            now,
                            repository.retention_days,
                            repository.min_keep,
                        )
                        if not retention_dry_run:
                            physical_retention_apply(repository, plan)
                        pruned.append({"repository": repository.name, **plan.summary()})
        with rb.step("recovery window"):
            window = pitr_window(target.primary, target.system, precise=False)
        result = {
            "system": target.system,
            "backup_id": manifest.id,
            "kind": f"physical-{manifest.kind}",
            "timeline": manifest.timeline,
            "start_lsn": manifest.start_lsn,
            "end_lsn": manifest.end_lsn,
            "finished": manifest.finished.isoformat(),
            "size": manifest.size,
            "incremental_refused": manifest.details.get("incremental_refused"),
            "repositories": ", ".join([target.primary.name, *copies]),
            "window": window.summary(),
            "retention": pruned,
        }
        rb.publish(
            f"{rb.name}-{target.system}",
            f"Base backup of {target.system}",
            table=[
                {
                    "backup": manifest.id,
                    "kind": result["kind"],
                    "WAL from": manifest.start_lsn,
                    "WAL to": manifest.end_lsn,
                    "stored": human_size(manifest.size),
                    "repositories": result["repositories"],
                    "recoverable from (UTC)": _second(window.earliest),
                }
            ],
        )
        return result


def _second(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "-"
