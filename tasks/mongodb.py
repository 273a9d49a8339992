"""MongoDB steps of the runbooks: one server conversation or one check each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.config import load_config
from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.mongo import backup as mongo_backup
from dr_runbooks.mongo import restore as mongo_restore
from dr_runbooks.mongo.connection import MongoConnInfo, MongoTarget, resolve_mongo_target
from dr_runbooks.repository import Backup, Manifest, Repository
from tasks._runtime import logger, reported_progress, transient_only

__all__ = [
    "mongodb_assess",
    "mongodb_backup",
    "mongodb_drop_database",
    "mongodb_drop_leftover_verifications",
    "mongodb_fetch_verified",
    "mongodb_list_databases",
    "mongodb_load_target",
    "mongodb_open_dump",
    "mongodb_plan_restore",
    "mongodb_replay_oplog",
    "mongodb_restore",
    "mongodb_swap",
    "mongodb_verify_backup",
    "mongodb_verify_restore",
]


@task(cache_policy=NO_CACHE)
def mongodb_load_target(
    system: str | None,
    connection: str | None = None,
    database: str | None = None,
    repositories: list[str] | None = None,
    config_path: str | None = None,
) -> MongoTarget:
    """Resolve the system's connection, databases and repositories (no retries: bad input)."""
    target = resolve_mongo_target(
        load_config(config_path), system, connection, database, repositories
    )
    logger().info(
        "system %s: %s, databases %s, repositories %s",
        target.system,
        target.conninfo.describe(),
        ", ".join(target.databases) or "(all on the server)",
        ", ".join(r.name for r in target.repositories),
    )
    return target


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def mongodb_list_databases(conninfo: MongoConnInfo) -> list[str]:
    """Every database on the server but admin, local and config."""
    client = conninfo.client()
    try:
        names = mongo_backup.list_user_databases(client)
    finally:
        client.close()
    logger().info("databases on %s: %s", conninfo.describe(), ", ".join(names) or "none")
    return names


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def mongodb_backup(
    conninfo: MongoConnInfo,
    database: str,
    system: str,
    repository: Repository,
    engine: str = "auto",
    kind: str = "full",
) -> Manifest:
    """The database as a mongodump archive (with the oplog on a replica set), zstd-compressed
    and checksummed into the repository, manifest last."""
    with reported_progress("dump"):
        manifest = mongo_backup.backup_database(
            conninfo, database, system, repository, engine=engine, kind=kind
        )
    data = manifest.objects[0]
    oplog = manifest.details.get("oplog") or {}
    logger().info(
        "backup %s of %s committed to %s (%s engine, %s): %d bytes (%d before compression), "
        "%d collections, %d oplog entries",
        manifest.id,
        database,
        repository.name,
        manifest.details.get("engine"),
        manifest.consistency,
        data.size,
        data.raw_size or 0,
        len(manifest.tables),
        oplog.get("entries", 0),
    )
    return manifest


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def mongodb_assess(conninfo: MongoConnInfo, database: str) -> mongo_restore.ServerStatus:
    """Step 1 of Scenario 1: is the server up, which version, does the database exist."""
    status = mongo_restore.assess(conninfo.client_factory(), database)
    log = logger()
    if status.reachable:
        log.info(
            "server %s is up (MongoDB %s, %s); database %s %s",
            conninfo.describe(""),
            status.server_version,
            f"replica set {status.replica_set}" if status.replica_set else "standalone",
            database,
            f"has {status.collections} collections" if status.database_exists else "is MISSING",
        )
    else:
        log.warning("server %s is not reachable: %s", conninfo.describe(""), status.error)
    return status


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def mongodb_fetch_verified(repository: Repository, backup: Backup) -> mongo_restore.FetchedDump:
    """Download the backup and verify its size and sha256 before anything else."""
    with reported_progress("download"):
        fetched = mongo_restore.fetch_backup(repository, backup)
    logger().info(
        "downloaded %s%s",
        backup.id,
        "; its checksum matches the manifest" if backup.manifest else " (legacy: no manifest)",
    )
    return fetched


@task(cache_policy=NO_CACHE)
def mongodb_open_dump(path: str) -> mongo_restore.FetchedDump:
    """mongodump output given as a path (archive, directory or tar) instead of a backup."""
    fetched = mongo_restore.open_path(path)
    logger().info("restoring from mongodump output %s", fetched.path)
    return fetched


@task(cache_policy=NO_CACHE)
def mongodb_plan_restore(
    fetched: mongo_restore.FetchedDump,
    database: str,
    source_database: str | None,
    token: str,
) -> mongo_restore.RestorePlan:
    """Read the dump (checking every CRC and bucket when there is no manifest) and decide
    what goes where; a damaged dump is refused here, before anything is written."""
    with fetched.open() as dump:
        source = source_database or _source_database(dump, database, fetched)
        plan = mongo_restore.plan_restore(
            dump, token, {source: database}, manifest=fetched.manifest
        )
    log = logger()
    for note in plan.notes:
        log.info("index: %s", note)
    for skipped in plan.skipped:
        log.info("not restored: %s", skipped)
    target = plan.databases[0]
    log.info(
        "plan: %s.* from %s → %s, then swapped into %s (%d collections)",
        target.source,
        fetched.label,
        target.side,
        target.target,
        len(target.collections),
    )
    return plan


def _source_database(dump: Any, database: str, fetched: mongo_restore.FetchedDump) -> str:
    """The database of the dump to restore: the one named like the target, else the only
    user database the dump holds (a legacy dump of a renamed database)."""
    from dr_runbooks.errors import BadInput
    from dr_runbooks.mongo.connection import SYSTEM_DATABASES

    if fetched.manifest is not None:
        return fetched.manifest.database
    names = sorted({c.namespace.db for c in dump.collections} - SYSTEM_DATABASES)
    if database in names or not names:
        return database
    if len(names) == 1:
        return names[0]
    raise BadInput(f"{fetched.label} holds databases {', '.join(names)}: say which one to restore")


@task(cache_policy=NO_CACHE)
def mongodb_restore(
    conninfo: MongoConnInfo,
    fetched: mongo_restore.FetchedDump,
    plan: mongo_restore.RestorePlan,
    indexes: bool = True,
) -> dict[str, Any]:
    """Restore into the NEW side database: collections with their options, documents,
    indexes (unless they wait for the oplog replay), views. On failure the side database is
    dropped; the target was never touched."""
    client = conninfo.client()
    try:
        with reported_progress("restore"), fetched.open() as dump:
            result = mongo_restore.restore_into_side(client, dump, plan, indexes=indexes)
    finally:
        client.close()
    for side, names in result["databases"].items():
        logger().info("restored %d collections into %s", len(names), side)
    return result


@task(cache_policy=NO_CACHE)
def mongodb_verify_restore(
    conninfo: MongoConnInfo,
    plan: mongo_restore.RestorePlan,
    counts: bool = True,
    indexes: bool = True,
) -> dict[str, Any]:
    """Document counts and index names of every collection against the manifest (or the
    dump's own counts); ``counts``/``indexes`` false skips those."""
    client = conninfo.client()
    try:
        result = mongo_restore.verify_restore(client, plan, counts=counts, indexes=indexes)
    finally:
        client.close()
    if result["problems"]:
        raise RestoreVerificationFailed(
            "the restored data failed verification: " + "; ".join(result["problems"][:5])
        )
    logger().info(
        "verified %d collections:%s%s",
        result["collections"],
        f" {result['documents']} documents as the manifest says" if counts else "",
        " every index is there" if indexes else "",
    )
    return result


@task(cache_policy=NO_CACHE)
def mongodb_replay_oplog(
    conninfo: MongoConnInfo,
    fetched: mongo_restore.FetchedDump,
    plan: mongo_restore.RestorePlan,
    metadata_indexes: bool = True,
) -> dict[str, Any]:
    """Apply the archive's oplog to the side database, up to the backup's consistent point,
    then build the indexes that waited for it."""
    client = conninfo.client()
    try:
        with fetched.open() as dump:
            result = mongo_restore.replay_oplog(
                client, dump, plan, metadata_indexes=metadata_indexes
            )
    finally:
        client.close()
    logger().info(
        "oplog: %d entries applied, %d indexes built, skipped %s",
        result["applied"],
        result["indexes"],
        result["skipped"] or "nothing",
    )
    return result


# A swap that failed halfway must be looked at by a person, not retried blindly.
@task(cache_policy=NO_CACHE)
def mongodb_swap(
    conninfo: MongoConnInfo, database: str, side: str, stamp: str, keep_old: bool = True
) -> str | None:
    """Move the current collections aside and the restored ones in (see the swap in
    :mod:`dr_runbooks.mongo.restore`)."""
    client = conninfo.client()
    try:
        old = mongo_restore.swap_database(client, database, side, stamp, keep_old=keep_old)
    finally:
        client.close()
    logger().info(
        "%s now holds the restored collections%s",
        database,
        f"; the previous ones are kept in {old}" if old else "",
    )
    return old


@task(retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def mongodb_drop_database(conninfo: MongoConnInfo, name: str) -> None:
    client = conninfo.client()
    try:
        mongo_restore.drop_database(client, name)
    finally:
        client.close()


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def mongodb_drop_leftover_verifications(conninfo: MongoConnInfo) -> list[str]:
    """Drop temporary verification databases a crashed run left behind."""
    client = conninfo.client()
    try:
        leftovers = mongo_restore.drop_leftovers(client)
    finally:
        client.close()
    for name in leftovers:
        logger().warning("dropped leftover verification database %s", name)
    return leftovers


@task(cache_policy=NO_CACHE)
def mongodb_verify_backup(
    conninfo: MongoConnInfo, repository: Repository, backup: Backup, workdir: str | None = None
) -> dict[str, Any]:
    """Test-restore a backup into a temporary database and compare it with its manifest."""
    result = mongo_restore.verify_backup(
        conninfo.client_factory(),
        repository,
        backup,
        workdir=Path(workdir) if workdir else None,
    )
    log = logger()
    if result["outcome"] == "ok":
        log.info(
            "test restore of %s: %d collections, %d documents match the manifest",
            backup.id,
            result["collections"],
            result["documents"],
        )
    else:
        for problem in result["problems"]:
            log.error("test restore of %s: %s", backup.id, problem)
    return result
