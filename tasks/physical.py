"""Physical protection steps: base backups, the recovery window, the WAL chain, physical
retention, and a point-in-time restore into a new cluster beside the live one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.postgres import basebackup, cluster, pitr
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from tasks._runtime import logger, reported_progress, transient_only

__all__ = [
    "base_backup_copy",
    "base_backup_take",
    "physical_retention_apply",
    "physical_retention_plan",
    "pitr_restore",
    "pitr_stop",
    "pitr_window",
    "wal_chain_check",
]


@task(retries=1, retry_delay_seconds=30, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def base_backup_take(
    conninfo: ConnInfo, system: str, repository: Repository, incremental: bool = False
) -> basebackup.BaseBackupManifest:
    """pg_basebackup (tar, streamed through zstd and sha256) into the repository, committed
    once the WAL its consistency needs is archived."""
    with reported_progress("backup"):
        manifest = basebackup.take_base_backup(conninfo, system, repository, incremental)
    logger().info(
        "base backup %s (%s) of %s: %d bytes stored, WAL %s..%s on timeline %d",
        manifest.id,
        manifest.kind,
        system,
        manifest.size,
        manifest.start_lsn,
        manifest.end_lsn,
        manifest.timeline,
    )
    return manifest


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def pitr_window(repository: Repository, system: str, precise: bool = True) -> pitr.RecoveryWindow:
    """Earliest and latest recoverable time (``precise``: the last archived commit, read with
    pg_waldump; otherwise only the newest WAL file's arrival, from a listing)."""
    return pitr.recovery_window(repository, system, precise=precise)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def wal_chain_check(repository: Repository, system: str) -> pitr.WalChain:
    """The WAL chain from the newest base backup to the newest archived segment."""
    return pitr.check_wal_chain(repository, system)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def physical_retention_plan(
    repository: Repository, system: str, now: Any, retention_days: int, min_keep: int
) -> pitr.PhysicalRetentionPlan:
    """Which base backup chains and WAL retention deletes (whole chains; never WAL a kept
    backup needs)."""
    return pitr.plan_physical_retention(repository, system, now, retention_days, min_keep)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def physical_retention_apply(repository: Repository, plan: pitr.PhysicalRetentionPlan) -> None:
    pitr.apply_physical_retention(repository, plan)


@task(retries=0, cache_policy=NO_CACHE)
def pitr_restore(
    repository: Repository,
    system: str,
    target: pitr.RecoveryTarget,
    pgdata: str,
    port: int,
    repo_specs: list[str],
    config_path: str | None = None,
    os_user: str | None = None,
) -> dict[str, Any]:
    """Build a new cluster in ``pgdata`` recovered to ``target``, start it on 127.0.0.1:``port``
    and wait for its promotion; the summary says the point reached. Not retried: a second try
    would need the half-built directory removed, which is the caller's decision."""
    with reported_progress("download"):
        restored = cluster.restore_to_point(
            repository,
            system,
            target,
            Path(pgdata),
            repo_specs=repo_specs,
            config_path=config_path,
            start=True,
            port=port,
            os_user=os_user,
        )
    summary = restored.summary()
    logger().info(
        "recovered %s to %s (reached %s, LSN %s) in %s on port %d",
        system,
        summary["target"],
        summary["reached_time"],
        summary["reached_lsn"],
        pgdata,
        port,
    )
    return summary


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def pitr_stop(pgdata: str, os_user: str | None = None) -> None:
    """Stop a cluster :func:`pitr_restore` started."""
    cluster.stop_cluster(Path(pgdata), os_user)


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def base_backup_copy(
    source: Repository, manifest: basebackup.BaseBackupManifest, target: Repository
) -> str:
    """Copy a committed base backup to another repository (checksums re-checked on the way);
    the WAL it needs reaches that repository through ``archive_command``."""
    [backup] = [b for b in basebackup.base_backups(source, manifest.system) if b.id == manifest.id]
    with reported_progress("copy"):
        basebackup.copy_base_backup(source, backup, target)
    return target.name
