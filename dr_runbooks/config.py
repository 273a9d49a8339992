"""``dr.yaml``: the recovery objectives, the repositories and the protected systems.

The file is kept in git next to the code (the plan's RPO for configuration is 0) and holds no
secret: a connection or a repository names a Prefect block or environment variables that hold
the credentials. ``DR_CONFIG`` points at another file; without one, the ``dr.yaml`` in the current
directory or the nearest parent is used, and with none at all the plan's defaults apply.

Durations are written ``30s``, ``15m``, ``4h``, ``7d`` or ``0``.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from dr_runbooks.errors import BadInput, ConfigError

__all__ = [
    "SCENARIO_FLOWS",
    "BreachConfig",
    "Config",
    "ConnectionConfig",
    "DrillsConfig",
    "EscalationConfig",
    "EscalationLevel",
    "FilesConfig",
    "GitConfig",
    "IdentityConfig",
    "IntegrationTestConfig",
    "IntegrityCheck",
    "IntegrityConfig",
    "KeyVaultConfig",
    "MongoUserRotation",
    "Objectives",
    "PerformanceConfig",
    "RepositoryConfig",
    "RoleRotation",
    "RunsConfig",
    "SandboxConfig",
    "SandboxServer",
    "SitesConfig",
    "SystemConfig",
    "find_config",
    "load_config",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 3600, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"4h"`` → 4 hours; a bare number means hours; a timedelta passes through."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(hours=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30m, 4h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RTO(_Strict):
    critical: Duration = Field(timedelta(hours=4), description="Critical services")
    non_critical: Duration = Field(timedelta(hours=24), description="Non-critical services")
    full_system: Duration = Field(timedelta(hours=8), description="Full system")


class RPO(_Strict):
    database: Duration = Field(timedelta(hours=1), description="Databases")
    file_storage: Duration = Field(timedelta(hours=24), description="File storage")
    configuration: Duration = Field(timedelta(0), description="Configuration (in git)")


class Objectives(_Strict):
    rto: RTO = Field(default_factory=RTO)
    rpo: RPO = Field(default_factory=RPO)
    verification_max_age: Duration = Field(
        timedelta(hours=48),
        description="A system whose newest successful test restore is older than this is "
        "UNVERIFIED (the verification runs daily)",
    )

    def rto_for(self, tier: str) -> timedelta:
        return self.rto.critical if tier == "critical" else self.rto.non_critical


class IdentityConfig(_Strict):
    """Where the age identity that decrypts a repository's backups is kept (never this
    file): tried after ``DR_AGE_IDENTITY_FILE``, in this order."""

    file: str | None = Field(
        None, description="An identity file (age-keygen -o); relative to dr.yaml"
    )
    secret_block: str | None = Field(None, description="A Prefect Secret block holding it")
    key_vault_secret: str | None = Field(None, description="A Key Vault secret holding it")
    key_vault_url: str | None = Field(
        None, description="The vault of key_vault_secret (signed in with DefaultAzureCredential)"
    )
    key_vault_site: str | None = Field(
        None, description="Or an AzureSite block whose vault and credentials to use"
    )

    @model_validator(mode="after")
    def _check(self) -> IdentityConfig:
        vaults = [self.key_vault_url, self.key_vault_site]
        if self.key_vault_secret and sum(bool(v) for v in vaults) != 1:
            raise ValueError("key_vault_secret needs key_vault_url or key_vault_site (one)")
        if any(vaults) and not self.key_vault_secret:
            raise ValueError("name the secret that holds the identity (key_vault_secret)")
        if self.key_vault_url and not self.key_vault_url.startswith("https://"):
            raise ValueError("key_vault_url must be an https:// URL")
        if not (self.file or self.secret_block or self.key_vault_secret):
            raise ValueError("name a file, a secret_block or a key_vault_secret")
        return self


class RepositoryConfig(_Strict):
    """A place backups are kept: a local directory or an Azure Blob container."""

    type: Literal["local", "azure"]
    path: str | None = Field(None, description="Directory (type local); relative to dr.yaml")
    container: str | None = Field(None, description="Container name (type azure)")
    account_url: str | None = Field(
        None, description="https://ACCOUNT.blob.core.windows.net (uses DefaultAzureCredential)"
    )
    connection_string_env: str | None = Field(
        None, description="Environment variable holding a storage connection string"
    )
    sas_token_env: str | None = Field(None, description="Environment variable holding a SAS token")
    block: str | None = Field(None, description="A saved Prefect block with the credentials")
    retention_days: int = Field(7, ge=0, description="Delete backups older than this")
    min_keep: int = Field(3, ge=1, description="Never keep fewer complete backups than this")
    encrypt_to: list[str] = Field(
        default_factory=list,
        description="age recipients (age1…, public keys) new backups are encrypted to; "
        "several, so a key kept offline can decrypt them too",
    )
    identity: IdentityConfig | None = Field(
        None, description="Where the identity that decrypts them is kept (restores)"
    )

    @model_validator(mode="after")
    def _check(self) -> RepositoryConfig:
        from dr_runbooks.crypto import parse_recipients

        try:
            parse_recipients(self.encrypt_to)
        except BadInput as exc:
            raise ValueError(str(exc)) from None
        if self.type == "local" and not self.path:
            raise ValueError("a local repository needs a path")
        if self.type == "azure":
            if not self.container and not self.block:
                raise ValueError("an azure repository needs a container (or a block)")
            sources = [self.account_url and not self.sas_token_env, self.connection_string_env]
            if sum(bool(s) for s in sources) > 1:
                raise ValueError("give either connection_string_env or account_url, not both")
        return self


class ConnectionConfig(_Strict):
    """How to reach a database; secrets come from a block or the environment, never this file."""

    block: str | None = Field(None, description="A saved PostgresDatabase/MongoDatabase block")
    dsn_env: str | None = Field(None, description="Environment variable holding a DSN or URI")
    host: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None
    sslmode: str | None = None
    password_env: str | None = Field(None, description="Environment variable holding a password")

    @model_validator(mode="after")
    def _check(self) -> ConnectionConfig:
        if self.block and self.dsn_env:
            raise ValueError("give either block or dsn_env, not both")
        return self


class SitesConfig(_Strict):
    """Where a system runs on Azure: the ``DR Azure Site`` blocks of its primary and DR
    regions, and how its database reaches the DR region (region failover and failback)."""

    primary: str = Field(description="AzureSite block of the primary region")
    dr: str = Field(description="AzureSite block of the DR region")
    database: Literal["flexible-server", "repository", "none"] = Field(
        "flexible-server",
        description="flexible-server: restore the site's flexible server from its backups "
        "(geo-restore across regions); repository: the restore runbook from a repository the "
        "DR region can read into dr_connection; none: the database is not moved",
    )
    dr_connection: str | None = Field(
        None, description="repository: the DR region's PostgreSQL, a block name or env:VAR"
    )
    dr_repository: str | None = Field(
        None,
        description="repository: where the DR region reads backups (a dr.yaml name, a "
        "container URL such as the account's -secondary endpoint, a block); default: the "
        "system's first repository",
    )
    records: str | None = Field(
        None,
        description="Repository for the runbooks' durable records (default: the system's "
        "first); pick one both regions can reach",
    )

    @model_validator(mode="after")
    def _check(self) -> SitesConfig:
        if self.primary == self.dr:
            raise ValueError("the primary and the DR site must be different blocks")
        if self.database == "repository" and not self.dr_connection:
            raise ValueError("database: repository needs dr_connection (the DR region's server)")
        return self


class _Rotated(_Strict):
    key_vault_secret: str | None = Field(
        None, description="Key Vault secret (in the site's vault) that holds the password"
    )
    block: str | None = Field(
        None, description="Connection block whose password is replaced by the new one"
    )

    @model_validator(mode="after")
    def _kept_somewhere(self) -> _Rotated:
        if not self.key_vault_secret and not self.block:
            raise ValueError(
                "name key_vault_secret or block: the new password must be kept somewhere "
                "before the old one stops working"
            )
        return self


class RoleRotation(_Rotated):
    """A PostgreSQL role whose password the breach runbook replaces."""

    role: str = Field(description="The role (ALTER ROLE … PASSWORD)")


class MongoUserRotation(_Rotated):
    """A MongoDB user whose password the breach runbook replaces (updateUser)."""

    user: str = Field(description="The user")
    database: str = Field("admin", description="The database the user is defined in")


class BreachConfig(_Strict):
    """What the security-breach runbook isolates, preserves, checks and rotates."""

    site: Literal["primary", "dr"] = Field(
        "primary", description="The site under attack (its NSGs and Key Vault)"
    )
    network_security_groups: list[str] = Field(
        default_factory=list, description="NSGs to isolate (default: the site's)"
    )
    stop_command: list[str] | None = Field(
        None, description="Stops the services, e.g. [docker-compose, down]"
    )
    start_command: list[str] | None = Field(
        None, description="Starts them again, e.g. [docker-compose, up, -d]"
    )
    command_dir: str | None = Field(None, description="Directory the commands run in")
    command_timeout: Duration = Field(timedelta(minutes=10), description="Per command")
    evidence_paths: list[str] = Field(
        default_factory=list, description="Log and data paths archived as evidence"
    )
    evidence_repository: str | None = Field(
        None,
        description="Where evidence goes: a dr.yaml repository, a container URL or a block "
        "(an Azure container with version-level immutability gets a legal hold)",
    )
    config_repository: str | None = Field(
        None, description="git checkout of the configuration, assessed for changes"
    )
    known_good: str | None = Field(None, description="Last known-good commit or tag")
    postgres_roles: list[RoleRotation] = Field(default_factory=list)
    mongodb_users: list[MongoUserRotation] = Field(default_factory=list)
    key_vault_secrets: list[str] = Field(
        default_factory=list, description="Other Key Vault secrets that get a new value"
    )

    @model_validator(mode="after")
    def _check(self) -> BreachConfig:
        if self.evidence_paths and not self.evidence_repository:
            raise ValueError("evidence_paths need an evidence_repository")
        if self.known_good and not self.config_repository:
            raise ValueError("known_good needs the config_repository it is a commit of")
        for command in (self.stop_command, self.start_command):
            if command is not None and not command:
                raise ValueError("a command must not be empty")
        return self


class IntegrityCheck(_Strict):
    """One rule the data must keep: a query returning the rows that break it (none: it holds)."""

    name: str = Field(min_length=1, description="What the check is called in reports")
    sql: str = Field(min_length=1, description="A SELECT returning the violating rows")
    table: str | None = Field(
        None,
        description="The table the violating rows belong to (table or schema.table): selective "
        "repair copies its missing and changed rows back",
    )
    timestamp_column: str | None = Field(
        None,
        description="A column of the query's result holding when each row was written: the "
        "earliest proposes when the corruption began",
    )


class IntegrityConfig(_Strict):
    """What the data-corruption runbook checks (docs/data-corruption.md). Files are relative
    to dr.yaml."""

    checks: list[IntegrityCheck] = Field(default_factory=list)
    checks_file: str | None = Field(
        None,
        description="The plan's check-integrity.sql: each query is a check; `-- name:`, "
        "`-- table:` and `-- timestamp:` comment lines just above a query describe it",
    )
    validation: list[str] = Field(
        default_factory=list,
        description="Queries that must return no rows on the restored copy (the checks must "
        "pass there too)",
    )
    validation_file: str | None = Field(
        None, description="The plan's validate-data.sql: each query must return no rows"
    )
    tables: list[str] = Field(
        default_factory=list,
        description="Tables selective repair copies back (default: those the failing checks name)",
    )

    @model_validator(mode="after")
    def _check(self) -> IntegrityConfig:
        if not self.checks and not self.checks_file:
            raise ValueError("integrity needs checks or a checks_file")
        names = [check.name for check in self.checks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"integrity checks must have different names: {repeated[0]!r}")
        return self


_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
_STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_VAULT = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")


class _InResourceManager(_Strict):
    """Where a resource is in Azure Resource Manager, for the audit of its own protection
    through the management plane (read only: the identity needs the Reader role on it)."""

    subscription_id: str | None = Field(
        None,
        description="Subscription of the resource, for reading its protection through Azure "
        "Resource Manager (with resource_group; without them only the data plane is read)",
    )
    resource_group: str | None = Field(None, description="Resource group of the resource")
    site: str | None = Field(
        None,
        description="A saved DR Azure Site block whose credentials, Resource Manager endpoint "
        "and CA bundle sign in to the management plane (default: DefaultAzureCredential on "
        "the public cloud)",
    )

    @model_validator(mode="after")
    def _check_location(self) -> _InResourceManager:
        if bool(self.subscription_id) != bool(self.resource_group):
            raise ValueError("subscription_id and resource_group go together")
        if self.subscription_id and not _GUID.match(self.subscription_id):
            raise ValueError(f"{self.subscription_id!r} is not a subscription id (a GUID)")
        if self.resource_group and not _RESOURCE_GROUP.match(self.resource_group):
            raise ValueError(f"{self.resource_group!r} is not a resource group name")
        return self

    @property
    def in_resource_manager(self) -> bool:
        """Whether the management plane can be asked (a subscription and group are named)."""
        return bool(self.subscription_id and self.resource_group)


class FilesConfig(_InResourceManager):
    """A storage account holding application files (``engine: blob``) and the containers
    backed up; exactly one way in, never a secret."""

    account_url: str | None = Field(
        None, description="https://ACCOUNT.blob.core.windows.net (uses DefaultAzureCredential)"
    )
    connection_string_env: str | None = Field(
        None, description="Environment variable holding the account's connection string"
    )
    block: str | None = Field(None, description="A saved DR Azure File Storage block")
    containers: list[str] = Field(min_length=1, description="The containers backed up")
    account_name: str | None = Field(
        None,
        description="The storage account's name in Resource Manager (default: from "
        "account_url's host, or the account the connection string or block names)",
    )

    @model_validator(mode="after")
    def _one_way_in(self) -> FilesConfig:
        given = [v for v in (self.account_url, self.connection_string_env, self.block) if v]
        if len(given) != 1:
            raise ValueError("files: give exactly one of account_url, connection_string_env, block")
        if self.account_name and not _STORAGE_ACCOUNT.match(self.account_name):
            raise ValueError(
                f"{self.account_name!r} is not a storage account name (3-24 lowercase letters "
                "and digits)"
            )
        return self


class GitConfig(_Strict):
    """A git repository holding configuration (``engine: git``); its credential, when it needs
    one, comes from an environment variable, never from dr.yaml."""

    url: str = Field(description="The repository: an https:// or ssh URL, or a local path")
    refs: list[str] = Field(
        default_factory=lambda: ["refs/heads/*", "refs/tags/*"],
        min_length=1,
        description="The refs backed up (glob patterns)",
    )
    username: str | None = Field(None, description="The user name the credential goes with")
    password_env: str | None = Field(
        None, description="Environment variable holding the password or access token"
    )

    @model_validator(mode="after")
    def _check_refs(self) -> GitConfig:
        bad = [ref for ref in self.refs if not ref.startswith("refs/")]
        if bad:
            raise ValueError(f"git: refs are patterns under refs/, not {bad[0]!r}")
        return self


class KeyVaultConfig(_InResourceManager):
    """A Key Vault whose secrets are backed up (``engine: keyvault``) with Key Vault's own
    backup, restorable only within the same subscription and geography."""

    vault_url: str = Field(description="https://VAULT.vault.azure.net (DefaultAzureCredential)")
    secrets: list[str] = Field(
        default_factory=list, description="The secrets backed up (default: every secret)"
    )
    rpo: Duration = Field(
        timedelta(hours=24), description="A newer backup than this is expected (daily backups)"
    )
    vault_name: str | None = Field(
        None,
        description="The vault's name in Resource Manager (default: the first label of "
        "vault_url's host)",
    )

    @model_validator(mode="after")
    def _check_vault(self) -> KeyVaultConfig:
        if self.vault_name and not _VAULT.match(self.vault_name):
            raise ValueError(
                f"{self.vault_name!r} is not a vault name (3-24 letters, digits and hyphens)"
            )
        return self


class SystemConfig(_Strict):
    """A protected system: one database server and the databases on it we back up, or
    (``engine: blob``) a storage account's containers, or (``engine: git``) a repository
    holding configuration, or (``engine: keyvault``) a Key Vault's secrets."""

    engine: Literal["postgres", "mongodb", "blob", "git", "keyvault"]
    tier: Literal["critical", "non_critical"] = "critical"
    connection: ConnectionConfig = Field(default_factory=ConnectionConfig)
    databases: list[str] = Field(default_factory=list, description="Empty: the DSN's database")
    repositories: list[str] = Field(default_factory=list, description="Names from repositories:")
    checks_file: str | None = Field(None, description="SQL checks run after a restore")
    physical: bool = Field(
        False,
        description="PostgreSQL with WAL archiving: base backups (daily full, hourly "
        "incremental) replace the hourly logical dump; recovery to any second",
    )
    health_url: str | None = Field(None, description="Polled after a restore until it answers 2xx")
    verify_server_env: str | None = Field(
        None, description="Environment variable with a DSN of a server for test restores"
    )
    sites: SitesConfig | None = Field(
        None, description="The system's Azure sites (region failover and failback)"
    )
    breach: BreachConfig | None = Field(None, description="The security-breach runbook")
    integrity: IntegrityConfig | None = Field(
        None, description="The data-corruption runbook's integrity checks"
    )
    files: FilesConfig | None = Field(
        None, description="The storage account and its containers (engine: blob)"
    )
    git: GitConfig | None = Field(
        None, description="The repository holding the configuration (engine: git)"
    )
    keyvault: KeyVaultConfig | None = Field(
        None, description="The vault whose secrets are backed up (engine: keyvault)"
    )

    @model_validator(mode="after")
    def _check_azure(self) -> SystemConfig:
        if (self.engine == "blob") != (self.files is not None):
            raise ValueError("engine: blob goes with files: (the account and its containers)")
        if (self.engine == "git") != (self.git is not None):
            raise ValueError("engine: git goes with git: (the repository and its refs)")
        if (self.engine == "keyvault") != (self.keyvault is not None):
            raise ValueError("engine: keyvault goes with keyvault: (the vault and its secrets)")
        if self.physical and self.engine != "postgres":
            raise ValueError("physical is for a postgres system (WAL archiving, base backups)")
        if self.breach is not None and self.sites is None:
            raise ValueError("breach needs sites: (the NSGs and the Key Vault are a site's)")
        if self.breach and self.breach.mongodb_users and self.engine != "mongodb":
            raise ValueError("mongodb_users are for a mongodb system")
        if self.breach and self.breach.postgres_roles and self.engine != "postgres":
            raise ValueError("postgres_roles are for a postgres system")
        return self


class NotificationsConfig(_Strict):
    """Where failures are reported: a saved Prefect notification block (Slack, Microsoft Teams,
    a custom webhook, email…), chosen by name."""

    block: str | None = Field(
        None,
        description="A saved Prefect notification block as TYPE/NAME, e.g. "
        "slack-webhook/oncall, ms-teams-webhook/dr, custom-webhook/pager",
    )
    link_base: str | None = Field(
        None, description="Prefect UI base URL for run links (default: the API's UI URL)"
    )


class SandboxServer(_Strict):
    """A server drills and recovery tests restore into: a separate server, or a name prefix on
    a server that is not production's."""

    connection: ConnectionConfig = Field(
        description="A saved connection block (block) or an environment variable with its DSN "
        "or URI (dsn_env); never a production server without a prefix"
    )
    prefix: str = Field(
        "",
        description="Put before every database name restored there (e.g. drill_), for a server "
        "shared with other databases",
    )

    @model_validator(mode="after")
    def _check(self) -> SandboxServer:
        if not (self.connection.block or self.connection.dsn_env):
            raise ValueError("a sandbox connection names a block or a dsn_env")
        if self.prefix and not re.fullmatch(r"[a-z_][a-z0-9_]*", self.prefix):
            raise ValueError(
                f"sandbox prefix {self.prefix!r}: use lower-case letters, digits and _ "
                "(a database name's start)"
            )
        return self


class SandboxConfig(_Strict):
    """Where the monthly drill and the quarterly recovery test restore (docs/drills.md)."""

    target: Literal["sandbox", "production"] = Field(
        "sandbox",
        description="sandbox: restore into the servers below, never touching production; "
        "production: the plan's literal drill on the production servers, run only after an "
        "approval in the Prefect UI",
    )
    postgres: SandboxServer | None = Field(None, description="The PostgreSQL sandbox")
    mongodb: SandboxServer | None = Field(None, description="The MongoDB sandbox")
    health_urls: list[str] = Field(
        default_factory=list, description="Polled after the recovery until each answers 2xx"
    )

    @model_validator(mode="after")
    def _check(self) -> SandboxConfig:
        if self.target == "sandbox" and self.postgres is None and self.mongodb is None:
            raise ValueError(
                "a sandbox needs a postgres or a mongodb server (or target: production)"
            )
        return self


class IntegrationTestConfig(_Strict):
    """The plan's ``npm run test:integration``, run against the recovered sandbox."""

    command: list[str] = Field(
        min_length=1, description="The command and its arguments, e.g. [npm, run, test:integration]"
    )
    dir: str | None = Field(None, description="Directory it runs in (relative to dr.yaml)")
    timeout: Duration = Field(timedelta(minutes=15), description="Stopped and failed after this")


class PerformanceConfig(_Strict):
    """The quarterly test's performance check on the restored databases."""

    queries_file: str | None = Field(
        None,
        description="SQL file of the queries to time (pgbench script syntax, relative to "
        "dr.yaml); default: pgbench --select-only on a scratch database",
    )
    duration: Duration = Field(timedelta(seconds=30), description="How long pgbench runs")
    max_regression: float = Field(
        0.25,
        ge=0,
        description="Flag a throughput more than this fraction below the previous quarter's",
    )


class DrillsConfig(_Strict):
    """The monthly drill and the quarterly full recovery test."""

    systems: list[str] = Field(
        default_factory=list,
        description="Systems the monthly drill recovers (default: every PostgreSQL system)",
    )
    announce: str | None = Field(
        None,
        description="Notification block (TYPE/NAME) for the drill's announcement (default: "
        "notifications.block)",
    )
    expected_duration: Duration = Field(timedelta(hours=1), description="Said in the announcement")
    markers: int = Field(5, ge=1, le=1000, description="Marker rows written after the backup")
    integration_test: IntegrationTestConfig | None = None
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    slow_step: float = Field(
        1.5,
        gt=1,
        description="The review calls a step slow when it took this many times its median in "
        "the previous drills",
    )


class EscalationLevel(_Strict):
    """One step of the plan's escalation path."""

    after: Duration = Field(description="How long after the run started (0: at once)")
    who: str = Field(description="Who is called, e.g. Senior engineer")
    block: str | None = Field(
        None, description="Notification block (TYPE/NAME); default: notifications.block"
    )


def _plan_levels() -> list[EscalationLevel]:
    return [
        EscalationLevel(after=timedelta(0), who="On-call engineer"),
        EscalationLevel(after=timedelta(minutes=30), who="Senior engineer"),
        EscalationLevel(after=timedelta(hours=1), who="Engineering manager"),
        EscalationLevel(after=timedelta(hours=2), who="CTO"),
    ]


#: The scenario runbooks the escalation path follows by default.
SCENARIO_FLOWS = [
    "database-failure",
    "database-failure-mongodb",
    "region-failover",
    "region-failback",
    "security-breach",
    "data-corruption",
    "file-storage-failure",
]


class EscalationConfig(_Strict):
    """The plan's escalation path while a scenario runs (``dr escalation apply``)."""

    levels: list[EscalationLevel] = Field(default_factory=_plan_levels, min_length=1)
    flows: list[str] = Field(
        default_factory=lambda: list(SCENARIO_FLOWS),
        min_length=1,
        description="Flow names whose runs are escalated",
    )

    @model_validator(mode="after")
    def _check(self) -> EscalationConfig:
        times = [level.after for level in self.levels]
        if times[0] != timedelta(0):
            raise ValueError("the first escalation level is called at once: after: 0")
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("escalation levels must come later one after another")
        if any(t < timedelta(seconds=10) for t in times[1:]):
            raise ValueError("a later escalation level comes at least 10s after the start")
        return self


class RunsConfig(_Strict):
    """Where every scenario run and drill keeps its durable record."""

    repository: str | None = Field(
        None,
        description="A repository of this file, a directory or a container URL (default: the "
        "run's system's first repository)",
    )


class Config(_Strict):
    objectives: Objectives = Field(default_factory=Objectives)
    repositories: dict[str, RepositoryConfig] = Field(default_factory=dict)
    systems: dict[str, SystemConfig] = Field(default_factory=dict)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    sandbox: SandboxConfig | None = Field(None, description="Where drills restore")
    drills: DrillsConfig = Field(default_factory=DrillsConfig)
    escalation: EscalationConfig | None = Field(None, description="The escalation path")
    runs: RunsConfig = Field(default_factory=RunsConfig)
    #: The directory dr.yaml was read from; relative paths are resolved against it.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        for name, system in self.systems.items():
            for repo in system.repositories:
                if repo not in self.repositories:
                    raise ValueError(f"system {name!r} names unknown repository {repo!r}")
        return self

    @model_validator(mode="after")
    def _check_drills(self) -> Config:
        for name in self.drills.systems:
            if name not in self.systems:
                raise ValueError(f"drills name unknown system {name!r}")
        if self.escalation is not None and not self.notifications.block:
            for level in self.escalation.levels:
                if not level.block:
                    raise ValueError(
                        f"escalation level {level.who!r} names no block, and there is no "
                        "notifications.block to use instead"
                    )
        return self

    def system(self, name: str) -> SystemConfig:
        try:
            return self.systems[name]
        except KeyError:
            known = ", ".join(sorted(self.systems)) or "none"
            raise ConfigError(f"unknown system {name!r} (dr.yaml declares: {known})") from None

    def repository(self, name: str) -> RepositoryConfig:
        try:
            return self.repositories[name]
        except KeyError:
            known = ", ".join(sorted(self.repositories)) or "none"
            raise ConfigError(f"unknown repository {name!r} (dr.yaml declares: {known})") from None

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def find_config(start: Path | None = None) -> Path | None:
    """``$DR_CONFIG``, else the nearest ``dr.yaml`` from ``start`` upwards."""
    override = os.environ.get("DR_CONFIG")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ConfigError(f"DR_CONFIG names {path}, which does not exist")
        return path
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "dr.yaml"
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | str | None = None) -> Config:
    """Read and validate dr.yaml; a problem becomes one :class:`ConfigError` line."""
    file = Path(path) if path else find_config()  # "" from a flow's form: the default
    if file is None:
        return Config()
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {file}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level")
    try:
        return Config(**raw, base_dir=file.resolve().parent)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{file}: {where}: {first['msg']}") from None
