"""Encryption on the command line: ``--identity`` for the commands that read backups, the
identity sources kept as secrets, and ``dr backups rekey``."""

from __future__ import annotations

from typing import Any

import typer

from cli.common import (
    BLOCKS,
    SECRETS,
    DatabaseOpt,
    IdentityOpt,
    JsonOpt,
    SystemOpt,
    config,
    confirm,
    emit,
    out,
    use_identity,
)
from dr_runbooks.crypto import parse_recipients
from dr_runbooks.errors import BadInput, DRError
from dr_runbooks.repository import Repository
from dr_runbooks.targets import repositories_for, repository_from_spec
from dr_runbooks.text import first_line

__all__ = ["rekey_cmd"]


def _repositories(repo: str | None, system: str | None) -> list[Repository]:
    loaded = config()
    if repo:
        return [repository_from_spec(repo, loaded, BLOCKS, secrets=SECRETS)]
    if system:
        return repositories_for(loaded, loaded.system(system), BLOCKS, SECRETS)
    if loaded.repositories:
        return [
            repository_from_spec(name, loaded, BLOCKS, secrets=SECRETS)
            for name in loaded.repositories
        ]
    raise BadInput("name a repository (--repo) or a system (--system)")


def rekey_cmd(
    system: str | None = SystemOpt,
    repo: str | None = typer.Option(None, "--repo", "-r", help="Only this repository."),
    database: str | None = DatabaseOpt,
    engine: list[str] = typer.Option(
        [], "--engine", help="postgres or mongodb (default: both; a system's own)."
    ),
    to: list[str] = typer.Option(
        [],
        "--to",
        help="New recipient (age1…; repeatable); default: each repository's encrypt_to.",
    ),
    identity: str | None = IdentityOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be rekeyed."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_output: bool = JsonOpt,
) -> None:
    """Encrypt kept backups again to a new set of recipients (key rotation); plain ones get
    encrypted. Old objects are deleted only after the new ones verify."""
    from dr_runbooks.locks import Holder, backups_lock, hold
    from dr_runbooks.rekey import rekey_backup

    use_identity(identity)
    recipients = parse_recipients(to, "--to")
    declared = config().systems.get(system) if system else None
    engines = engine or ([declared.engine] if declared else ["postgres", "mongodb"])
    work: list[tuple[Repository, tuple[str, ...], Any]] = []
    for repository in _repositories(repo, system):
        wanted = recipients or repository.encrypt_to
        if not wanted:
            raise BadInput(
                f"{repository.name}: no recipients (give --to, or encrypt_to in dr.yaml)"
            )
        if not repository.store.exists():
            raise BadInput(f"repository does not exist: {repository.store.location}")
        for name in engines:
            for backup in repository.backups(name, system, database, include_legacy=False):
                work.append((repository, wanted, backup))
    if work and not dry_run and not yes:
        confirm(
            "rekey rewrites backups",
            "\n".join(f"rekey {b.id} in {r.name} to {len(w)} recipient(s)" for r, w, b in work),
            f"Rekey {len(work)} backup(s)?",
        )
    rows: list[dict[str, Any]] = []
    holder = Holder(flow="dr backups rekey", run_id=None)
    for repository, wanted, backup in work:
        row = {"repository": repository.name, "backup_id": backup.id, "recipients": list(wanted)}
        if backup.damaged:
            rows.append({**row, "outcome": "skipped", "detail": f"damaged: {backup.problem}"})
            continue
        if dry_run:
            rows.append({**row, "outcome": "would rekey", "detail": ""})
            continue
        lock = backups_lock(repository, backup.engine, backup.system, backup.database)
        try:
            with hold([lock], holder, timeout_seconds=60):
                result = rekey_backup(repository, backup, wanted)
            rows.append({**row, "outcome": result.outcome, "detail": result.detail})
        except DRError as exc:
            rows.append({**row, "outcome": "failed", "detail": first_line(exc)})
    failed = [r for r in rows if r["outcome"] == "failed"]
    if json_output:
        emit({"ok": not failed, "backups": rows, "dry_run": dry_run}, True)
    else:
        for r in rows:
            style = "red" if r["outcome"] == "failed" else "green"
            out.print(
                f"[{style}]{r['outcome']}[/] {r['backup_id']} in {r['repository']}: {r['detail']}"
            )
        if not rows:
            out.print("no backups to rekey")
    if failed:
        raise typer.Exit(1)
