"""Runbook: daily backup verification (the plan's "Backup Verification", done properly).

The plan's script takes ``[0]`` of an alphabetical listing as "latest" and never restores it.
For each protected system and database:

1. Find the newest complete backup by consistent point (legacy script backups included).
2. Check its age against the RPO objective.
3. Re-read every object and compare its sha256 with the manifest.
4. Test-restore it into a temporary database on the verification server (default: the source
   server), compare row counts with the manifest and run the SQL checks; drop the temporary
   database afterwards, also when verification fails (and any a crashed run left behind).
5. Record the result next to the backup in the repository.

Any failure or stale backup sends one notification and fails the run, after every system has
been checked.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.config import load_config
from dr_runbooks.errors import DRError, RestoreVerificationFailed
from dr_runbooks.mongo.connection import MongoTarget, mongo_connection_override
from dr_runbooks.report import Timeline, human_duration
from dr_runbooks.resolve import Target, connection_override
from tasks.config import dr_load_target
from tasks.mongodb import (
    mongodb_drop_leftover_verifications,
    mongodb_load_target,
    mongodb_verify_backup,
)
from tasks.notify import notify_send
from tasks.postgres import postgres_drop_database, postgres_restore, postgres_verify_restore
from tasks.report import report_publish
from tasks.repository import backup_fetch_verified
from tasks.verify import (
    VERIFY_MARK,
    postgres_drop_leftover_verifications,
    repository_newest_backup,
    repository_record_verification,
    repository_verify_checksums,
)

__all__ = ["verify_backups"]


@flow(name="verify-backups", log_prints=True)
def verify_backups(
    systems: list[str] | None = Field(
        None, description="Systems to verify (default: every system in dr.yaml)."
    ),
    verify_server: str | None = Field(
        None,
        description="Where to test-restore: a PostgresDatabase block name or env:VAR with "
        "a DSN (default: the system's verify_server_env, else its own server).",
    ),
    notify: bool = Field(True, description="Send a notification when anything fails."),
    config_path: str | None = Field(None, description="dr.yaml to use."),
) -> list[dict[str, Any]]:
    """Prove the newest backup of every protected system restorable, and record it."""
    timeline = Timeline()
    config = load_config(config_path)
    names = systems or sorted(config.systems)
    results: list[dict[str, Any]] = []
    for name in names:
        engine = config.system(name).engine
        with timeline.step(f"load {name}"):
            target: Any
            if engine == "mongodb":
                target = mongodb_load_target(name, config_path=config_path)
                databases = target.databases or _databases_in_repository(target.primary, name)
            else:
                target = dr_load_target(name, config_path=config_path)
                databases = target.databases
        for database in databases:
            with timeline.step(f"verify {name}/{database}"):
                results.append(_verify_one(engine, target, database, verify_server, config))
    bad = [r for r in results if r["outcome"] != "ok"]
    report_publish(
        "verify-backups",
        f"Backup verification: {len(results) - len(bad)} of {len(results)} ok",
        table=[
            {k: r[k] for k in ("system", "database", "backup_id", "age", "outcome", "detail")}
            for r in results
        ],
    )
    if bad:
        if notify:
            failed_systems = ", ".join(sorted({r["system"] for r in bad}))
            notify_send(
                f"DR: backup verification failed for {failed_systems}",
                [f"{r['system']}/{r['database']}: {r['outcome']}: {r['detail']}" for r in bad],
                config_path,
            )
        raise RestoreVerificationFailed(
            "; ".join(f"{r['system']}/{r['database']}: {r['detail']}" for r in bad)
        )
    return results


def _databases_in_repository(repository: Any, system: str) -> list[str]:
    """A system declared without databases: verify every database it has backups of."""
    if not repository.store.exists():
        return []
    return sorted({b.database for b in repository.backups("mongodb", system, None)})


def _verify_one(
    engine: str, target: Any, database: str, verify_server: str | None, config: Any
) -> dict[str, Any]:
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
    backup = repository_newest_backup(repository, engine, target.system, database)
    if backup is None:
        result.update(outcome="missing", detail="no complete backup")
        return result
    age = now - backup.consistent_point
    rpo = config.objectives.rpo.database
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
        if engine == "mongodb":
            restored = _test_restore_mongodb(target, backup, verify_server, config)
        else:
            restored = _test_restore(target, backup, database, verify_server)
        record.update(restored)
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


def _server_spec(verify_server: str | None, config: Any, system: str) -> str | None:
    """Where to test-restore: the run's parameter, else the system's verify_server_env, else
    None (the system's own server)."""
    declared = config.systems.get(system)
    if verify_server:
        return verify_server
    return f"env:{declared.verify_server_env}" if declared and declared.verify_server_env else None


def _test_restore(
    target: Target, backup: Any, database: str, verify_server: str | None
) -> dict[str, Any]:
    """Restore into a temporary database, verify, and always drop it."""
    server_spec = _server_spec(verify_server, target.config, target.system)
    conninfo = connection_override(server_spec) if server_spec else target.conninfo
    temp = f"{database}{VERIFY_MARK}{backup.id}"[:63]
    outcome: dict[str, Any] = {
        "server": conninfo.describe("postgres"),
        "database": temp,
        "problems": [],
    }
    try:
        # An unreachable verification server fails this verification (recorded, notified).
        postgres_drop_leftover_verifications(conninfo)
        fetched = backup_fetch_verified(target.primary, backup)
        try:
            postgres_restore(conninfo, fetched, temp)
        finally:
            fetched.cleanup()
        expected = backup.manifest.tables if backup.manifest else {}
        verified = postgres_verify_restore(conninfo, temp, expected, target.checks_file)
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
    except DRError as exc:
        outcome["problems"] = [str(exc).splitlines()[0]]
    finally:
        with contextlib.suppress(Exception):
            postgres_drop_database(conninfo, temp)
    return outcome


def _test_restore_mongodb(
    target: MongoTarget, backup: Any, verify_server: str | None, config: Any
) -> dict[str, Any]:
    """The MongoDB test restore: a temporary database, compared with the manifest, dropped."""
    server_spec = _server_spec(verify_server, config, target.system)
    conninfo = mongo_connection_override(server_spec)[0] if server_spec else target.conninfo
    mongodb_drop_leftover_verifications(conninfo)
    result = mongodb_verify_backup(conninfo, target.primary, backup)
    outcome: dict[str, Any] = {
        "server": conninfo.describe(),
        "problems": list(result["problems"]),
        "compared": {
            "collections": result["collections"],
            "documents": result["documents"],
            "counts_and_indexes": True,
            "oplog": result.get("oplog"),
        },
    }
    if not result["problems"]:
        outcome["detail"] = (
            f"restored {result['collections']} collections, "
            f"{result['documents']} documents matching the manifest"
        )
    return outcome
