"""``dr restore postgres`` and ``dr restore mongodb``: Scenario 1 from the command line."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from cli import physical
from cli.common import (
    BLOCKS,
    SECRETS,
    DatabaseOpt,
    DsnOpt,
    IdentityOpt,
    JsonOpt,
    SystemOpt,
    UriOpt,
    config,
    confirm,
    emit,
    handoff,
    handoff_repositories,
    opts,
    print_restore,
    run_flow,
    use_identity,
)
from dr_runbooks.errors import BadInput
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Backup, parse_time
from dr_runbooks.targets import Target, resolve_target
from flows.parameters import given

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Restore from a backup (destructive).")

RepoOpt = typer.Option(None, "--repo", "-r", help="Repository to restore from.")
BackupIdOpt = typer.Option(None, "--backup-id", help="Restore this backup.")
BeforeOpt = typer.Option(
    None, "--before", help="Latest backup before TIME (ISO 8601, UTC default)."
)
HealthUrlOpt = typer.Option(None, "--health-url", help="Poll until healthy.")
DryRunOpt = typer.Option(False, "--dry-run", help="Show the plan; change nothing.")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def _resolve(
    engine: str,
    connection: str | None,
    system: str | None,
    database: str | None,
    repo: str | None,
) -> tuple[Target, str]:
    target = resolve_target(
        config(),
        engine,
        system,
        connection,
        database,
        [repo] if repo else None,
        blocks=BLOCKS,
        secrets=SECRETS,
    )
    if not target.databases:
        raise BadInput("name the database to restore (--database)")
    return target, target.databases[0]


def _cutoff(backup_id: str | None, before: str | None) -> datetime | None:
    cutoff = parse_time(before) if before else None
    if backup_id and cutoff:
        raise BadInput("give --backup-id or --before, not both")
    return cutoff


def _choose(target: Target, name: str, backup_id: str | None, cutoff: datetime | None) -> Backup:
    """The backup the flow will restore, chosen here so the confirmation can name it; an
    encrypted one only with an identity that decrypts it."""
    backup = target.primary.find(
        target.engine, target.system, name, backup_id=backup_id, before=cutoff
    )
    target.primary.identity_for(backup)
    return backup


def _describe(backup: Backup) -> str:
    point = f"{backup.consistent_point:%Y-%m-%d %H:%M:%S} UTC"
    return f"backup [bold]{backup.id}[/] (consistent point {point})"


def _flow_options(
    target: Target,
    name: str,
    connection: str | None,
    repo: str | None,
    backup: Backup | None,
    health_url: str | None,
    drop_old: bool,
    dry_run: bool,
) -> dict[str, Any]:
    """The parameters both database-failure runbooks take, from the command's options; the
    CLI approves in advance (the person confirmed at the prompt, or passed ``--yes``)."""
    return given(
        system=target.system,
        database=name,
        connection=connection,
        repository=handoff_repositories([repo])[0] if repo else None,
        backup_id=backup.id if backup else None,
        health_url=health_url,
        keep_old=not drop_old,
        dry_run=dry_run,
        approved=True,
        config_path=opts.config,
    )


def _finish(result: dict[str, Any], json_output: bool, name: str, summary: str) -> None:
    if json_output:
        emit(result, True)
    else:
        print_restore(result, name, summary)


@app.command("postgres")
def restore_postgres_cmd(
    system: str | None = SystemOpt,
    dsn: str | None = DsnOpt,
    database: str | None = DatabaseOpt,
    repo: str | None = RepoOpt,
    backup_id: str | None = BackupIdOpt,
    before: str | None = BeforeOpt,
    checks: str | None = typer.Option(None, "--checks", help="SQL checks file."),
    health_url: str | None = HealthUrlOpt,
    drop_old: bool = typer.Option(False, "--drop-old", help="Drop the replaced database."),
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
    identity: str | None = IdentityOpt,
    at: str | None = physical.AtOpt,
    at_lsn: str | None = physical.AtLsnOpt,
    at_name: str | None = physical.AtNameOpt,
    pgdata: str | None = physical.PgdataOpt,
    start: bool = physical.StartOpt,
    port: int | None = physical.PortOpt,
    os_user: str | None = physical.OsUserOpt,
    timeline: int | None = physical.TimelineOpt,
    archive: bool = physical.ArchiveOpt,
) -> None:
    """Restore a PostgreSQL database (Scenario 1: database failure), or recover the whole
    cluster to a point in time into a new data directory (--at, --at-lsn, --at-name)."""
    from flows.database_failure import database_failure

    use_identity(identity)
    if at or at_lsn or at_name:
        logical = {
            "--dsn": dsn,
            "--database": database,
            "--backup-id": backup_id,
            "--before": before,
            "--checks": checks,
            "--health-url": health_url,
            "--drop-old": drop_old,
            "--dry-run": dry_run,
        }
        if given_flags := [flag for flag, value in logical.items() if value]:
            raise BadInput(
                "a point-in-time recovery builds a new cluster from base backups and WAL: "
                f"{', '.join(given_flags)} do not apply"
            )
        physical.restore_at(
            system,
            repo,
            at,
            at_lsn,
            at_name,
            pgdata,
            start,
            port,
            os_user,
            timeline,
            archive,
            json_output,
        )
        return
    if pgdata or start or port or os_user or timeline or archive:
        raise BadInput(
            "--pgdata, --start, --port, --os-user, --timeline and --archive go with --at"
        )
    cutoff = _cutoff(backup_id, before)
    if checks and not os.path.isfile(checks):
        raise BadInput(f"checks file not found: {checks}")
    connection = handoff("DR_CLI_DSN", dsn, ConnInfo.from_dsn)
    target, name = _resolve("postgres", connection, system, database, repo)
    backup = _choose(target, name, backup_id, cutoff)
    if not dry_run and not yes:
        confirm(
            "restore replaces a database",
            f"Restore [bold]{name}[/] on {target.conninfo.describe()} from {_describe(backup)}."
            f" The current database is kept as {name}__pre_restore_<time>"
            + (" and then dropped." if drop_old else "."),
        )
    options = _flow_options(target, name, connection, repo, backup, health_url, drop_old, dry_run)
    result = run_flow(
        lambda: database_failure(**options, **given(checks_file=checks)),
        json_output,
        f"restoring {name}",
    )
    _finish(result, json_output, name, f"from {backup.id}")


@app.command("mongodb")
def restore_mongodb_cmd(
    system: str | None = SystemOpt,
    uri: str | None = UriOpt,
    database: str | None = DatabaseOpt,
    repo: str | None = RepoOpt,
    backup_id: str | None = BackupIdOpt,
    before: str | None = BeforeOpt,
    source_path: str | None = typer.Option(
        None,
        "--from",
        help="Restore mongodump output instead: an --archive file, a dump directory or a "
        "legacy backup_*.tar.gz.",
    ),
    source_database: str | None = typer.Option(
        None, "--source-database", help="The database of the dump to restore."
    ),
    no_oplog: bool = typer.Option(False, "--no-oplog", help="Do not replay the oplog."),
    health_url: str | None = HealthUrlOpt,
    drop_old: bool = typer.Option(False, "--drop-old", help="Drop the replaced collections."),
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
    identity: str | None = IdentityOpt,
) -> None:
    """Restore a MongoDB database (Scenario 1: database failure)."""
    from flows.database_failure_mongodb import database_failure_mongodb

    use_identity(identity)
    cutoff = _cutoff(backup_id, before)
    if source_path and (backup_id or cutoff):
        raise BadInput("give --from or a backup (--backup-id, --before), not both")
    if source_path and not Path(source_path).exists():
        raise BadInput(f"no such file or directory: {source_path}")
    connection = handoff("DR_CLI_MONGODB_URI", uri, MongoConnInfo.from_uri)
    target, name = _resolve("mongodb", connection, system, database, repo)
    backup = None if source_path else _choose(target, name, backup_id, cutoff)
    if not dry_run and not yes:
        what = _describe(backup) if backup else f"mongodump output {source_path}"
        confirm(
            "restore replaces a database",
            f"Restore [bold]{name}[/] on {target.conninfo.describe('')} from {what}. Stop the "
            f"application first. The current collections are kept in {name}__pre_restore_<time>"
            + (" and then dropped." if drop_old else "."),
        )
    options = _flow_options(target, name, connection, repo, backup, health_url, drop_old, dry_run)
    result = run_flow(
        lambda: database_failure_mongodb(
            **options,
            **given(source_path=source_path, source_database=source_database),
            replay_oplog=not no_oplog,
        ),
        json_output,
        f"restoring {name}",
    )
    replayed = (result.get("oplog") or {}).get("applied", 0)
    origin = result.get("backup_id") or source_path
    _finish(result, json_output, name, f"from {origin}, {replayed} oplog entries replayed")
