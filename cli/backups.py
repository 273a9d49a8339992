"""``dr backups list``, ``prune`` and ``inspect``: what the repositories hold.

Listing and pruning cover every engine: the databases here and in :mod:`cli.physical`, file
storage, configuration and Key Vault backups in :mod:`cli.protected_backups`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.common import BLOCKS, DatabaseOpt, JsonOpt, SystemOpt, config, confirm, emit, out
from cli.physical import (
    base_backup_rows,
    physical_prune_plans,
    physical_prune_rows,
    print_windows,
)
from cli.protected_backups import ENGINES, protected_prune, protected_rows
from dr_runbooks.config import Config
from dr_runbooks.errors import BackupNotFound, BadInput
from dr_runbooks.repository import Repository
from dr_runbooks.targets import repositories_for, repository_from_spec
from dr_runbooks.text import human_size

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Inspect the backups in a repository.")

#: The database engines; the others (file storage, configuration, Key Vault) are ENGINES.
DATABASE_ENGINES = ("postgres", "mongodb")
_ALL_ENGINES = "postgres, mongodb, blob (file storage), git (configuration) or keyvault"


def _repositories(repo: str | None, system: str | None, alternative: str = "") -> list[Repository]:
    """``--repo``, else the system's repositories, else every repository of dr.yaml."""
    loaded = config()
    if repo:
        return [repository_from_spec(repo, loaded, BLOCKS)]
    if system:
        return repositories_for(loaded, loaded.system(system), BLOCKS)
    if loaded.repositories:
        return [repository_from_spec(name, loaded, BLOCKS) for name in loaded.repositories]
    suffix = f" {alternative}" if alternative else ""
    raise BadInput(f"name a repository (--repo) or a system (--system){suffix}")


def _engines(loaded: Config, engine: str | None, system: str | None) -> list[str]:
    """What ``--engine`` asks for; without it, a system's own engine, else PostgreSQL and
    the systems that are not databases."""
    if engine is not None:
        if engine not in (*DATABASE_ENGINES, *ENGINES):
            raise BadInput(f"unknown engine {engine!r}: {_ALL_ENGINES}")
        return [engine]
    declared = loaded.systems.get(system) if system else None
    return [declared.engine] if declared is not None else ["postgres", *ENGINES]


@app.command("list")
def backups_list_cmd(
    system: str | None = SystemOpt,
    repo: str | None = typer.Option(None, "--repo", "-r", help="Repository to list."),
    engine: str | None = typer.Option(
        None,
        help=f"{_ALL_ENGINES} (default: the system's; without --system, PostgreSQL and the "
        "file storage, configuration and Key Vault systems of dr.yaml).",
    ),
    database: str | None = DatabaseOpt,
    json_output: bool = JsonOpt,
) -> None:
    """List complete backups, newest consistent point first; base backups of physical systems
    with their recovery window; file storage, configuration and Key Vault backups."""
    loaded = config()
    engines = _engines(loaded, engine, system)
    others = [e for e in engines if e in ENGINES]
    if database and others:
        if engine is not None or system in loaded.systems:
            raise BadInput(f"--database is for database backups, not {others[0]} ones")
        others = []  # asked for one database: the systems that are not databases have none
    rows = []
    for kind in (e for e in engines if e in DATABASE_ENGINES):
        rows += _database_rows(loaded, kind, system, repo, database)
    if others:
        rows += protected_rows(loaded, others, system, repo)
    for row in rows:
        row.setdefault("state", "DAMAGED" if row["problem"] else "OK")
    if json_output:
        emit(rows, True)
        return
    # Ids are what people copy: never cut one. Narrow terminals lose columns instead, the
    # least needed first, and what remains folds.
    columns = ["id", "consistent point (UTC)", "size", "kind", "database", "system", "repository"]
    widest_id = max((len(row["id"]) for row in rows), default=2)
    budget = out.width - widest_id - 3
    while len(columns) > 3 and budget < 18 * (len(columns) - 1):
        columns.pop()
    table = Table()
    for column in columns:
        if column == "id":
            table.add_column("id", no_wrap=True, min_width=widest_id)
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        point = row["consistent_point"][:19].replace("T", " ")
        counted = f", {row['count']} {row['count_of']}" if row.get("count_of") else ""
        cells = {
            "id": row["id"],
            "system": row["system"],
            "database": row["database"],
            "consistent point (UTC)": f"[red]{point} (in the future)[/]"
            if row["clock_skew"]
            else point,
            "size": human_size(row["size"]) + counted,
            "kind": f"[red]{row['kind']}[/]" if row["problem"] else row["kind"],
            "repository": row["repository"],
        }
        table.add_row(*(cells[c] for c in columns))
    out.print(table if rows else "no backups")
    print_windows(rows)
    for row in rows:
        if row["problem"]:
            out.print(f"[red]damaged[/] {row['id']}: {row['problem']}", markup=True)


def _database_rows(
    loaded: Config, engine: str, system: str | None, repo: str | None, database: str | None
) -> list[dict[str, Any]]:
    """The logical backups of ``engine`` (and base backups of physical systems)."""
    physical = (
        [system]
        if system
        else sorted(n for n, s in loaded.systems.items() if s.engine == "postgres" and s.physical)
    )
    rows = []
    for repository in _repositories(repo, system):
        if not repository.store.exists():
            if repo:
                raise BadInput(f"repository does not exist: {repository.store.location}")
            continue
        for backup in repository.backups(engine, system, database):
            rows.append({**backup.summary(), "repository": repository.name})
        if engine == "postgres" and not database:
            rows += base_backup_rows(repository, physical)
    return rows


@app.command("prune")
def backups_prune_cmd(
    system: str | None = SystemOpt,
    repo: str | None = typer.Option(None, "--repo", "-r", help="Only this repository."),
    engine: str = typer.Option(
        "postgres", help=f"{_ALL_ENGINES} (for a system dr.yaml declares: its own)."
    ),
    database: str | None = DatabaseOpt,
    include_legacy: bool = typer.Option(
        False, "--include-legacy", help="Let retention delete the plan's script backups."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_output: bool = JsonOpt,
) -> None:
    """Apply retention now: delete backups older than each repository's retention, never
    fewer than its min_keep, and attempts abandoned more than a day ago; for file storage,
    also the content objects only those backups referenced."""
    if system is None:
        raise BadInput("name the system whose backups to prune (--system)")
    loaded = config()
    declared = loaded.systems.get(system)
    engine = declared.engine if declared else engine
    if engine in ENGINES:
        if database or include_legacy:
            raise BadInput(
                f"--database and --include-legacy are for database systems, not {engine}"
            )
        result = protected_prune(loaded, system, engine, repo, dry_run, yes)
        _print_pruned(result["changes"], result["kept"], dry_run, json_output)
        return
    if engine not in DATABASE_ENGINES:
        raise BadInput(f"unknown engine {engine!r}: {_ALL_ENGINES}")
    repos = _repositories(repo, system)
    plans = []
    for repository in repos:
        if not repository.store.exists():
            raise BadInput(f"repository does not exist: {repository.store.location}")
        databases = (
            [database]
            if database
            else sorted(
                {b.database for b in repository.backups(engine, system, None, include_legacy=False)}
            )
        )
        for name in databases:
            plan = repository.plan_retention(engine, system, name, include_legacy=include_legacy)
            plans.append((repository, name, plan))
    doomed = [(r, b) for r, _, p in plans for b in p.delete]
    abandoned = [(r, prefix) for r in repos for prefix in r.abandoned(engine)]
    physical = physical_prune_plans(repos, system) if engine == "postgres" and not database else []
    physical_rows = physical_prune_rows(physical, dry_run)
    if (doomed or physical_rows) and not dry_run and not yes:
        confirm(
            "prune deletes backups",
            "\n".join(
                [
                    f"delete {backup.id} ({backup.consistent_point:%Y-%m-%d %H:%M} UTC) "
                    f"from {repository.name}"
                    for repository, backup in doomed
                ]
                + [f"{row['action']}: {row['backup_id']}" for row in physical_rows]
            ),
            f"Delete {len(doomed) + len(physical_rows)} backup(s) or WAL ranges?",
        )
    protected = [(r, b, reason) for r, _, p in plans for b, reason in p.protected]
    if not dry_run:
        for repository, backup in list(doomed):
            if reason := repository.delete_backup(backup):
                doomed.remove((repository, backup))
                protected.append((repository, backup, reason))
        for repository, prefix in abandoned:
            repository.abort(prefix)
        _apply_physical(physical, system)
    rows = [
        {
            "repository": r.name,
            "backup_id": b.id,
            "database": b.database,
            "consistent_point": b.consistent_point.isoformat(),
            "legacy": b.legacy,
            "action": "would delete" if dry_run else "deleted",
        }
        for r, b in doomed
    ]
    rows += [
        {
            "repository": r.name,
            "backup_id": prefix,
            "database": "",
            "consistent_point": "",
            "legacy": False,
            "action": ("would remove" if dry_run else "removed") + " abandoned attempt",
        }
        for r, prefix in abandoned
    ]
    rows += [
        {
            "repository": r.name,
            "backup_id": b.id,
            "database": b.database,
            "consistent_point": b.consistent_point.isoformat(),
            "legacy": b.legacy,
            "action": f"left alone: damaged ({b.problem})",
        }
        for r, _, p in plans
        for b in p.damaged
    ]
    rows += [
        {
            "repository": r.name,
            "backup_id": b.id,
            "database": b.database,
            "consistent_point": b.consistent_point.isoformat(),
            "legacy": b.legacy,
            "action": "dated in the future (clock skew): aged from when it was written",
        }
        for r, _, p in plans
        for b in p.skewed
    ]
    rows += [
        {
            "repository": r.name,
            "backup_id": b.id,
            "database": b.database,
            "consistent_point": b.consistent_point.isoformat(),
            "legacy": b.legacy,
            "action": f"left alone: the store protects it ({reason})",
        }
        for r, b, reason in protected
    ]
    rows += physical_rows
    kept = sum(len(p.keep) for _, _, p in plans) + sum(len(p.keep) for _, p in physical)
    _print_pruned(rows, kept, dry_run, json_output)


def _print_pruned(rows: list[dict[str, Any]], kept: int, dry_run: bool, json_output: bool) -> None:
    if json_output:
        emit({"kept": kept, "changes": rows, "dry_run": dry_run}, True)
        return
    for row in rows:
        what = " ".join(part for part in (row["action"], row["backup_id"]) if part)
        out.print(f"{what} in {row['repository']}", markup=False)
    out.print(f"kept {kept} backup(s)" + (" (dry run: nothing deleted)" if dry_run else ""))


def _apply_physical(plans: list[tuple[Repository, Any]], system: str) -> None:
    """Delete what physical retention planned, holding the lock of the system's base backups
    (an incremental being taken must not lose its parent meanwhile)."""
    from dr_runbooks.locks import Holder, base_backups_lock, hold
    from dr_runbooks.postgres.pitr import apply_physical_retention

    for repository, plan in plans:
        lock = base_backups_lock(repository, system)
        with hold([lock], Holder(flow="dr backups prune", run_id=None), timeout_seconds=60):
            apply_physical_retention(repository, plan)


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
    repositories = _repositories(repo, system, "or give a path")
    for repository in repositories:
        if not repository.store.exists():
            continue
        for kind in [engine] if engine else ["mongodb", "postgres"]:
            for backup in repository.backups(kind, system):
                if backup.id == backup_id:
                    return repository, backup
    names = ", ".join(r.name for r in repositories)
    raise BackupNotFound(f"no backup {backup_id!r} in {names} (and no such file or directory)")


@app.command("inspect")
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

    # The archive readers load on demand: listing and pruning need none of them.
    from dr_runbooks.mongo import inspect_dump
    from dr_runbooks.mongo.fetch import fetch_backup

    path = Path(id_or_path).expanduser()
    if path.exists():
        summary: dict[str, Any] = {"source": "path", **inspect_dump(path, validate=validate)}
    else:
        repository, backup = _find_backup(id_or_path, repo, system, engine)
        if backup.engine == "mongodb" and (read or backup.manifest is None):
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
        emit(summary, True)
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
