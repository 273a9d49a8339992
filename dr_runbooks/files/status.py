"""Where a file storage system (``engine: blob``) stands against its objectives.

One row per system, in order of precedence:

- ``MISSING``: no complete file backup;
- ``STALE``: the newest is older than the plan's file-storage RPO (24 h);
- ``FAILED``: the newest backup's latest checksum verification failed;
- ``POLICY``: the account's own protection falls short of the plan (soft delete, versioning,
  redundancy), with what is missing and the plan's value;
- ``DAMAGED``: a backup's manifest cannot be read;
- ``UNVERIFIED``: the newest backup's checksums were not verified within
  ``verification_max_age``;
- ``OK``.

A policy that cannot be read (no credentials for the account) is said in the detail and
does not change the state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from dr_runbooks.config import Config, FilesConfig
from dr_runbooks.errors import ConfigError, DRError
from dr_runbooks.files.catalog import FileCatalog
from dr_runbooks.files.policy import PolicyAudit, audit, read_settings
from dr_runbooks.files.source import BlobAccount
from dr_runbooks.repository import Repository
from dr_runbooks.statusrow import DatabaseStatus
from dr_runbooks.text import first_line

__all__ = ["FILES_ROW", "account_from_config", "file_status", "policy_of"]

#: What the ``database`` column says for a file storage system.
FILES_ROW = "(files)"

#: Loads a saved file storage block by name (the tasks and the CLI pass one; the engine
#: never imports Prefect).
BlockLoader = Callable[[str], BlobAccount]


def account_from_config(
    files: FilesConfig,
    blocks: BlockLoader | None = None,
    environ: Mapping[str, str] | None = None,
) -> BlobAccount:
    """The account dr.yaml names: a connection string from the environment, an account URL
    with ``DefaultAzureCredential``, or a saved block (through ``blocks``)."""
    env = os.environ if environ is None else environ
    if files.connection_string_env:
        value = env.get(files.connection_string_env)
        if not value:
            raise ConfigError(f"the environment variable {files.connection_string_env} is not set")
        return BlobAccount.from_connection_string(value)
    if files.account_url:
        from azure.identity import DefaultAzureCredential

        return BlobAccount.from_url(files.account_url, DefaultAzureCredential())
    assert files.block
    if blocks is None:
        raise ConfigError(f"the account is in the block {files.block!r}, which is not loaded here")
    return blocks(files.block)


def policy_of(
    files: FilesConfig, blocks: BlockLoader | None = None
) -> tuple[PolicyAudit | None, str | None]:
    """The account's policy audit, or None and why it could not be read."""
    try:
        account = account_from_config(files, blocks)
        return audit(read_settings(account, files.containers)), None
    except DRError as exc:
        return None, first_line(exc)


def file_status(
    config: Config,
    name: str,
    repository: Repository,
    policy: PolicyAudit | None,
    policy_problem: str | None = None,
    now: datetime | None = None,
) -> DatabaseStatus:
    """The status row of the file storage system ``name`` from ``repository``."""
    now = now or datetime.now(UTC)
    rpo = config.objectives.rpo.file_storage
    max_age = config.objectives.verification_max_age
    catalog = FileCatalog(repository, name)
    backups = catalog.backups()
    damaged = [b.id for b in backups if b.damaged]
    newest = catalog.latest()
    status = DatabaseStatus(
        system=name,
        engine="blob",
        database=FILES_ROW,
        repository=repository.name,
        state="OK",
        detail="",
        rpo_seconds=rpo.total_seconds(),
        damaged=damaged,
    )
    policy_text = (
        f"policy: {policy.describe()}"
        if policy is not None
        else f"policy not read ({policy_problem})"
        if policy_problem
        else ""
    )
    if newest is None or newest.manifest is None:
        status.state = "MISSING"
        status.detail = _join("no complete file backup", policy_text)
        return status
    manifest = newest.manifest
    age = now - newest.consistent_point
    status.newest_backup = newest.id
    status.newest_point = newest.consistent_point
    status.age_seconds = age.total_seconds()
    verified = [r for r in catalog.verifications(newest) if r.get("kind") == "checksums"]
    last = verified[-1] if verified else None
    verified_at = _time(last.get("finished") or last.get("at")) if last else None
    if last is not None and last.get("ok"):
        status.verified_backup = newest.id
        status.verified_point = newest.consistent_point
        status.verified_at = verified_at
    summary = f"{manifest.blob_count} blobs in {len(manifest.containers)} container(s)"
    if age > rpo:
        status.state = "STALE"
        status.detail = f"newest file backup {_hours(age)} old; objective {_hours(rpo)}"
    elif last is not None and not last.get("ok"):
        status.state = "FAILED"
        problems = last.get("problems") or ["checksums differ"]
        status.detail = f"backup {newest.id}: {problems[0]}"
    elif policy is not None and not policy.compliant:
        status.state = "POLICY"
        status.detail = f"the account falls short of the plan: {policy.describe()}"
        return status
    elif damaged:
        status.state = "DAMAGED"
        status.detail = f"unreadable manifest(s): {', '.join(damaged)}"
    elif last is None or verified_at is None or now - verified_at > max_age:
        status.state = "UNVERIFIED"
        status.detail = f"{summary}; checksums not verified within {_hours(max_age)}"
    else:
        status.detail = summary
    status.detail = _join(status.detail, policy_text)
    return status


def _time(value: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
