"""``dr backup postgres`` and ``dr backup mongodb``: take a backup now."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from cli.common import (
    BLOCKS,
    DatabaseOpt,
    DsnOpt,
    EncryptToOpt,
    JsonOpt,
    SystemOpt,
    UriOpt,
    config,
    emit,
    handoff,
    handoff_repositories,
    opts,
    out,
    run_flow,
)
from cli.physical import physical_backup
from dr_runbooks.errors import BadInput
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.targets import resolve_target
from flows.parameters import given

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Take a backup now.")

RepoOpt = typer.Option(
    [],
    "--repo",
    "-r",
    help="Repository: dr.yaml name, directory, container URL or block name (repeatable).",
)
KindOpt = typer.Option("manual", help="Recorded in the manifest.")
NoRetentionOpt = typer.Option(False, "--no-retention", help="Skip retention.")


@dataclass(frozen=True)
class _Request:
    """The options both backup commands take."""

    system: str | None
    database: str | None
    repo: list[str]
    kind: str
    no_retention: bool
    json_output: bool
    encrypt_to: tuple[str, ...] = ()


def _backup(
    system_engine: str,
    flow: Callable[..., list[dict[str, Any]]],
    connection: str | None,
    request: _Request,
    **engine_options: Any,
) -> list[dict[str, Any]] | None:
    """Resolve the target first (bad input fails before anything starts), run the backup flow
    for the system's resolved name, and return its rows for printing (None: printed as JSON)."""
    repositories = handoff_repositories(request.repo) or None
    target = resolve_target(
        config(),
        system_engine,
        request.system,
        connection,
        request.database,
        repositories,
        BLOCKS,
        encrypt_to=list(request.encrypt_to),
    )
    results = run_flow(
        lambda: flow(
            **given(
                system=target.system,
                database=request.database,
                connection=connection,
                repositories=repositories,
                kind=request.kind,
                retention=not request.no_retention,
                config_path=opts.config,
                encrypt_to=list(request.encrypt_to) or None,
                **engine_options,
            )
        ),
        request.json_output,
        f"backing up {target.system}",
    )
    emit(results, request.json_output)
    return None if request.json_output else results


def _print_retention(row: dict[str, Any]) -> None:
    for pruned in row["retention"]:
        gone = pruned.get("deleted") or pruned.get("would_delete") or []
        if gone:
            out.print(f"  retention in {pruned['repository']}: deleted {', '.join(gone)}")


@app.command("postgres")
def backup_postgres_cmd(
    system: str | None = SystemOpt,
    dsn: str | None = DsnOpt,
    database: str | None = DatabaseOpt,
    repo: list[str] = RepoOpt,
    kind: str = KindOpt,
    no_retention: bool = NoRetentionOpt,
    json_output: bool = JsonOpt,
    encrypt_to: list[str] = EncryptToOpt,
    physical: bool = typer.Option(
        False,
        "--physical",
        help="A base backup of the whole cluster (pg_basebackup; WAL archived by dr wal push) "
        "for point-in-time recovery, instead of a dump.",
    ),
    incremental: bool = typer.Option(
        False,
        "--incremental",
        help="With --physical: against the newest base backup (PostgreSQL 17+, "
        "summarize_wal = on).",
    ),
) -> None:
    """Back up PostgreSQL databases now (a dump), or the whole cluster (--physical)."""
    from flows.backup_postgres import backup_postgres

    if incremental and not physical:
        raise BadInput("--incremental is for --physical base backups")
    if physical:
        if database or kind != "manual":
            raise BadInput(
                "--physical backs up the whole cluster: --database and --kind do not apply"
            )
        physical_backup(system, dsn, repo, incremental, not no_retention, encrypt_to, json_output)
        return
    connection = handoff("DR_CLI_DSN", dsn, ConnInfo.from_dsn)
    request = _Request(system, database, repo, kind, no_retention, json_output, tuple(encrypt_to))
    rows = _backup("postgres", backup_postgres, connection, request)
    for r in rows or []:
        out.print(
            f"[green]backup {r['backup_id']}[/] of {r['database']}: {r['size']:,} bytes "
            f"({r['raw_size']:,} before compression), {r['tables']} tables, "
            f"{r['rows']:,} rows → {r['repositories']}"
        )
        _print_retention(r)


@app.command("mongodb")
def backup_mongodb_cmd(
    system: str | None = SystemOpt,
    uri: str | None = UriOpt,
    database: str | None = DatabaseOpt,
    repo: list[str] = RepoOpt,
    engine: str = typer.Option("auto", help="native, tools (mongodump) or auto."),
    kind: str = KindOpt,
    no_retention: bool = NoRetentionOpt,
    json_output: bool = JsonOpt,
    encrypt_to: list[str] = EncryptToOpt,
) -> None:
    """Back up MongoDB databases now."""
    from flows.backup_mongodb import backup_mongodb

    if engine not in ("auto", "native", "tools"):
        raise BadInput(f"unknown engine {engine!r} (auto, native or tools)")
    connection = handoff("DR_CLI_MONGODB_URI", uri, MongoConnInfo.from_uri)
    request = _Request(system, database, repo, kind, no_retention, json_output, tuple(encrypt_to))
    rows = _backup("mongodb", backup_mongodb, connection, request, engine=engine)
    for r in rows or []:
        out.print(
            f"[green]backup {r['backup_id']}[/] of {r['database']} ({r['engine']} engine, "
            f"{r['consistency']}): {r['size']:,} bytes ({r['raw_size']:,} before compression), "
            f"{r['collections']} collections, {r['documents']:,} documents → {r['repositories']}"
        )
        _print_retention(r)
