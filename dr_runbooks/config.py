"""``dr.yaml``: the recovery objectives, the repositories and the protected systems.

The file is kept in git next to the code (the plan's RPO for configuration is 0) and holds no
secret: a connection or a repository names a Prefect block or environment variables that hold
the credentials. ``DR_CONFIG`` points at another file; without one, the ``dr.yaml`` in the current
directory or the nearest parent is used, and with none at all the plan's defaults apply.

Durations are written ``30s``, ``15m``, ``4h``, ``7d`` or ``0``.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from dr_runbooks.errors import ConfigError

__all__ = [
    "Config",
    "ConnectionConfig",
    "Objectives",
    "RepositoryConfig",
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

    @model_validator(mode="after")
    def _check(self) -> RepositoryConfig:
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


class SystemConfig(_Strict):
    """A protected system: one database server and the databases on it we back up."""

    engine: Literal["postgres", "mongodb"]
    tier: Literal["critical", "non_critical"] = "critical"
    connection: ConnectionConfig = Field(default_factory=ConnectionConfig)
    databases: list[str] = Field(default_factory=list, description="Empty: the DSN's database")
    repositories: list[str] = Field(default_factory=list, description="Names from repositories:")
    checks_file: str | None = Field(None, description="SQL checks run after a restore")
    health_url: str | None = Field(None, description="Polled after a restore until it answers 2xx")
    verify_server_env: str | None = Field(
        None, description="Environment variable with a DSN of a server for test restores"
    )


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


class Config(_Strict):
    objectives: Objectives = Field(default_factory=Objectives)
    repositories: dict[str, RepositoryConfig] = Field(default_factory=dict)
    systems: dict[str, SystemConfig] = Field(default_factory=dict)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    #: The directory dr.yaml was read from; relative paths are resolved against it.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        for name, system in self.systems.items():
            for repo in system.repositories:
                if repo not in self.repositories:
                    raise ValueError(f"system {name!r} names unknown repository {repo!r}")
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
    file = Path(path) if path is not None else find_config()
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
