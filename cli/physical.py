"""Physical backups and point-in-time recovery from the command line::

    dr backup postgres --physical [--incremental] --system app-db [--dsn …] [--repo …]
    dr restore postgres --at 2026-11-28T14:36:00Z --pgdata /srv/pitr [--start --port 5499]
    dr restore postgres --at-lsn 0/3000148 | --at-name before_migration | --at latest …

A base backup runs the ``backup-postgres-physical`` flow, like every other backup. A
point-in-time restore runs the engine in this process, without Prefect: a restore of the whole
cluster must not wait for an orchestrator (which may be what the disaster took), and the data
directory it builds is new, so there is nothing to approve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.common import (
    BLOCKS,
    SECRETS,
    config,
    emit,
    handoff,
    handoff_repositories,
    opts,
    out,
    run_flow,
)
from dr_runbooks.config import find_config
from dr_runbooks.errors import BadInput
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.targets import repositories_for, repository_from_spec, resolve_target
from dr_runbooks.text import human_duration, human_size
from flows.parameters import given

__all__ = ["PITR", "physical_backup", "restore_at"]

PITR = "Point-in-time recovery (physical systems)"

AtOpt = typer.Option(
    None,
    "--at",
    help="Recover the whole cluster to TIME (ISO 8601, UTC without a zone), or 'latest', "
    "into a new --pgdata.",
    rich_help_panel=PITR,
)
AtLsnOpt = typer.Option(None, "--at-lsn", help="Recover to an LSN.", rich_help_panel=PITR)
AtNameOpt = typer.Option(
    None, "--at-name", help="Recover to a named restore point.", rich_help_panel=PITR
)
PgdataOpt = typer.Option(
    None, "--pgdata", help="The new cluster's data directory.", rich_help_panel=PITR
)
StartOpt = typer.Option(
    False, "--start", help="Start it and wait for the promotion.", rich_help_panel=PITR
)
PortOpt = typer.Option(None, "--port", help="Its port on 127.0.0.1.", rich_help_panel=PITR)
OsUserOpt = typer.Option(
    None,
    "--os-user",
    help="OS user that owns and runs it (as root; default embedded_postgres).",
    rich_help_panel=PITR,
)
TimelineOpt = typer.Option(None, "--timeline", help="Default: the newest.", rich_help_panel=PITR)
ArchiveOpt = typer.Option(
    False,
    "--archive",
    help="Keep archive_mode: the new cluster archives into the system.",
    rich_help_panel=PITR,
)


def physical_backup(
    system: str | None,
    dsn: str | None,
    repo: list[str],
    incremental: bool,
    retention: bool,
    encrypt_to: list[str],
    json_output: bool,
) -> dict[str, Any]:
    """A base backup of the whole cluster into the system's repositories (the
    ``backup-postgres-physical`` flow)."""
    from flows.backup_postgres_physical import backup_postgres_physical

    connection = handoff("DR_CLI_DSN", dsn, ConnInfo.from_dsn)
    repositories = handoff_repositories(repo) or None
    target = resolve_target(
        config(), "postgres", system, connection, "postgres", repositories, BLOCKS
    )
    result = run_flow(
        lambda: backup_postgres_physical(
            **given(
                system=target.system,
                connection=connection,
                repositories=repositories,
                incremental=incremental,
                retention=retention,
                encrypt_to=encrypt_to or None,
                config_path=opts.config,
            )
        ),
        json_output,
        f"base backup of {target.system}",
    )
    if json_output:
        emit(result, True)
        return result
    out.print(
        f"[green]base backup {result['backup_id']}[/] ({result['kind']}) of {result['system']}: "
        f"{human_size(result['size'])}, timeline {result['timeline']}, {result['start_lsn']} "
        f"to {result['end_lsn']} → {result['repositories']}"
    )
    if result["incremental_refused"]:
        out.print(f"  a full backup, not an incremental one: {result['incremental_refused']}")
    for pruned in result["retention"]:
        if pruned["delete"] or pruned["wal_delete"]:
            out.print(
                f"  retention in {pruned['repository']}: deleted {', '.join(pruned['delete'])}"
                f" and {pruned['wal_delete']} WAL files"
            )
    return result


def _restore_repository(system: str | None, repo: str | None) -> tuple[str, Repository, list[str]]:
    """The system, its repository (whose identity sources decrypt an encrypted one: a Prefect
    Secret block or Key Vault too), and the ``--repo`` specs restore_command will use."""
    loaded = config()
    if not system:
        raise BadInput("name the system (--system): its folder in the repository")
    if repo:
        return system, repository_from_spec(repo, loaded, BLOCKS, secrets=SECRETS), [repo]
    declared = loaded.system(system)
    repository = repositories_for(loaded, declared, BLOCKS, SECRETS)[0]
    return system, repository, [declared.repositories[0]]


def restore_at(
    system: str | None,
    repo: str | None,
    at: str | None,
    at_lsn: str | None,
    at_name: str | None,
    pgdata: str | None,
    start: bool,
    port: int | None,
    os_user: str | None,
    timeline: int | None,
    archive: bool,
    json_output: bool,
) -> dict[str, Any]:
    """Point-in-time recovery into a new cluster in ``pgdata``, started on ``port`` if asked."""
    from dr_runbooks.postgres.cluster import restore_to_point
    from dr_runbooks.postgres.pitr import RecoveryTarget

    target = RecoveryTarget.parse(at, at_lsn, at_name)
    if not pgdata:
        raise BadInput("name the new cluster's data directory (--pgdata)")
    if start and port is None:
        raise BadInput("--start needs --port")
    name, repository, specs = _restore_repository(system, repo)
    config_path = opts.config or (str(found) if (found := find_config()) else None)
    restored = run_flow(
        lambda: restore_to_point(
            repository,
            name,
            target,
            Path(pgdata),
            repo_specs=specs,
            config_path=str(Path(config_path).absolute()) if config_path else None,
            start=start,
            port=port,
            os_user=os_user,
            timeline=timeline,
            archive=archive,
        ),
        json_output,
        f"point-in-time recovery of {name}",
    )
    result = restored.summary()
    if json_output:
        emit(result, True)
        return result
    table = Table("step", "seconds", title=f"Point-in-time recovery of {name}")
    for step in result["steps"]:
        table.add_row(step["step"], f"{step['seconds']:.2f}")
    out.print(table)
    total = sum(step["seconds"] for step in result["steps"])
    backups = ", ".join(result["backups"])
    if restored.started:
        out.print(
            f"[green]recovered[/] {name} to [bold]{result['reached_time'] or 'its base backup'}"
            f"[/] (LSN {result['reached_lsn']}, target {result['target']}) from {backups} in "
            f"{human_duration(total)}: {pgdata}, listening on 127.0.0.1:{port}, timeline "
            f"{result['new_timeline']}"
        )
    else:
        runner = f"runuser -u {restored.os_user} -- " if restored.os_user else ""
        out.print(
            f"[green]ready[/]: {pgdata} recovers {name} to {result['target']} from {backups} "
            f"when started: {runner}pg_ctl -D {pgdata} start"
        )
    for note in result["notes"]:
        out.print(f"  note: {note}")
    return result


def base_backup_rows(repository: Repository, systems: list[str]) -> list[dict[str, Any]]:
    """``dr backups list`` rows for the base backups of ``systems`` in ``repository``, each with
    its system's recovery window there."""
    from dr_runbooks.postgres.basebackup import base_backups
    from dr_runbooks.postgres.pitr import recovery_window

    rows = []
    for system in systems:
        found = base_backups(repository, system)
        if not found:
            continue
        window = recovery_window(repository, system, precise=False).summary()
        for backup in found:
            summary = backup.summary()
            rows.append(
                {
                    **summary,
                    "database": "(cluster)",
                    "consistent_point": summary["finished"],
                    "clock_skew": False,
                    "problem": None,
                    "repository": repository.name,
                    "recovery_window": window,
                }
            )
    return rows


def print_windows(rows: list[dict[str, Any]]) -> None:
    """One line per system and repository: what it can be recovered to, to the second."""
    seen = set()
    for row in rows:
        window = row.get("recovery_window")
        if not window or (row["system"], row["repository"]) in seen:
            continue
        seen.add((row["system"], row["repository"]))
        earliest = (window["earliest"] or "-")[:19].replace("T", " ")
        newest = (window["newest_wal_archived"] or "-")[:19].replace("T", " ")
        line = (
            f"{row['system']} in {row['repository']}: recoverable to any second from {earliest} "
            f"UTC to the newest archived WAL ({window['newest_wal']}, archived {newest} UTC)"
        )
        if window["gap"]:
            line += f"; [red]WAL {window['gap']} is missing[/]: recovery cannot pass it"
        out.print(line)


def physical_prune_plans(
    repositories: list[Repository], system: str
) -> list[tuple[Repository, Any]]:
    """Physical retention of ``system`` in each repository that holds base backups of it."""
    from datetime import UTC, datetime

    from dr_runbooks.postgres.basebackup import base_backups
    from dr_runbooks.postgres.pitr import plan_physical_retention

    now = datetime.now(UTC)
    return [
        (repository, plan_physical_retention(repository, system, now))
        for repository in repositories
        if base_backups(repository, system)
    ]


def physical_prune_rows(plans: list[tuple[Repository, Any]], dry_run: bool) -> list[dict[str, Any]]:
    """What physical retention deletes (or would), as ``dr backups prune`` rows."""
    rows = []
    for repository, plan in plans:
        for backup in plan.delete:
            rows.append(
                {
                    "repository": repository.name,
                    "backup_id": backup.id,
                    "database": "(cluster)",
                    "consistent_point": backup.finished.isoformat(),
                    "legacy": False,
                    "action": f"{'would delete' if dry_run else 'deleted'} base backup "
                    f"({backup.kind})",
                }
            )
        summary = plan.summary()
        if summary["wal_delete"]:
            rows.append(
                {
                    "repository": repository.name,
                    "backup_id": f"{summary['wal_delete_first']}..{summary['wal_delete_last']}",
                    "database": "(cluster)",
                    "consistent_point": "",
                    "legacy": False,
                    "action": f"{'would delete' if dry_run else 'deleted'} "
                    f"{summary['wal_delete']} WAL files ({human_size(summary['wal_delete_bytes'])})"
                    f", older than every kept base backup (kept from {summary['wal_kept_from']})",
                }
            )
    return rows
