"""Where each protected system stands against its objectives, read from the repositories.

The state of one database of a system, in order of precedence:

- ``MISSING``: no complete backup at all;
- ``FAILED``: the most recent verification (test restore) failed;
- ``CLOCK_SKEW``: the newest backup's consistent point is in the future (the database server's
  clock is wrong): it is never chosen as "latest", and the age is measured without it;
- ``STALE``: the newest backup is older than the RPO objective;
- ``DAMAGED``: a backup's manifest cannot be read (it is unusable; the others are not);
- ``UNVERIFIED``: no backup was restored successfully within ``verification_max_age``;
- ``OK``: a fresh backup, and a recent successful test restore.

A file storage system (``engine: blob``) has one row, against the file-storage RPO, with
``POLICY`` when the storage account's own protection falls short of the plan
(:mod:`dr_runbooks.files.status`). A configuration system (``engine: git``) has one row,
``(config)``, against the configuration RPO of 0: the remote's refs against the newest bundle
(:mod:`dr_runbooks.gitconfig.status`). A Key Vault system (``engine: keyvault``) has one row,
``(secrets)``, which always says that its backups are restorable only within the same
subscription and geography (:mod:`dr_runbooks.keyvault.status`).

A system marked ``physical`` has one more row, ``(cluster)``, for its base backups and WAL: the
age of the newest archived WAL segment is the RPO achieved (``STALE`` beyond the objective:
archiving has stopped); a gap in the WAL after the oldest base backup is ``FAILED`` (recovery
cannot pass it); no base backup is ``MISSING``. Its detail is the recovery window.

Beside the systems, :func:`repository_protection` says of each repository whether its new
backups are encrypted (and to whom), and for one in Azure, whether its container's
immutability protects them; a repository in Azure that stores backups in clear is a warning.

Everything comes from the repositories themselves (manifests and verification records), so the
answer is the same from any machine, and survives the Prefect server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from dr_runbooks.config import Config, SystemConfig
from dr_runbooks.errors import DRError
from dr_runbooks.repository import Backup, Repository
from dr_runbooks.statusrow import DatabaseStatus
from dr_runbooks.text import first_line

__all__ = [
    "DatabaseStatus",
    "ManagementClients",
    "RepositoryProtection",
    "cluster_status",
    "database_status",
    "repository_protection",
    "system_status",
]


def _verified_at(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record["finished"]))
    except (KeyError, ValueError):
        return None


def database_status(
    system: str,
    engine: str,
    database: str,
    repository: Repository,
    backups: list[Backup],
    rpo: timedelta,
    verification_max_age: timedelta,
    now: datetime,
) -> DatabaseStatus:
    """The state of one database from its backups (newest first) in one repository."""
    status = DatabaseStatus(
        system=system,
        engine=engine,
        database=database,
        repository=repository.name,
        state="MISSING",
        detail="no complete backup",
        rpo_seconds=rpo.total_seconds(),
    )
    status.damaged = [b.id for b in backups if b.damaged]
    backups = [b for b in backups if not b.damaged]
    status.skewed = [b.id for b in backups if b.skewed(now)]
    if not backups:
        if status.damaged:
            status.state = "DAMAGED"
            status.detail = f"no usable backup: {', '.join(status.damaged)} damaged"
        return status
    ahead = backups[0] if backups[0].skewed(now) else None
    usable = [b for b in backups if not b.skewed(now)] or backups
    newest = usable[0]
    age = now - newest.consistent_point
    status.newest_backup, status.newest_point = newest.id, newest.consistent_point
    status.age_seconds, status.legacy = age.total_seconds(), newest.legacy
    latest_record: tuple[datetime, dict[str, Any]] | None = None
    for backup in backups:
        for record in repository.verifications(backup):
            when = _verified_at(record)
            if when is None:
                continue
            if latest_record is None or when > latest_record[0]:
                latest_record = (when, record)
            if record.get("outcome") == "ok" and (
                status.verified_at is None or when > status.verified_at
            ):
                status.verified_backup, status.verified_point = backup.id, backup.consistent_point
                status.verified_at = when
    if latest_record is not None and latest_record[1].get("outcome") != "ok":
        problems = latest_record[1].get("problems") or ["verification failed"]
        status.state = "FAILED"
        status.detail = (
            f"test restore of {latest_record[1].get('backup_id')} failed at "
            f"{latest_record[0]:%Y-%m-%d %H:%M} UTC: {problems[0]}"
        )
    elif ahead is not None:
        status.state = "CLOCK_SKEW"
        status.detail = (
            f"backup {ahead.id} is dated {ahead.consistent_point:%Y-%m-%d %H:%M} UTC, "
            f"{_hours(ahead.consistent_point - now)} in the future: is the database server's "
            "clock wrong? It is never chosen as the latest"
        )
    elif age > rpo:
        status.state = "STALE"
        status.detail = f"newest backup is {_hours(age)} old; objective {_hours(rpo)}"
    elif status.damaged:
        status.state = "DAMAGED"
        status.detail = (
            f"{len(status.damaged)} damaged backup(s), unusable: {', '.join(status.damaged)}"
        )
    elif status.verified_at is None or now - status.verified_at > verification_max_age:
        status.state = "UNVERIFIED"
        status.detail = (
            "no successful test restore"
            if status.verified_at is None
            else f"last successful test restore {_hours(now - status.verified_at)} ago"
        )
    else:
        status.state = "OK"
        status.detail = f"newest backup {_hours(age)} old; verified {status.verified_backup}"
    return status


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def cluster_status(
    system: str, repository: Repository, rpo: timedelta, now: datetime
) -> DatabaseStatus:
    """The ``(cluster)`` row of a physical system: its WAL archive and base backups."""
    from dr_runbooks.postgres.pitr import recovery_window

    status = DatabaseStatus(
        system=system,
        engine="postgres",
        database="(cluster)",
        repository=repository.name,
        state="MISSING",
        detail="no base backup",
        rpo_seconds=rpo.total_seconds(),
    )
    if not repository.store.exists():
        return status
    window = recovery_window(repository, system, precise=False)
    archived = window.newest_wal_archived
    if archived is not None:
        status.age_seconds = (now - archived).total_seconds()
    if not window.base_backups or window.earliest is None:
        if archived is not None:
            status.detail = f"WAL is archived (newest {window.newest_wal}) but no base backup"
        return status
    status.newest_backup = window.earliest_backup
    status.newest_point = window.earliest
    recoverable = f"recoverable from {window.earliest:%Y-%m-%d %H:%M:%S} UTC" + (
        f" to {archived:%Y-%m-%d %H:%M:%S} UTC" if archived else ""
    )
    if window.gap:
        status.state = "FAILED"
        status.detail = f"WAL {window.gap} is missing: recovery cannot pass it ({recoverable})"
    elif archived is None or now - archived > rpo:
        age = "none archived" if archived is None else f"newest {_hours(now - archived)} old"
        status.state = "STALE"
        status.detail = (
            f"WAL {age}; objective {_hours(rpo)}: is archive_command failing (or the server idle)?"
        )
    else:
        status.state = "OK"
        status.detail = (
            f"WAL archived {(now - archived).total_seconds():.0f} s ago (RPO achieved); "
            f"{window.base_backups} base backup(s), {recoverable}"
        )
    return status


class ManagementClients(Protocol):
    """Azure Resource Manager clients for the protection audits of the storage account and
    Key Vault systems (``blocks.azure.MANAGEMENT_CLIENTS``): one subscription each, signed in
    as the named site block says, or as the default credential with none."""

    def storage(self, subscription_id: str, site: str | None) -> Any:
        """A ``StorageManagementClient``."""

    def keyvault(self, subscription_id: str, site: str | None) -> Any:
        """A ``KeyVaultManagementClient``."""


def system_status(
    config: Config,
    name: str,
    system: SystemConfig,
    repository: Repository,
    now: datetime | None = None,
    management: ManagementClients | None = None,
) -> list[DatabaseStatus]:
    """Status of every database of ``system`` (declared, or found in the repository); of a
    file storage system (``engine: blob``), one row for its containers. ``management``
    reads the protection of a storage account or vault that dr.yaml places in Resource
    Manager (without it, only their data planes are read)."""
    now = now or datetime.now(UTC)
    if system.engine == "blob" and system.files is not None:
        from dr_runbooks.files.status import file_status, policy_of

        policy, problem = policy_of(
            system.files, management=management.storage if management else None
        )
        return [file_status(config, name, repository, policy, problem, now)]
    if system.engine == "git" and system.git is not None:
        from dr_runbooks.gitconfig.status import config_status

        return [config_status(config, name, system.git, repository, now)]
    if system.engine == "keyvault" and system.keyvault is not None:
        from dr_runbooks.keyvault.status import default_clients, protection_of, vault_status

        protection, problem = protection_of(
            system.keyvault, default_clients, management.keyvault if management else None
        )
        return [
            vault_status(config, name, repository, protection, problem, now, system.keyvault.rpo)
        ]
    rpo = config.objectives.rpo.database
    if not repository.store.exists():
        backups: list[Backup] = []
    else:
        backups = repository.backups(system.engine, name, None, include_legacy=False)
    databases = list(system.databases) or sorted({b.database for b in backups}) or ["*"]
    legacy = repository.legacy_backups(system.engine, name) if repository.store.exists() else []
    results = []
    for database in databases:
        own = [b for b in backups if b.database == database]
        # The plan's scripts wrote one database's backups without a name: they count for a
        # system with a single database.
        if len(databases) == 1:
            own = sorted(own + legacy, key=lambda b: b.consistent_point, reverse=True)
        results.append(
            database_status(
                name,
                system.engine,
                database,
                repository,
                own,
                rpo,
                config.objectives.verification_max_age,
                now,
            )
        )
    if system.physical:
        results.append(cluster_status(name, repository, rpo, now))
    return results


@dataclass
class RepositoryProtection:
    """What protects one repository's backups besides the store's own access control."""

    repository: str
    type: str
    #: The recipients new backups are encrypted to; empty: stored in clear.
    encrypted_to: list[str]
    #: The container's immutability (Azure), "none", or None where it does not apply.
    immutability: str | None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "encrypted": bool(self.encrypted_to)}


def repository_protection(name: str, kind: str, repository: Repository) -> RepositoryProtection:
    """Encryption of new backups and, for an Azure container, its immutability."""
    found = RepositoryProtection(name, kind, list(repository.encrypt_to), None)
    if kind != "azure":
        return found
    if not found.encrypted_to:
        found.warnings.append(
            "new backups are stored in clear: anyone with the storage key or a SAS token can "
            "read them (set encrypt_to)"
        )
    try:
        policy = repository.store.immutability()
    except DRError as exc:
        found.immutability = f"unknown ({first_line(exc)})"
        return found
    if policy is None:
        found.immutability = "unknown (the credentials cannot read the container's properties)"
    else:
        found.immutability = policy.describe()
    return found
