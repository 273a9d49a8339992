"""Where a file storage system (``engine: blob``) stands against its objectives.

One row per system, in order of precedence:

- ``MISSING``: no complete file backup;
- ``STALE``: the newest is older than the plan's file-storage RPO (24 h);
- ``FAILED``: the newest backup's latest checksum verification failed;
- ``POLICY``: the account's own protection falls short of the plan (soft delete, container
  soft delete, versioning, redundancy), with what is missing and the plan's value;
- ``DAMAGED``: a backup's manifest cannot be read;
- ``UNVERIFIED``: the newest backup's checksums were not verified within
  ``verification_max_age``;
- ``OK``.

The account's protection is read through Azure Resource Manager when the system names its
subscription and resource group (:func:`~dr_runbooks.files.policy.read_management_settings`),
else, or when Resource Manager refuses (403, not found), through the blob data plane, which
cannot read container soft delete. A setting that could not be read, or a policy that could
not be read at all (no credentials for the account), is said in the detail, with why, and
does not change the state; it is never reported as meeting the plan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from dr_runbooks.config import Config, FilesConfig
from dr_runbooks.errors import ConfigError, DRError
from dr_runbooks.files.catalog import FileCatalog
from dr_runbooks.files.policy import (
    PolicyAudit,
    audit,
    read_management_settings,
    read_settings,
)
from dr_runbooks.files.source import BlobAccount
from dr_runbooks.repository import Repository
from dr_runbooks.statusrow import DatabaseStatus
from dr_runbooks.text import first_line

__all__ = [
    "FILES_ROW",
    "StorageClients",
    "account_from_config",
    "file_status",
    "policy_of",
    "policy_text",
    "read_policy",
]

#: What the ``database`` column says for a file storage system.
FILES_ROW = "(files)"

#: Loads a saved file storage block by name (the tasks and the CLI pass one; the engine
#: never imports Prefect).
BlockLoader = Callable[[str], BlobAccount]

#: Builds a ``StorageManagementClient`` for (a subscription id, a site block's name or None):
#: the blocks' factory (``blocks.azure.MANAGEMENT_CLIENTS.storage``); the engine builds none.
StorageClients = Callable[[str, str | None], Any]


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


def read_policy(
    files: FilesConfig,
    management: StorageClients | None = None,
    account: BlobAccount | None = None,
    blocks: BlockLoader | None = None,
    containers: Sequence[str] | None = None,
) -> PolicyAudit:
    """The account's policy audit: through Resource Manager when ``files`` names a
    subscription and resource group and ``management`` can build a client, else (or when it
    refuses) through the blob data plane of ``account`` (default: the account dr.yaml names)
    and ``containers`` (default: dr.yaml's), saying why Resource Manager was not read. Raises
    :class:`~dr_runbooks.errors.DRError` when neither can be read."""
    if not files.in_resource_manager:
        why = "the system names no subscription_id and resource_group"
    elif management is None:
        why = "no Resource Manager client here"
    else:
        try:
            name = _named_account(files)
            if name is None:
                account = account or account_from_config(files, blocks)
                name = account.account_name
            client = management(str(files.subscription_id), files.site)
            settings = read_management_settings(client, str(files.resource_group), name)
        except DRError as exc:
            why = first_line(exc)
        else:
            return audit(settings)
    account = account or account_from_config(files, blocks)
    chosen = files.containers if containers is None else containers
    return audit(read_settings(account, chosen, management=why))


def policy_of(
    files: FilesConfig,
    blocks: BlockLoader | None = None,
    management: StorageClients | None = None,
    account: BlobAccount | None = None,
) -> tuple[PolicyAudit | None, str | None]:
    """The account's policy audit (:func:`read_policy`), or None and why it could not be
    read."""
    try:
        return read_policy(files, management, account, blocks), None
    except DRError as exc:
        return None, first_line(exc)


def _named_account(files: FilesConfig) -> str | None:
    """The account's name as dr.yaml gives it: ``account_name``, or ``account_url``'s host."""
    if files.account_name:
        return files.account_name
    if files.account_url:
        host = urlsplit(files.account_url).hostname or ""
        if ".blob." in host:  # ACCOUNT.blob.core.windows.net, a sovereign cloud's, privatelink
            return host.split(".", 1)[0]
    return None


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
    shown = policy_text(policy, policy_problem)
    if newest is None or newest.manifest is None:
        status.state = "MISSING"
        status.detail = _join("no complete file backup", shown)
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
    elif policy is not None and policy.state == "POLICY":
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
    status.detail = _join(status.detail, shown)
    return status


def policy_text(policy: PolicyAudit | None, problem: str | None) -> str:
    """The policy as a status detail or a verification result says it."""
    if policy is None:
        return f"policy not read ({problem})" if problem else ""
    if policy.state == "UNVERIFIED":
        return f"policy not fully verified: {policy.describe()}"
    return f"policy: {policy.describe()}"


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
