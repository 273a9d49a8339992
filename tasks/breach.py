"""Steps of the security-breach runbook that are not Azure calls: evidence and its custody
record, the configuration repository, passwords on the database servers, and the Prefect
blocks that hold them. One action each.

A password passed to or returned by these tasks is never logged: each is registered for
redaction as soon as it exists, and the log lines name the role, never the value.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import PREFECT_BLOCKS
from blocks.rotation import connection_password, replace_connection_password
from dr_runbooks.azure import evidence, gitlog, rotation
from dr_runbooks.config import BreachConfig
from dr_runbooks.errors import ConfigError
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.targets import Target, repository_from_spec, resolve_target
from tasks._runtime import logger, transient_only
from tasks.azure import AzureSystem

__all__ = [
    "BreachSetup",
    "dr_load_breach",
    "evidence_preserve",
    "evidence_record_custody",
    "evidence_verify",
    "git_config_changes",
    "mongodb_check_password",
    "mongodb_set_password",
    "postgres_check_password",
    "postgres_set_password",
    "prefect_block_password",
    "prefect_block_set_password",
    "prefect_run_launcher",
]


@dataclass
class BreachSetup:
    """What the breach runbook works on besides the sites."""

    config: BreachConfig
    #: The system's database as its administrator connects (for ALTER ROLE / updateUser).
    target: Target | None
    evidence: Repository | None


@task(cache_policy=NO_CACHE)
def dr_load_breach(az: AzureSystem) -> BreachSetup:
    """The system's ``breach:`` configuration, its database connection when passwords are
    rotated, and the evidence repository."""
    breach = az.system.breach
    if breach is None:
        raise ConfigError(f"system {az.name!r} has no breach: configuration in dr.yaml")
    target = None
    if breach.postgres_roles or breach.mongodb_users:
        target = resolve_target(az.config, None, az.name, blocks=PREFECT_BLOCKS)
    store = None
    if breach.evidence_repository:
        store = repository_from_spec(breach.evidence_repository, az.config, PREFECT_BLOCKS)
    logger().info(
        "breach response for %s: %d NSG(s), %d evidence path(s), %d role(s), %d user(s), "
        "%d Key Vault secret(s)",
        az.name,
        len(breach.network_security_groups),
        len(breach.evidence_paths),
        len(breach.postgres_roles),
        len(breach.mongodb_users),
        len(breach.key_vault_secrets),
    )
    return BreachSetup(breach, target, store)


@task(cache_policy=NO_CACHE)
def prefect_run_launcher() -> str:
    """Who launched this run, for the chain of custody: the Prefect user, deployment or
    automation that created it, else the operating-system user and host."""
    local = f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        from prefect.client.orchestration import get_client
        from prefect.runtime import flow_run

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run.get_id())  # type: ignore[arg-type]
        creator = run.created_by
        if creator is not None:
            return f"{creator.type} {creator.display_value or creator.id} (process {local})"
        if run.deployment_id is not None:
            return f"deployment {run.deployment_id} (process {local})"
    except Exception as exc:  # the custody record still names the process
        logger().warning("could not read who created this run: %s", exc)
    return local


# -- evidence ------------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE)
def evidence_preserve(
    repository: Repository, system: str, case: str, paths: list[str]
) -> dict[str, Any]:
    """Archive the paths (tar.gz, every file hashed) into the evidence repository, the
    manifest last, then make them immutable where the store allows it."""
    manifest = evidence.preserve(repository.store, system, case, paths)
    keys = [i.archive for i in manifest.items if i.archive]
    immutability = evidence.make_immutable(repository.store, keys)
    log = logger()
    for item in manifest.items:
        if item.missing:
            log.warning("evidence: %s does not exist", item.source)
            continue
        log.info(
            "evidence: %s → %s (%d files, %d bytes, sha256 %s)",
            item.source,
            item.archive,
            len(item.files),
            item.size,
            item.sha256,
        )
        for skipped in item.unreadable:
            log.warning("evidence: could not read %s: %s", skipped["name"], skipped["reason"])
    log.info("evidence in %s: %s", repository.name, immutability)
    return {"manifest": manifest.to_json(), "immutability": immutability}


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def evidence_record_custody(records: Repository, system: str, custody: dict[str, Any]) -> str:
    """Keep the chain-of-custody record apart from the evidence (in the records repository);
    returns where, and its sha256 is logged so a copy elsewhere can be compared."""
    data = json.dumps(custody, indent=2, sort_keys=True).encode()
    key = f"breach/{system}/custody/{custody['case']}.json"
    records.store.create()
    records.store.put_bytes(key, data)
    logger().info(
        "chain of custody: %s/%s (sha256 %s)", records.name, key, hashlib.sha256(data).hexdigest()
    )
    return key


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def evidence_verify(repository: Repository, expected: dict[str, str]) -> list[dict[str, Any]]:
    """Download every archive again and compare its sha256 with the custody record."""
    rows = evidence.verify_evidence(repository.store, expected)
    for row in rows:
        (logger().info if row["ok"] else logger().error)(
            "evidence %s: %s", row["archive"], "verified" if row["ok"] else row["detail"]
        )
    return rows


@task(cache_policy=NO_CACHE)
def git_config_changes(repository: str, known_good: str) -> dict[str, Any]:
    """The configuration repository's changes since the last known-good commit."""
    changes = gitlog.changes_since(repository, known_good)
    logger().info(
        "configuration %s: %d commit(s), %d file(s) changed since %s, %d uncommitted",
        repository,
        len(changes.commits),
        len(changes.files),
        changes.known_good,
        len(changes.uncommitted),
    )
    return changes.to_json()


# -- passwords -----------------------------------------------------------------------------------


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_set_password(conninfo: ConnInfo, role: str, password: str) -> None:
    """ALTER ROLE with a SCRAM verifier of the new password (idempotent: setting the same
    password again is harmless, so a retry is safe)."""
    rotation.set_postgres_password(conninfo, role, password)
    logger().warning("PostgreSQL role %s: password changed", role)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_check_password(conninfo: ConnInfo, role: str, password: str) -> bool:
    """Whether the server accepts ``role`` with ``password``."""
    accepted = rotation.postgres_accepts(conninfo, role, password)
    logger().info(
        "PostgreSQL role %s: a password was %s", role, "accepted" if accepted else "refused"
    )
    return accepted


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def mongodb_set_password(conninfo: MongoConnInfo, user: str, database: str, password: str) -> None:
    """updateUser with the new password."""
    rotation.set_mongodb_password(conninfo, user, database, password)
    logger().warning("MongoDB user %s (%s): password changed", user, database)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def mongodb_check_password(
    conninfo: MongoConnInfo, user: str, database: str, password: str
) -> bool:
    accepted = rotation.mongodb_accepts(conninfo, user, database, password)
    logger().info("MongoDB user %s: a password was %s", user, "accepted" if accepted else "refused")
    return accepted


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def prefect_block_password(name: str, engine: str) -> str | None:
    """The password a connection block holds now."""
    return connection_password(name, engine)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def prefect_block_set_password(name: str, engine: str, password: str) -> None:
    """Save the connection block ``name`` with the new password."""
    replace_connection_password(name, engine, password)
    logger().warning("block %s: password replaced", name)
