"""From names to working objects: a system's connection, a repository from ``--repo``.

The order of lookup for a repository spec: a repository declared in dr.yaml; an Azure container
URL (``https://…``, ``azure://…``); a directory path; a saved Prefect block. Only the last needs a
Prefect server, so a disaster that took the server leaves everything else working.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dr_runbooks.config import Config, RepositoryConfig, SystemConfig
from dr_runbooks.errors import ConfigError, RepositoryNotFound
from dr_runbooks.pgconn import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.secrets import register_secret
from dr_runbooks.store import LocalStore

__all__ = [
    "Target",
    "connection_for",
    "repositories_for",
    "repository_from_config",
    "repository_from_spec",
    "resolve_target",
]


def _env(name: str, purpose: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} ({purpose}) is not set")
    register_secret(value)
    return value


def repository_from_config(config: Config, name: str) -> Repository:
    """The repository called ``name`` in dr.yaml."""
    spec = config.repository(name)
    return _build(config, name, spec)


def _build(config: Config, name: str, spec: RepositoryConfig) -> Repository:
    if spec.block:
        repo = _repository_from_block(spec.block, name)
        repo.retention_days, repo.min_keep = spec.retention_days, spec.min_keep
        return repo
    if spec.type == "local":
        assert spec.path is not None
        store = LocalStore(config.resolve_path(spec.path))
        return Repository(store, name, spec.retention_days, spec.min_keep)
    from dr_runbooks.azure_store import AzureBlobStore

    assert spec.container is not None
    client = azure_container_client(
        container=spec.container,
        connection_string=_env(spec.connection_string_env, "storage connection string")
        if spec.connection_string_env
        else None,
        account_url=spec.account_url,
        sas_token=_env(spec.sas_token_env, "SAS token") if spec.sas_token_env else None,
    )
    return Repository(AzureBlobStore(client), name, spec.retention_days, spec.min_keep)


def azure_container_client(
    container: str,
    connection_string: str | None = None,
    account_url: str | None = None,
    sas_token: str | None = None,
) -> Any:
    """A ``ContainerClient`` from a connection string, an account URL with a SAS token, or an
    account URL alone (``DefaultAzureCredential``)."""
    from dr_runbooks.azure_store import container_client_from

    if sas_token:
        if not account_url:
            raise ConfigError("a SAS token needs the account URL")
        url = f"{account_url.rstrip('/')}/{container}?{sas_token.lstrip('?')}"
        return container_client_from(container_url=url)
    if connection_string:
        return container_client_from(connection_string=connection_string, container_name=container)
    return container_client_from(account_url=account_url, container_name=container)


def _repository_from_block(block_name: str, name: str) -> Repository:
    try:
        from prefect.blocks.core import Block

        block = Block.load(block_name)
    except Exception as exc:  # no server, no such block, wrong type
        raise ConfigError(
            f"cannot load repository block {block_name!r}: {str(exc).splitlines()[0]}"
        ) from None
    get = getattr(block, "get_repository", None)
    if get is None:
        raise ConfigError(f"block {block_name!r} is not a backup repository")
    repo: Repository = get(name or block_name)
    return repo


def repository_from_spec(
    spec: str, config: Config, retention_days: int = 7, min_keep: int = 3
) -> Repository:
    """``--repo``: a dr.yaml name, an Azure container URL, a directory, or a saved block name."""
    if spec in config.repositories:
        return repository_from_config(config, spec)
    if spec.startswith(("https://", "http://", "azure://")):
        from dr_runbooks.azure_store import AzureBlobStore, parse_container_url

        store = AzureBlobStore(parse_container_url(spec))
        return Repository(store, store.location, retention_days, min_keep)
    if "/" in spec or spec.startswith(".") or Path(spec).exists():
        return Repository(LocalStore(spec), spec, retention_days, min_keep)
    if "://" in spec:
        raise RepositoryNotFound(f"unsupported repository URL {spec!r}")
    return _repository_from_block(spec, spec)


def repositories_for(config: Config, system: SystemConfig) -> list[Repository]:
    if not system.repositories:
        raise ConfigError("the system names no repositories in dr.yaml")
    return [repository_from_config(config, name) for name in system.repositories]


def connection_for(system: SystemConfig) -> ConnInfo:
    """A PostgreSQL system's connection from its block, DSN variable or fields."""
    conn = system.connection
    if conn.block:
        try:
            from blocks.postgres import PostgresDatabase

            block = PostgresDatabase.load(conn.block)
            return block.conninfo()  # type: ignore[union-attr]
        except Exception as exc:
            raise ConfigError(
                f"cannot load block {conn.block!r}: {str(exc).splitlines()[0]}"
            ) from None
    info = ConnInfo.from_dsn(_env(conn.dsn_env, "database DSN")) if conn.dsn_env else ConnInfo()
    from dataclasses import replace

    from pydantic import SecretStr

    password = _env(conn.password_env, "database password") if conn.password_env else None
    return replace(
        info,
        host=conn.host or info.host,
        port=conn.port or info.port,
        user=conn.user or info.user,
        dbname=conn.dbname or info.dbname,
        sslmode=conn.sslmode or info.sslmode,
        password=SecretStr(password) if password else info.password,
    )


@dataclass
class Target:
    """A protected system resolved for one run: how to connect, which databases, where to."""

    system: str
    engine: str
    conninfo: ConnInfo
    databases: list[str]
    repositories: list[Repository]
    tier: str = "critical"
    checks_file: str | None = None
    health_url: str | None = None
    config: Config = field(default_factory=Config, repr=False)

    @property
    def primary(self) -> Repository:
        return self.repositories[0]


def connection_override(spec: str) -> ConnInfo:
    """``env:VAR`` (a DSN in an environment variable) or a saved PostgresDatabase block name."""
    if spec.startswith("env:"):
        return ConnInfo.from_dsn(_env(spec[4:], "database DSN"))
    from dr_runbooks.config import ConnectionConfig

    return connection_for(SystemConfig(engine="postgres", connection=ConnectionConfig(block=spec)))


def resolve_target(
    config: Config,
    system: str | None,
    connection: str | None = None,
    database: str | None = None,
    repositories: list[str] | None = None,
) -> Target:
    """Combine dr.yaml with run-time overrides; every problem is a :class:`ConfigError`."""
    declared = config.systems.get(system) if system else None
    if system and declared is None and connection is None:
        config.system(system)  # raises: unknown system
    if declared is None and connection is None:
        raise ConfigError("name a system from dr.yaml or give a connection (--dsn)")
    if declared is not None and declared.engine != "postgres":
        raise ConfigError(f"system {system!r} is a {declared.engine} system, not postgres")
    conninfo = connection_override(connection) if connection else connection_for(declared)  # type: ignore[arg-type]
    if database:
        databases = [database]
    elif declared is not None and declared.databases:
        databases = list(declared.databases)
    elif conninfo.dbname:
        databases = [conninfo.dbname]
    else:
        raise ConfigError("no database named (use --database, the DSN, or databases: in dr.yaml)")
    if repositories:
        repos = [repository_from_spec(spec, config) for spec in repositories]
    elif declared is not None:
        repos = repositories_for(config, declared)
    else:
        raise ConfigError(
            "no repository named (use --repo or the system's repositories in dr.yaml)"
        )
    name = system or conninfo.default_system_name()
    return Target(
        system=name,
        engine=declared.engine if declared else "postgres",
        conninfo=conninfo,
        databases=databases,
        repositories=repos,
        tier=declared.tier if declared else "critical",
        checks_file=str(config.resolve_path(declared.checks_file))
        if declared and declared.checks_file
        else None,
        health_url=declared.health_url if declared else None,
        config=config,
    )
