"""From names to working objects: a protected system resolved for one run, a repository from
``--repo``.

One :class:`Target` serves both engines; :func:`resolve_target` combines dr.yaml with a run's
overrides and dispatches on the engine only where the engines differ (how a connection is
parsed, whether databases may be listed on the server).

The order of lookup for a repository spec: a repository declared in dr.yaml; an Azure container
URL (``https://…``, ``azure://…``); a directory path; a saved Prefect block. Blocks are not this
package's business (it imports no Prefect): a caller that allows them passes a
:class:`BlockSource` (``blocks.PREFECT_BLOCKS``). Only blocks need a Prefect server, so a
disaster that took the server leaves everything else working.

Encryption. A repository's ``encrypt_to`` (dr.yaml, plus a run's ``--encrypt-to``) says to whom
its new backups are encrypted, and its ``identity`` where the identity that decrypts them is
kept (read through a :class:`~dr_runbooks.crypto.SecretReader` the caller passes, for Prefect
Secret blocks and Key Vault). A backup is encrypted once, as it is written to the run's first
repository, and copied as stored: when the first repository encrypts, it encrypts to every
recipient any of the run's repositories names, so each can decrypt its copy; when only a later
repository encrypts, the copy is encrypted on the way (:func:`~dr_runbooks.repository.copy_backup`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from dr_runbooks import crypto
from dr_runbooks.config import Config, IdentityConfig, RepositoryConfig, SystemConfig
from dr_runbooks.errors import ConfigError, RepositoryNotFound
from dr_runbooks.mongo.connection import SYSTEM_DATABASES, MongoConnInfo, check_database_name
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.redaction import register_secret
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore

__all__ = [
    "BlockSource",
    "Connection",
    "Engine",
    "Target",
    "azure_container_client",
    "connection_from_spec",
    "keyring_for",
    "repositories_for",
    "repository_from_config",
    "repository_from_spec",
    "resolve_target",
    "share_recipients",
    "verify_server_for",
]

#: ``blob`` is a storage account's files (:mod:`dr_runbooks.files`), ``git`` a repository of
#: configuration (:mod:`dr_runbooks.gitconfig`), ``keyvault`` a vault's secrets
#: (:mod:`dr_runbooks.keyvault`): they have no connection, and the database
#: runbooks refuse them (:func:`resolve_target`).
Engine = Literal["postgres", "mongodb", "blob", "git", "keyvault"]
#: A connection of either engine; ``Target.engine`` says which.
Connection = ConnInfo | MongoConnInfo


class BlockSource(Protocol):
    """Saved configuration blocks, for callers that may use them (see ``blocks``)."""

    def connection(self, name: str, engine: str) -> tuple[Connection, list[str]]:
        """The connection a block holds, and the databases it names (may be empty)."""

    def repository(self, name: str, label: str) -> Repository:
        """The backup repository a block describes, called ``label`` in messages."""


def _no_blocks(name: str) -> ConfigError:
    return ConfigError(f"{name!r} names a saved block, and blocks are not available here")


def _env(name: str, purpose: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} ({purpose}) is not set")
    register_secret(value)
    return value


# -- repositories ---------------------------------------------------------------------------------


def keyring_for(
    config: Config, identity: IdentityConfig | None, secrets: crypto.SecretReader | None
) -> crypto.Keyring:
    """The identity sources of a repository: ``DR_AGE_IDENTITY_FILE`` (always first), then
    what its ``identity:`` names."""
    if identity is None:
        return crypto.Keyring()
    sources: list[crypto.IdentitySource] = []
    if identity.file:
        sources.append(crypto.FileIdentity(str(config.resolve_path(identity.file))))
    if identity.secret_block:
        sources.append(crypto.SecretIdentity("prefect", identity.secret_block, secrets))
    if identity.key_vault_secret:
        sources.append(
            crypto.SecretIdentity(
                "key-vault",
                identity.key_vault_secret,
                secrets,
                vault_url=identity.key_vault_url,
                site=identity.key_vault_site,
            )
        )
    return crypto.Keyring(sources)


def repository_from_config(
    config: Config,
    name: str,
    blocks: BlockSource | None = None,
    secrets: crypto.SecretReader | None = None,
) -> Repository:
    """The repository called ``name`` in dr.yaml, with its encryption and identity sources."""
    spec = config.repository(name)
    if spec.block:
        if blocks is None:
            raise _no_blocks(spec.block)
        repo = blocks.repository(spec.block, name)
        repo.retention_days, repo.min_keep = spec.retention_days, spec.min_keep
    elif spec.type == "local":
        assert spec.path is not None
        store = LocalStore(config.resolve_path(spec.path))
        repo = Repository(store, name, spec.retention_days, spec.min_keep)
    else:
        repo = Repository(_azure_store(spec), name, spec.retention_days, spec.min_keep)
    repo.encrypt_to = crypto.parse_recipients(spec.encrypt_to, f"{name}: encrypt_to")
    repo.keyring = keyring_for(config, spec.identity, secrets)
    return repo


def _azure_store(spec: RepositoryConfig) -> Any:
    from dr_runbooks.storage.azure import AzureBlobStore

    assert spec.container is not None
    client = azure_container_client(
        container=spec.container,
        connection_string=_env(spec.connection_string_env, "storage connection string")
        if spec.connection_string_env
        else None,
        account_url=spec.account_url,
        sas_token=_env(spec.sas_token_env, "SAS token") if spec.sas_token_env else None,
    )
    return AzureBlobStore(client)


def azure_container_client(
    container: str,
    connection_string: str | None = None,
    account_url: str | None = None,
    sas_token: str | None = None,
) -> Any:
    """A ``ContainerClient`` from a connection string, an account URL with a SAS token, or an
    account URL alone (``DefaultAzureCredential``)."""
    from dr_runbooks.storage.azure import container_client_from

    if sas_token:
        if not account_url:
            raise ConfigError("a SAS token needs the account URL")
        url = f"{account_url.rstrip('/')}/{container}?{sas_token.lstrip('?')}"
        return container_client_from(container_url=url)
    if connection_string:
        return container_client_from(connection_string=connection_string, container_name=container)
    return container_client_from(account_url=account_url, container_name=container)


def repository_from_spec(
    spec: str,
    config: Config,
    blocks: BlockSource | None = None,
    retention_days: int = 7,
    min_keep: int = 3,
    secrets: crypto.SecretReader | None = None,
) -> Repository:
    """``--repo``: a dr.yaml name, an Azure container URL, a directory, a saved block name, or
    ``env:VAR``, an environment variable holding one of those (how a URL with a SAS token
    reaches a flow without being stored with its parameters)."""
    if spec.startswith("env:"):
        return repository_from_spec(
            _env(spec[4:], "repository"), config, blocks, retention_days, min_keep, secrets
        )
    if spec in config.repositories:
        return repository_from_config(config, spec, blocks, secrets)
    if spec.startswith(("https://", "http://", "azure://")):
        from dr_runbooks.storage.azure import AzureBlobStore, parse_container_url

        store = AzureBlobStore(parse_container_url(spec))
        return Repository(store, store.location, retention_days, min_keep)
    if "/" in spec or spec.startswith(".") or Path(spec).exists():
        return Repository(LocalStore(spec), spec, retention_days, min_keep)
    if "://" in spec:
        raise RepositoryNotFound(f"unsupported repository URL {spec!r}")
    if blocks is None:
        raise _no_blocks(spec)
    return blocks.repository(spec, spec)


def repositories_for(
    config: Config,
    system: SystemConfig,
    blocks: BlockSource | None = None,
    secrets: crypto.SecretReader | None = None,
) -> list[Repository]:
    if not system.repositories:
        raise ConfigError("the system names no repositories in dr.yaml")
    return [repository_from_config(config, name, blocks, secrets) for name in system.repositories]


def share_recipients(repositories: list[Repository], encrypt_to: list[str] | None = None) -> None:
    """A run's ``--encrypt-to`` added to each of its repositories; and when the first
    repository (which receives the backup) encrypts, it encrypts to every recipient the others
    name too, since the copies are made of what it stores."""
    extra = crypto.parse_recipients(encrypt_to or [], "--encrypt-to")
    for repository in repositories:
        repository.encrypt_to = crypto.parse_recipients([*repository.encrypt_to, *extra])
    if repositories and repositories[0].encrypt_to:
        everyone = [r for repository in repositories for r in repository.encrypt_to]
        repositories[0].encrypt_to = crypto.parse_recipients(everyone)


# -- connections ----------------------------------------------------------------------------------


def connection_from_spec(
    spec: str, engine: str, blocks: BlockSource | None = None
) -> tuple[Connection, list[str]]:
    """``env:VAR`` (a DSN or URI in an environment variable) or a saved block's name; with the
    databases a block names."""
    if spec.startswith("env:"):
        value = _env(spec[4:], "MongoDB URI" if engine == "mongodb" else "database DSN")
        parsed: Connection = (
            MongoConnInfo.from_uri(value) if engine == "mongodb" else ConnInfo.from_dsn(value)
        )
        return parsed, []
    if blocks is None:
        raise _no_blocks(spec)
    return blocks.connection(spec, engine)


def _declared_connection(
    system: SystemConfig, blocks: BlockSource | None
) -> tuple[Connection, list[str]]:
    """A declared system's connection from its block, DSN/URI variable or fields."""
    conn = system.connection
    if conn.block:
        if blocks is None:
            raise _no_blocks(conn.block)
        return blocks.connection(conn.block, system.engine)
    password = _env(conn.password_env, "database password") if conn.password_env else None
    secret = SecretStr(password) if password else None
    if system.engine == "mongodb":
        uri = _env(conn.dsn_env, "MongoDB URI") if conn.dsn_env else None
        mongo = MongoConnInfo.from_uri(uri) if uri else MongoConnInfo()
        if conn.host:
            mongo = replace(mongo, hosts=(conn.host + (f":{conn.port}" if conn.port else ""),))
        tls = mongo.tls or (conn.sslmode or "disable") not in ("disable", "allow", "prefer")
        return replace(
            mongo,
            user=conn.user or mongo.user,
            password=secret or mongo.password,
            database=conn.dbname or mongo.database,
            tls=tls,
        ), []
    info = ConnInfo.from_dsn(_env(conn.dsn_env, "database DSN")) if conn.dsn_env else ConnInfo()
    return replace(
        info,
        host=conn.host or info.host,
        port=conn.port or info.port,
        user=conn.user or info.user,
        dbname=conn.dbname or info.dbname,
        sslmode=conn.sslmode or info.sslmode,
        password=secret or info.password,
    ), []


# -- targets --------------------------------------------------------------------------------------


@dataclass
class Target:
    """A protected system resolved for one run: how to connect, which databases, where to.

    For MongoDB an empty ``databases`` means every database on the server except admin, local
    and config, listed when the run starts.
    """

    system: str
    engine: Engine
    conninfo: Any  # ConnInfo for postgres, MongoConnInfo for mongodb
    databases: list[str]
    repositories: list[Repository]
    tier: str = "critical"
    checks_file: str | None = None
    health_url: str | None = None
    verify_server_env: str | None = None
    #: WAL archived, base backups taken (dr.yaml's ``physical: true``).
    physical: bool = False
    #: Whether the system is declared in dr.yaml (else an ad-hoc run named it).
    declared: bool = False
    config: Config = field(default_factory=Config, repr=False)

    @property
    def primary(self) -> Repository:
        return self.repositories[0]


def _databases(
    engine: str,
    database: str | None,
    declared: SystemConfig | None,
    block_databases: list[str],
    conninfo: Connection,
) -> list[str]:
    if database:
        names = [database]
    elif declared is not None and declared.databases:
        names = list(declared.databases)
    elif block_databases:
        names = block_databases
    elif engine == "mongodb":
        default = conninfo.database  # type: ignore[union-attr]
        names = [default] if default and default not in SYSTEM_DATABASES else []
    elif conninfo.dbname:  # type: ignore[union-attr]
        names = [conninfo.dbname]  # type: ignore[union-attr]
    else:
        raise ConfigError("no database named (use --database, the DSN, or databases: in dr.yaml)")
    if engine == "mongodb":
        for name in names:
            check_database_name(name)
            if name in SYSTEM_DATABASES:
                raise ConfigError(f"{name} is a system database; it is not backed up or restored")
    return names


def _ad_hoc(config: Config, connection: str | None, repositories: list[str] | None) -> bool:
    """An ad-hoc run: its own connection and only repositories dr.yaml does not declare, where
    ``--system`` just names the folder. With a declared repository, the system must be
    declared too (a typo would file backups where no listing or status looks)."""
    return (
        connection is not None
        and bool(repositories)
        and not any(spec in config.repositories for spec in repositories or [])
    )


def resolve_target(
    config: Config,
    engine: str | None,
    system: str | None,
    connection: str | None = None,
    database: str | None = None,
    repositories: list[str] | None = None,
    blocks: BlockSource | None = None,
    secrets: crypto.SecretReader | None = None,
    encrypt_to: list[str] | None = None,
) -> Target:
    """Combine dr.yaml with run-time overrides; every problem is a :class:`ConfigError`.

    ``engine`` is what the caller works with (None: the declared system's); ``connection`` an
    override as ``env:VAR`` or a block name; ``repositories`` overrides as ``--repo`` specs;
    ``encrypt_to`` recipients added to every repository's (see :func:`share_recipients`).
    """
    declared = config.systems.get(system) if system else None
    if system and declared is None and not _ad_hoc(config, connection, repositories):
        config.system(system)  # raises: unknown system, naming the declared ones
    engine = engine or (declared.engine if declared else None)
    if engine == "blob" or (declared is not None and declared.engine == "blob"):
        raise ConfigError(
            f"system {system!r} is file storage (engine: blob): its runbooks are backup-files "
            "and file-storage-failure"
        )
    if engine == "git" or (declared is not None and declared.engine == "git"):
        raise ConfigError(
            f"system {system!r} is configuration in git (engine: git): its runbooks are "
            "backup-config and config-restore"
        )
    if engine == "keyvault" or (declared is not None and declared.engine == "keyvault"):
        raise ConfigError(
            f"system {system!r} is Key Vault secrets (engine: keyvault): its runbooks are "
            "backup-keyvault and keyvault-restore"
        )
    if engine not in ("postgres", "mongodb"):
        raise ConfigError("name a system from dr.yaml, or say which engine the run is for")
    if declared is not None and declared.engine != engine:
        raise ConfigError(f"system {system!r} is a {declared.engine} system, not {engine}")
    if connection:
        conninfo, block_databases = connection_from_spec(connection, engine, blocks)
    elif declared is not None:
        conninfo, block_databases = _declared_connection(declared, blocks)
    else:
        flag = "--uri" if engine == "mongodb" else "--dsn"
        raise ConfigError(f"name a system from dr.yaml or give a connection ({flag})")
    databases = _databases(engine, database, declared, block_databases, conninfo)
    if repositories:
        repos = [
            repository_from_spec(spec, config, blocks, secrets=secrets) for spec in repositories
        ]
    elif declared is not None:
        repos = repositories_for(config, declared, blocks, secrets)
    else:
        raise ConfigError(
            "no repository named (use --repo or the system's repositories in dr.yaml)"
        )
    share_recipients(repos, encrypt_to)
    return Target(
        system=system or conninfo.default_system_name(),
        engine=engine,  # type: ignore[arg-type]
        conninfo=conninfo,
        databases=databases,
        repositories=repos,
        tier=declared.tier if declared else "critical",
        checks_file=str(config.resolve_path(declared.checks_file))
        if declared and declared.checks_file
        else None,
        health_url=declared.health_url if declared else None,
        verify_server_env=declared.verify_server_env if declared else None,
        physical=bool(declared and declared.physical),
        declared=declared is not None,
        config=config,
    )


def verify_server_for(
    target: Target, override: str | None, blocks: BlockSource | None = None
) -> Connection:
    """Where to test-restore: the run's override (``env:VAR`` or a block), else the system's
    ``verify_server_env``, else the system's own server."""
    spec = override or (f"env:{target.verify_server_env}" if target.verify_server_env else None)
    if spec is None:
        return target.conninfo  # type: ignore[no-any-return]
    return connection_from_spec(spec, target.engine, blocks)[0]
