"""``dr backup mongodb``, ``dr restore mongodb`` and ``dr backups inspect`` (registered on the
sub-apps of :mod:`dr_runbooks.cli`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from dr_runbooks.cli import (
    DatabaseOpt,
    JsonOpt,
    SystemOpt,
    _config,
    _emit,
    _run,
    backup_app,
    backups_app,
    err,
    opts,
    out,
    restore_app,
)
from dr_runbooks.errors import BackupNotFound, BadInput
from dr_runbooks.report import human_duration

_CLI_URI = "DR_CLI_MONGODB_URI"

UriOpt = typer.Option(
    None,
    "--uri",
    envvar="DR_MONGODB_URI",
    help="Ad-hoc connection (prefer the DR_MONGODB_URI variable: argv is visible to ps).",
)


def _mongo_connection(uri: str | None) -> str | None:
    """Hand an ad-hoc URI to the flow through the environment, never as a parameter."""
    if uri is None:
        return None
    from dr_runbooks.mongo.connection import MongoConnInfo

    MongoConnInfo.from_uri(uri)  # a malformed URI is bad input, reported before anything starts
    os.environ[_CLI_URI] = uri
    return f"env:{_CLI_URI}"


# -- backup ---------------------------------------------------------------------------------------


@backup_app.command("mongodb")
def backup_mongodb_cmd(
    system: str | None = SystemOpt,
    uri: str | None = UriOpt,
    database: str | None = DatabaseOpt,
    repo: list[str] = typer.Option(
        [],
        "--repo",
        "-r",
        help="Repository: dr.yaml name, directory, container URL or block name (repeatable).",
    ),
    engine: str = typer.Option("auto", help="native, tools (mongodump) or auto."),
    kind: str = typer.Option("manual", help="Recorded in the manifest."),
    no_retention: bool = typer.Option(False, "--no-retention", help="Skip retention."),
    json_output: bool = JsonOpt,
) -> None:
    """Back up MongoDB databases now."""
    from dr_runbooks.mongo.connection import resolve_mongo_target

    if engine not in ("auto", "native", "tools"):
        raise BadInput(f"unknown engine {engine!r} (auto, native or tools)")
    connection = _mongo_connection(uri)
    target = resolve_mongo_target(_config(), system, connection, database, repo or None)
    from flows.backup_mongodb import backup_mongodb

    results = _run(
        lambda: backup_mongodb(
            system=target.system,
            database=database,
            connection=connection,
            repositories=repo or None,
            engine=engine,
            kind=kind,
            retention=not no_retention,
            config_path=opts.config,
        ),
        json_output,
        f"backing up {target.system}",
    )
    if json_output:
        _emit(results, True)
        return
    for r in results:
        out.print(
            f"[green]backup {r['backup_id']}[/] of {r['database']} ({r['engine']} engine, "
            f"{r['consistency']}): {r['size']:,} bytes ({r['raw_size']:,} before compression), "
            f"{r['collections']} collections, {r['documents']:,} documents → {r['repositories']}"
        )


# -- restore --------------------------------------------------------------------------------------


@restore_app.command("mongodb")
def restore_mongodb_cmd(
    system: str | None = SystemOpt,
    uri: str | None = UriOpt,
    database: str | None = DatabaseOpt,
    repo: str | None = typer.Option(None, "--repo", "-r", help="Repository to restore from."),
    backup_id: str | None = typer.Option(None, "--backup-id", help="Restore this backup."),
    before: str | None = typer.Option(
        None, "--before", help="Latest backup before TIME (ISO 8601, UTC default)."
    ),
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
    health_url: str | None = typer.Option(None, "--health-url", help="Poll until healthy."),
    drop_old: bool = typer.Option(False, "--drop-old", help="Drop the replaced collections."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_output: bool = JsonOpt,
) -> None:
    """Restore a MongoDB database (Scenario 1: database failure)."""
    from dr_runbooks.mongo.connection import resolve_mongo_target
    from dr_runbooks.repository import parse_time

    cutoff = parse_time(before) if before else None
    if backup_id and cutoff:
        raise BadInput("give --backup-id or --before, not both")
    if source_path and (backup_id or cutoff):
        raise BadInput("give --from or a backup (--backup-id, --before), not both")
    if source_path and not Path(source_path).exists():
        raise BadInput(f"no such file or directory: {source_path}")
    connection = _mongo_connection(uri)
    target = resolve_mongo_target(_config(), system, connection, database, [repo] if repo else None)
    if not target.databases:
        raise BadInput("name the database to restore (--database)")
    name = target.databases[0]
    what = f"mongodump output {source_path}"
    if not source_path:
        backup = target.primary.find(
            "mongodb", target.system, name, backup_id=backup_id, before=cutoff
        )
        backup_id = backup.id
        what = (
            f"backup [bold]{backup.id}[/] (consistent point "
            f"{backup.consistent_point:%Y-%m-%d %H:%M:%S} UTC)"
        )
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise BadInput("restore replaces a database: confirm on a terminal or pass --yes")
        err.print(
            f"Restore [bold]{name}[/] on {target.conninfo.describe('')} from {what}. Stop the "
            f"application first. The current collections are kept in {name}__pre_restore_<time>"
            + (" and then dropped." if drop_old else ".")
        )
        if not typer.confirm("Proceed?", default=False, err=True):
            raise typer.Abort()
    from flows.database_failure_mongodb import database_failure_mongodb

    result = _run(
        lambda: database_failure_mongodb(
            system=target.system,
            database=name,
            connection=connection,
            repository=repo,
            backup_id=backup_id,
            source_path=source_path,
            source_database=source_database,
            replay_oplog=not no_oplog,
            health_url=health_url,
            keep_old=not drop_old,
            dry_run=dry_run,
            approved=True,
            config_path=opts.config,
        ),
        json_output,
        f"restoring {name}",
    )
    if json_output:
        _emit(result, True)
        return
    if result.get("dry_run"):
        out.print(result["plan"])
        return
    table = Table("step", "seconds", "outcome", "detail", title=f"Restore of {name}")
    for step in result["steps"]:
        table.add_row(step["step"], f"{step['seconds']:.2f}", step["outcome"], step["detail"])
    out.print(table)
    out.print(
        f"[green]restored[/] {name} from {result['backup_id'] or result['source_path']}: RTO "
        f"achieved [bold]{human_duration(result['rto_seconds'])}[/] (objective "
        f"{human_duration(result['rto_objective_seconds'])}); "
        f"{result['oplog'].get('applied', 0)} oplog entries replayed"
    )
    if result["kept_old_database"]:
        out.print(f"the previous collections are kept in {result['kept_old_database']}")


# -- inspect --------------------------------------------------------------------------------------


def _from_manifest(backup: Any, repository: str) -> dict[str, Any]:
    """What a backup holds, from its manifest (no download)."""
    manifest = backup.manifest
    summary: dict[str, Any] = {
        **backup.summary(),
        "repository": repository,
        "server_version": manifest.server_version,
        "tool_version": manifest.tool_version,
        "consistency": manifest.consistency,
    }
    if manifest.engine == "postgres":
        summary["tables"] = [
            {"table": table, "rows": rows} for table, rows in sorted(manifest.tables.items())
        ]
        return summary
    described = manifest.details.get("collections") or {}
    collections = []
    for namespace in sorted(set(described) | set(manifest.tables)):
        info = described.get(namespace, {})
        collections.append(
            {
                "namespace": namespace,
                "type": info.get("type", "collection"),
                "documents": manifest.tables.get(namespace),
                "indexes": [str(i.get("name")) for i in info.get("indexes", [])],
                "options": info.get("options", {}),
                "uuid": info.get("uuid"),
            }
        )
    summary["collections"] = collections
    summary["oplog"] = manifest.details.get("oplog")
    return summary


def _find_backup(
    backup_id: str, repo: str | None, system: str | None, engine: str | None
) -> tuple[Any, Any]:
    from dr_runbooks.resolve import repositories_for, repository_from_spec

    config = _config()
    if repo:
        repositories = [repository_from_spec(repo, config)]
    elif system:
        repositories = repositories_for(config, config.system(system))
    else:
        repositories = [repository_from_spec(name, config) for name in config.repositories]
    if not repositories:
        raise BadInput("name a repository (--repo) or a system (--system), or give a path")
    for repository in repositories:
        if not repository.store.exists():
            continue
        for kind in [engine] if engine else ["mongodb", "postgres"]:
            for backup in repository.backups(kind, system):
                if backup.id == backup_id:
                    return repository, backup
    names = ", ".join(r.name for r in repositories)
    raise BackupNotFound(f"no backup {backup_id!r} in {names} (and no such file or directory)")


@backups_app.command("inspect")
def backups_inspect_cmd(
    id_or_path: str = typer.Argument(
        ..., help="A backup id, or mongodump output: an archive, a directory, a tar.gz."
    ),
    repo: str | None = typer.Option(None, "--repo", "-r", help="Repository holding the id."),
    system: str | None = SystemOpt,
    engine: str | None = typer.Option(None, help="postgres or mongodb (default: either)."),
    read: bool = typer.Option(
        False,
        "--read",
        help="Download a MongoDB backup and read its archive (checksum, every CRC) instead "
        "of answering from its manifest.",
    ),
    validate: bool = typer.Option(False, "--validate", help="Also decode every document."),
    json_output: bool = JsonOpt,
) -> None:
    """What a backup or a dump holds: collections with document counts, index names, options
    (for a PostgreSQL backup: its tables and row counts)."""
    from dr_runbooks.mongo import inspect_dump

    path = Path(id_or_path).expanduser()
    if path.exists():
        summary: dict[str, Any] = {"source": "path", **inspect_dump(path, validate=validate)}
    else:
        repository, backup = _find_backup(id_or_path, repo, system, engine)
        if backup.engine == "mongodb" and (read or backup.manifest is None):
            from dr_runbooks.mongo.restore import fetch_backup

            fetched = fetch_backup(repository, backup)
            try:
                summary = {
                    "source": "backup",
                    **backup.summary(),
                    "repository": repository.name,
                    **inspect_dump(fetched.path, validate=validate),
                    "location": backup.prefix,
                }
            finally:
                fetched.cleanup()
        else:
            summary = {"source": "backup", **_from_manifest(backup, repository.name)}
    if json_output:
        _emit(summary, True)
        return
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    title = summary.get("id") or summary.get("location")
    if "tables" in summary:
        table = Table("table", "rows", title=f"PostgreSQL backup {title}")
        for row in summary["tables"]:
            table.add_row(row["table"], f"{row['rows']:,}")
        out.print(table)
        return
    table = Table("namespace", "type", "documents", "indexes", "options", title=str(title))
    for c in summary.get("collections", []):
        documents = c.get("documents")
        options = ", ".join(f"{k}={v}" for k, v in (c.get("options") or {}).items())
        table.add_row(
            c["namespace"],
            c.get("type") or "",
            "" if documents is None else f"{documents:,}",
            ", ".join(c.get("indexes") or []),
            options[:80],
        )
    out.print(table)
    oplog = summary.get("oplog")
    if oplog:
        out.print(f"oplog: {oplog.get('entries')} entries")
