"""Configuration (``engine: git``) steps: load, check, bundle, verify, retain, restore."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import PREFECT_BLOCKS
from blocks.age import AGE_SECRETS
from dr_runbooks.config import GitConfig, load_config
from dr_runbooks.errors import ConfigError
from dr_runbooks.gitconfig import (
    ConfigBackup,
    ConfigCatalog,
    ConfigManifest,
    Drift,
    GitRemote,
    backup_config,
    compare,
    push_backup,
    remote_from_config,
    restore_clone,
    verify_backup,
)
from dr_runbooks.gitconfig.status import CONFIG_ROW
from dr_runbooks.repository import Repository
from dr_runbooks.targets import repository_from_config, repository_from_spec
from tasks._runtime import logger, transient_only

__all__ = [
    "git_apply_retention",
    "git_backup",
    "git_choose_backup",
    "git_compare",
    "git_load_remote",
    "git_load_repository",
    "git_load_target",
    "git_push",
    "git_record_check",
    "git_restore_clone",
    "git_verify",
    "git_verify_system",
]


def _declared(system: str, config_path: str | None) -> GitConfig:
    declared = load_config(config_path).system(system)
    if declared.git is None:
        raise ConfigError(f"system {system!r} is not configuration in git (engine: git)")
    return declared.git


@task(cache_policy=NO_CACHE)
def git_load_remote(system: str, config_path: str | None = None) -> tuple[GitRemote, list[str]]:
    """The system's repository (its credential from the variable dr.yaml names) and the
    refs backed up (no retries: bad input)."""
    git = _declared(system, config_path)
    remote = remote_from_config(git)
    logger().info("configuration of %s: %s, refs %s", system, remote, ", ".join(git.refs))
    return remote, list(git.refs)


@task(cache_policy=NO_CACHE)
def git_load_target(url: str, password_env: str = "") -> GitRemote:
    """The remote a restore pushes to; its credential from the variable ``password_env``
    names (never a flow parameter)."""
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise ConfigError(f"the environment variable {password_env} is not set")
    return GitRemote.parse(url, password=password)


@task(cache_policy=NO_CACHE)
def git_load_repository(system: str, spec: str = "", config_path: str | None = None) -> Repository:
    """The backup repository: ``spec`` (a dr.yaml name, a directory, a container URL, a
    block) or the system's first repository in dr.yaml."""
    config = load_config(config_path)
    if spec:
        return repository_from_spec(spec, config, PREFECT_BLOCKS, secrets=AGE_SECRETS)
    declared = config.system(system)
    if not declared.repositories:
        raise ConfigError(f"system {system!r} names no repository in dr.yaml")
    return repository_from_config(config, declared.repositories[0], PREFECT_BLOCKS, AGE_SECRETS)


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def git_compare(
    remote: GitRemote, repository: Repository, system: str, patterns: list[str]
) -> Drift:
    """The remote's refs (one ``git ls-remote``) against the newest bundle."""
    drift = compare(remote, ConfigCatalog(repository, system), patterns)
    logger().info("%s: %s", system, drift.describe())
    return drift


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def git_record_check(repository: Repository, system: str, backup: ConfigBackup) -> None:
    """Remember that the remote matched ``backup`` now (the age of a later difference)."""
    ConfigCatalog(repository, system).record_check(backup, datetime.now(UTC))


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def git_backup(
    remote: GitRemote,
    repository: Repository,
    system: str,
    patterns: list[str],
    head: str | None,
) -> ConfigManifest:
    """Bundle the refs into a new backup; the manifest records what the bundle holds."""
    manifest = backup_config(remote, ConfigCatalog(repository, system), patterns, head)
    logger().info(
        "configuration backup %s of %s: %d refs, bundle %d bytes",
        manifest.id,
        system,
        len(manifest.refs),
        manifest.bundle.size,
    )
    return manifest


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def git_verify(repository: Repository, system: str, backup_id: str) -> dict[str, Any]:
    """Checksum, ``git bundle verify`` and the refs of one backup; the outcome is recorded."""
    catalog = ConfigCatalog(repository, system)
    record = verify_backup(catalog, catalog.find(backup_id))
    if not record["ok"]:
        logger().error("configuration backup %s: %s", backup_id, "; ".join(record["problems"]))
    return record


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def git_verify_system(name: str, config_path: str | None = None) -> dict[str, Any]:
    """verify-backups for a configuration system: the newest bundle's checksum, ``git
    bundle verify`` and refs (recorded)."""
    config = load_config(config_path)
    system = config.system(name)
    if not system.repositories:
        raise ConfigError(f"system {name!r} names no repository in dr.yaml")
    repository = repository_from_config(config, system.repositories[0], PREFECT_BLOCKS, AGE_SECRETS)
    catalog = ConfigCatalog(repository, name)
    newest = catalog.latest()
    result: dict[str, Any] = {
        "system": name,
        "database": CONFIG_ROW,
        "repository": repository.name,
        "backup_id": newest.id if newest else None,
        "age": "n/a",
        "outcome": "ok",
        "detail": "",
    }
    if newest is None:
        result.update(outcome="missing", detail="no complete configuration backup")
        return result
    record = verify_backup(catalog, newest)
    if record["ok"]:
        result["detail"] = f"bundle verified, {record['refs']} refs"
    else:
        result.update(outcome="failed", detail=record["problems"][0])
    return result


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def git_apply_retention(
    repository: Repository, system: str, dry_run: bool, now: datetime | None = None
) -> dict[str, Any]:
    """Delete backups past the repository's retention (keeping its ``min_keep`` newest) and
    attempts abandoned more than a day ago. ``now`` (default: now) pins the clock, so a dry
    run shown first and the run that follows it judge the same backups old."""
    catalog = ConfigCatalog(repository, system)
    with catalog.locked("config retention"):
        expired = catalog.expired(now=now)
        abandoned = catalog.abandoned(now=now) if dry_run else catalog.remove_abandoned(now=now)
        if not dry_run:
            catalog.delete(expired)
    return {
        "dry_run": dry_run,
        "deleted": [b.id for b in expired],
        "abandoned_removed": abandoned,
    }


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def git_choose_backup(repository: Repository, system: str, backup_id: str | None) -> ConfigBackup:
    return ConfigCatalog(repository, system).find(backup_id)


@task(cache_policy=NO_CACHE)
def git_restore_clone(repository: Repository, backup: ConfigBackup, path: str) -> dict[str, str]:
    """Clone the backup into a new path and check its refs against the manifest."""
    refs = restore_clone(ConfigCatalog(repository, backup.system), backup, Path(path))
    logger().info("backup %s cloned into %s: %d refs, as recorded", backup.id, path, len(refs))
    return refs


@task(cache_policy=NO_CACHE)
def git_push(repository: Repository, backup: ConfigBackup, target: GitRemote) -> dict[str, str]:
    """Push the backup's refs to a new, empty remote and read them back. No retries: a
    half-finished push is reported, and a second attempt would find the remote not empty."""
    refs = push_backup(ConfigCatalog(repository, backup.system), backup, target)
    logger().info("backup %s pushed to %s: %d refs, as recorded", backup.id, target, len(refs))
    return refs
