"""Runbook: daily backup verification (the plan's "Backup Verification", done properly).

The plan's script takes ``[0]`` of an alphabetical listing as "latest" and never restores it.
For each protected system and database:

1. Find the newest complete backup by consistent point (legacy script backups included).
2. Check its age against the RPO objective.
3. Re-read every object and compare its sha256 with the manifest.
4. Test-restore it into a temporary database on the verification server (default: the source
   server), compare row (document) counts with the manifest and run the SQL checks; drop the
   temporary database afterwards, also when verification fails (and any a crashed run left).
5. Record the result next to the backup in the repository.

For a system marked ``physical`` the cluster's protection is verified too: the WAL chain from
the newest base backup to the newest archived segment has no gap; that base backup, plus the
archived WAL, recovers to the end of the archive in a new cluster on a side port (fetched,
``pg_verifybackup``-checked, replayed and promoted, then stopped and removed); the newest
archived segment's age is the RPO achieved.

A configuration system (``engine: git``) has its newest bundle's stored checksum, ``git bundle
verify`` and refs checked and recorded (its RPO is ``dr status``'s, from the remote's refs).
A Key Vault system (``engine: keyvault``) has its newest backup's checksums checked and
recorded (its content is Key Vault's own: only Key Vault can restore it).

A server that cannot be reached fails that system's verification and the others are still
checked. Any failure or stale backup sends one notification and fails the run, after every
system has been checked.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.config import find_config, load_config
from dr_runbooks.errors import DRError, RestoreVerificationFailed
from dr_runbooks.locks import Holder, database_lock, hold, verification_lock
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.postgres.connection import ConnInfo, free_port
from dr_runbooks.postgres.pitr import RecoveryTarget
from dr_runbooks.postgres.server import side_name
from dr_runbooks.repository import Backup
from dr_runbooks.targets import Connection, Target
from dr_runbooks.text import first_line, human_duration
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks._runtime import logger
from tasks.config import dr_load_target, dr_load_verify_server
from tasks.files import files_verify_system
from tasks.gitconfig import git_verify_system
from tasks.keyvault import keyvault_verify_system
from tasks.mongodb import mongodb_drop_leftover_verifications, mongodb_verify_backup
from tasks.physical import pitr_restore, pitr_stop, wal_chain_check
from tasks.postgres import (
    postgres_drop_database,
    postgres_drop_leftovers,
    postgres_fetch_backup,
    postgres_restore,
    postgres_verify_restore,
)
from tasks.repository import (
    repository_list_databases,
    repository_newest_backup,
    repository_record_verification,
    repository_verify_checksums,
)
from tasks.runs import workdir_remove_stale

__all__ = ["verify_backups"]


@flow(name="verify-backups", log_prints=True)
@runbook
def verify_backups(
    systems: list[str] = Field(
        [], description="Systems to verify (default: every system in dr.yaml)."
    ),
    verify_server: str = Field(
        "",
        description="Where to test-restore: a connection block's name, or `env:VAR` with a "
        "DSN or URI (default: the system's `verify_server_env`, else its own server).",
    ),
    notify: bool = Field(True, description="Send a notification when anything fails."),
    config_path: str = p.CONFIG_PATH,
) -> list[dict[str, Any]]:
    """Prove the newest backup of every protected system restorable, and record it."""
    label = ", ".join(systems) if systems else "every system"
    with Runbook("verify-backups", system=label, config_path=config_path, notify=notify) as rb:
        names = systems or sorted(load_config(config_path).systems)
        results: list[dict[str, Any]] = []
        declared = load_config(config_path).systems
        for name in names:
            if name in declared and declared[name].engine == "blob":
                with rb.step(f"verify {name} files"):
                    results.append(files_verify_system(name, config_path))
                continue
            if name in declared and declared[name].engine == "git":
                with rb.step(f"verify {name} configuration"):
                    results.append(git_verify_system(name, config_path))
                continue
            if name in declared and declared[name].engine == "keyvault":
                with rb.step(f"verify {name} secrets"):
                    results.append(keyvault_verify_system(name, config_path))
                continue
            with rb.step(f"load {name}"):
                target = dr_load_target(None, name, config_path=config_path)
                server = dr_load_verify_server(target, verify_server)
                databases = target.databases or repository_list_databases(
                    target.primary, target.engine, name
                )
            for database in databases:
                with rb.step(f"verify {name}/{database}"):
                    results.append(_verify_one(rb, target, server, database))
            if target.physical:
                with rb.step(f"verify {name} base backup and WAL"):
                    results.append(_verify_physical(target, config_path))
        bad = [r for r in results if r["outcome"] != "ok"]
        rb.publish(
            "verify-backups",
            f"Backup verification: {len(results) - len(bad)} of {len(results)} ok",
            table=[
                {k: r[k] for k in ("system", "database", "backup_id", "age", "outcome", "detail")}
                for r in results
            ],
        )
        if bad:
            rb.system = ", ".join(sorted({r["system"] for r in bad}))
            raise RestoreVerificationFailed(
                "; ".join(
                    f"{r['system']}/{r['database']}: {r['outcome']}: {r['detail']}" for r in bad
                )
            )
        return results


def _verify_one(rb: Runbook, target: Target, server: Connection, database: str) -> dict[str, Any]:
    """Steps 1-5 for one database; a bad backup is a result, not an exception."""
    now = datetime.now(UTC)
    repository = target.primary
    result: dict[str, Any] = {
        "system": target.system,
        "database": database,
        "repository": repository.name,
        "backup_id": None,
        "age": "n/a",
        "outcome": "ok",
        "detail": "",
        "started": now.isoformat(),
    }
    backup = repository_newest_backup(repository, target.engine, target.system, database)
    if backup is None:
        result.update(outcome="missing", detail="no complete backup")
        return result
    age = now - backup.consistent_point
    rpo = target.config.objectives.rpo.database
    result.update(
        backup_id=backup.id,
        age=human_duration(age),
        consistent_point=backup.consistent_point.isoformat(),
    )
    problems = repository_verify_checksums(repository, backup)
    record: dict[str, Any] = {
        "backup_id": backup.id,
        "started": now.isoformat(),
        "repository": repository.name,
        "checksums": "ok" if not problems else "mismatch",
        "problems": list(problems),
    }
    if not problems:
        record.update(_TEST_RESTORE[target.engine](rb, target, server, backup, database))
        problems = record["problems"]
    record["finished"] = datetime.now(UTC).isoformat()
    record["outcome"] = "ok" if not problems else "failed"
    repository_record_verification(repository, backup, record)
    if problems:
        result.update(outcome="failed", detail=problems[0])
    elif age > rpo:
        result.update(
            outcome="stale",
            detail=f"newest backup {human_duration(age)} old, "
            f"objective {human_duration(rpo)} (it restored fine)",
        )
    else:
        result["detail"] = record.get("detail", "restored and verified")
    return result


def _test_restore_postgres(
    rb: Runbook, target: Target, server: Connection, backup: Backup, database: str
) -> dict[str, Any]:
    """Restore into a temporary database, verify, and always drop it; under the database's
    verification lock, so the leftovers of runs that died can be told from a live run's."""
    assert isinstance(server, ConnInfo)
    temp = side_name(database, "verify", rb.token)
    outcome: dict[str, Any] = {
        "server": server.describe("postgres"),
        "database": temp,
        "problems": [],
    }
    try:
        with rb.lock([verification_lock(server, database)], timeout_seconds=600):
            _test_restore_postgres_locked(target, server, backup, database, temp, outcome)
    except DRError as exc:  # an unreachable server too: this verification fails, others go on
        outcome["problems"] = [first_line(exc)]
    finally:
        postgres_drop_database(server, temp, return_state=True)
    _drop_dead_restores(rb, target, database)
    return outcome


def _drop_dead_restores(rb: Runbook, target: Target, database: str) -> None:
    """The daily pass also removes side databases that restores which died left on the
    system's own server, when no restore of the database is running (its lock is free)."""
    holder = Holder(flow=rb.name, run_id=rb.run_id)
    try:
        with hold([database_lock(target.conninfo, database)], holder, timeout_seconds=0):
            postgres_drop_leftovers(target.conninfo, database, "restore")
    except DRError as exc:  # a restore running now, or the server away: the next pass will do
        logger().info("left %s's restore leftovers for later: %s", database, first_line(exc))


def _test_restore_postgres_locked(
    target: Target,
    server: ConnInfo,
    backup: Backup,
    database: str,
    temp: str,
    outcome: dict[str, Any],
) -> None:
    """The test restore itself (the caller holds the lock and drops ``temp`` afterwards)."""
    postgres_drop_leftovers(server, database, "verify")
    workdir_remove_stale()
    fetched = postgres_fetch_backup(target.primary, backup)
    try:
        postgres_restore(server, fetched, temp)
    finally:
        fetched.cleanup()
    expected = backup.manifest.tables if backup.manifest else {}
    verified = postgres_verify_restore(server, temp, expected, target.checks_file)
    outcome.update(
        compared={
            "tables": verified["tables"],
            "rows": verified["rows"],
            "row_counts": bool(expected),
            "checks": verified["checks"],
        },
        detail=f"restored {verified['tables']} tables, {verified['rows']} rows"
        + (" matching the manifest" if expected else ""),
    )


def _test_restore_mongodb(
    rb: Runbook, target: Target, server: Connection, backup: Backup, database: str
) -> dict[str, Any]:
    """The MongoDB test restore: a temporary database, compared with the manifest, dropped."""
    assert isinstance(server, MongoConnInfo)
    outcome: dict[str, Any] = {"server": server.describe(), "problems": []}
    try:
        mongodb_drop_leftover_verifications(server)
        result = mongodb_verify_backup(server, target.primary, backup)
    except DRError as exc:  # an unreachable server too: this verification fails, others go on
        outcome["problems"] = [first_line(exc)]
        return outcome
    outcome["problems"] = list(result["problems"])
    outcome["compared"] = {
        "collections": result["collections"],
        "documents": result["documents"],
        "counts_and_indexes": True,
        "oplog": result.get("oplog"),
    }
    if not result["problems"]:
        outcome["detail"] = (
            f"restored {result['collections']} collections, "
            f"{result['documents']} documents matching the manifest"
        )
    return outcome


def _verify_physical(target: Target, config_path: str) -> dict[str, Any]:
    """The WAL chain, and a test recovery of the newest base backup to the end of the archive
    on a side port; a gap, a damaged object or a recovery that fails is a failed result."""
    now = datetime.now(UTC)
    repository = target.primary
    result: dict[str, Any] = {
        "system": target.system,
        "database": "(cluster: base backup + WAL)",
        "repository": repository.name,
        "backup_id": None,
        "age": "n/a",
        "outcome": "ok",
        "detail": "",
        "started": now.isoformat(),
    }
    try:
        chain = wal_chain_check(repository, target.system)
    except DRError as exc:  # no base backup yet, or the repository away
        result.update(outcome="missing", detail=first_line(exc))
        return result
    if chain.newest_archived is not None:
        result["age"] = human_duration(now - chain.newest_archived)
    if chain.missing:
        result.update(
            outcome="failed",
            detail=f"the WAL chain has a gap: {chain.missing[0]} is not archived "
            f"({len(chain.missing)} missing); recovery past it is impossible",
        )
        return result
    workdir = Path(tempfile.mkdtemp(prefix="dr-verify-pitr-"))
    workdir.chmod(0o755)  # the test cluster runs as an unprivileged OS user when we are root
    pgdata = workdir / "pgdata"
    found = Path(config_path) if config_path else find_config()
    try:
        summary = pitr_restore(
            repository,
            target.system,
            RecoveryTarget("latest"),
            str(pgdata),
            free_port(),
            [repository.name] if target.declared else [repository.store.location],
            str(found.absolute()) if found else None,
        )
    except DRError as exc:
        result.update(outcome="failed", detail=f"test recovery: {first_line(exc)}")
        return result
    finally:
        pitr_stop(str(pgdata), return_state=True)
        shutil.rmtree(workdir, ignore_errors=True)
    result["backup_id"] = summary["backups"][-1] if summary["backups"] else None
    rpo = target.config.objectives.rpo.database
    age = now - chain.newest_archived if chain.newest_archived else None
    recovered = (
        f"recovered {', '.join(summary['backups'])} + WAL to {summary['reached_time']} "
        f"(LSN {summary['reached_lsn']})"
    )
    if age is not None and age > rpo:
        result.update(
            outcome="stale",
            detail=f"newest archived WAL {human_duration(age)} old, objective "
            f"{human_duration(rpo)}: is archive_command failing? ({recovered})",
        )
    else:
        result["detail"] = recovered
    return result


_TEST_RESTORE: dict[str, Callable[[Runbook, Target, Connection, Backup, str], dict[str, Any]]] = {
    "postgres": _test_restore_postgres,
    "mongodb": _test_restore_mongodb,
}
