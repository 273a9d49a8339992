"""MongoDB steps of the runbooks: one server conversation or one check each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.mongo import backup as mongo_backup
from dr_runbooks.mongo import fetch, oplog, server, side, swap, verification, verify
from dr_runbooks.mongo import plan as mongo_plan
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.repository import Backup, Manifest, Repository
from tasks._runtime import logger, reported_progress, transient_only

__all__ = [
    "mongodb_assess",
    "mongodb_backup",
    "mongodb_drop_database",
    "mongodb_drop_leftover_verifications",
    "mongodb_fetch_verified",
    "mongodb_list_databases",
    "mongodb_open_dump",
    "mongodb_plan_restore",
    "mongodb_replay_oplog",
    "mongodb_restore",
    "mongodb_swap",
    "mongodb_verify_backup",
    "mongodb_verify_restore",
]


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
    skew = manifest.details.get("clock_skew_seconds")
    if skew:
        logger().warning(
            "backup %s: its consistent point %s is %d s ahead of this machine's clock; is the "
            "database server's clock wrong? It will not be chosen as the latest backup",
            manifest.id,
            manifest.consistent_point.isoformat(),
            skew,
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
def mongodb_assess(conninfo: MongoConnInfo, database: str) -> server.ServerStatus:
    """Step 1 of Scenario 1: is the server up, which version, does the database exist."""
    status = server.assess(conninfo.client_factory(), database)
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
def mongodb_fetch_verified(repository: Repository, backup: Backup) -> fetch.FetchedDump:
    """Download the backup and verify its size and sha256 before anything else."""
    with reported_progress("download"):
        fetched = fetch.fetch_backup(repository, backup)
    logger().info(
        "downloaded %s%s",
        backup.id,
        "; its checksum matches the manifest" if backup.manifest else " (legacy: no manifest)",
    )
    return fetched


@task(cache_policy=NO_CACHE)
def mongodb_open_dump(path: str) -> fetch.FetchedDump:
    """mongodump output given as a path (archive, directory or tar) instead of a backup."""
    fetched = fetch.open_path(path)
    logger().info("restoring from mongodump output %s", fetched.path)
    return fetched


@task(cache_policy=NO_CACHE)
def mongodb_plan_restore(
    fetched: fetch.FetchedDump,
    database: str,
    source_database: str | None,
    token: str,
) -> mongo_plan.RestorePlan:
    """Read the dump (checking every CRC and bucket when there is no manifest) and decide
    what goes where; a damaged dump is refused here, before anything is written."""
    with fetched.open() as dump:
        source = source_database or mongo_plan.source_database(
            dump, database, fetched.label, fetched.manifest
        )
        plan = mongo_plan.plan_restore(dump, token, {source: database}, manifest=fetched.manifest)
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


@task(cache_policy=NO_CACHE)
def mongodb_restore(
    conninfo: MongoConnInfo,
    fetched: fetch.FetchedDump,
    plan: mongo_plan.RestorePlan,
    indexes: bool = True,
) -> dict[str, Any]:
    """Restore into the NEW side database: collections with their options, documents,
    indexes (unless they wait for the oplog replay), views. On failure the side database is
    dropped; the target was never touched."""
    client = conninfo.client()
    try:
        with reported_progress("restore"), fetched.open() as dump:
            result = side.restore_into_side(client, dump, plan, indexes=indexes)
    finally:
        client.close()
    for database, names in result["databases"].items():
        logger().info("restored %d collections into %s", len(names), database)
    return result


@task(cache_policy=NO_CACHE)
def mongodb_verify_restore(
    conninfo: MongoConnInfo,
    plan: mongo_plan.RestorePlan,
    counts: bool = True,
    indexes: bool = True,
) -> dict[str, Any]:
    """Document counts and index names of every collection against the manifest (or the
    dump's own counts); ``counts``/``indexes`` false skips those."""
    client = conninfo.client()
    try:
        result = verify.verify_restore(client, plan, counts=counts, indexes=indexes)
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
    fetched: fetch.FetchedDump,
    plan: mongo_plan.RestorePlan,
    metadata_indexes: bool = True,
) -> dict[str, Any]:
    """Apply the archive's oplog to the side database, up to the backup's consistent point,
    then build the indexes that waited for it."""
    client = conninfo.client()
    try:
        with fetched.open() as dump:
            result = oplog.replay_oplog(client, dump, plan, metadata_indexes=metadata_indexes)
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
    :mod:`dr_runbooks.mongo.swap`)."""
    client = conninfo.client()
    try:
        old = swap.swap_database(client, database, side, stamp, keep_old=keep_old)
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
        server.drop_database(client, name)
    finally:
        client.close()


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def mongodb_drop_leftover_verifications(conninfo: MongoConnInfo) -> list[str]:
    """Drop temporary verification databases a crashed run left behind."""
    client = conninfo.client()
    try:
        leftovers = server.drop_leftovers(client)
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
    result = verification.verify_backup(
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
