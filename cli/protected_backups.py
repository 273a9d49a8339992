"""``dr backups list`` and ``dr backups prune`` for the protected systems that are not
databases: file storage (``engine: blob``), configuration in git (``engine: git``) and Key
Vault secrets (``engine: keyvault``).

A listing reads each system's catalog in each of its repositories (``--repo``: in that one
instead). Pruning runs the retention step the system's backup runbook ends with
(``tasks/files.py``, ``tasks/gitconfig.py``, ``tasks/keyvault.py``), which holds the system's
lock while it works: first as a dry run, which is what is shown and confirmed, then for real
with the same clock, so the backups judged old are the ones that were shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cli.common import BLOCKS, confirm
from dr_runbooks.config import Config
from dr_runbooks.errors import BadInput
from dr_runbooks.repository import Repository
from dr_runbooks.targets import repositories_for, repository_from_spec

__all__ = ["ENGINES", "protected_prune", "protected_rows"]

#: The engines of the systems that are not databases, in the order they are listed.
ENGINES = ("blob", "git", "keyvault")

#: What the ``database`` column says for each (as ``dr status`` does).
_ROW_NAMES = {"blob": "(files)", "git": "(config)", "keyvault": "(secrets)"}


def _catalog(engine: str, repository: Repository, system: str) -> Any:
    # The engines load on demand: a listing of database backups needs none of them.
    if engine == "blob":
        from dr_runbooks.files import FileCatalog

        return FileCatalog(repository, system)
    if engine == "git":
        from dr_runbooks.gitconfig import ConfigCatalog

        return ConfigCatalog(repository, system)
    from dr_runbooks.keyvault import VaultCatalog

    return VaultCatalog(repository, system)


def _systems(loaded: Config, engine: str, system: str | None) -> list[str]:
    """dr.yaml's systems of ``engine``; ``--system``: that one, if it is of ``engine`` (one
    dr.yaml does not declare is looked for under every engine, in ``--repo``)."""
    if system:
        declared = loaded.systems.get(system)
        return [system] if declared is None or declared.engine == engine else []
    return sorted(name for name, s in loaded.systems.items() if s.engine == engine)


def _repositories(loaded: Config, system: str, repo: Repository | None) -> list[Repository]:
    return [repo] if repo is not None else repositories_for(loaded, loaded.system(system), BLOCKS)


def _existing(repo: str | None, loaded: Config) -> Repository | None:
    if repo is None:
        return None
    repository = repository_from_spec(repo, loaded, BLOCKS)
    if not repository.store.exists():
        raise BadInput(f"repository does not exist: {repository.store.location}")
    return repository


# -- dr backups list -----------------------------------------------------------------------------


def protected_rows(
    loaded: Config, engines: list[str], system: str | None, repo: str | None
) -> list[dict[str, Any]]:
    """``dr backups list`` rows of the file, configuration and Key Vault systems of
    ``engines``, newest first per system and repository; damaged ones included."""
    wanted = [(engine, name) for engine in engines for name in _systems(loaded, engine, system)]
    if not wanted:
        return []
    only = _existing(repo, loaded)
    rows = []
    for engine, name in wanted:
        for repository in _repositories(loaded, name, only):
            for backup in _catalog(engine, repository, name).backups():
                rows.append(_row(engine, backup, repository))
    return rows


def _row(engine: str, backup: Any, repository: Repository) -> dict[str, Any]:
    described = _describe(engine, backup.manifest) if backup.manifest is not None else {}
    return {
        "id": backup.id,
        "engine": engine,
        "system": backup.system,
        "database": _ROW_NAMES[engine],
        "consistent_point": backup.consistent_point.isoformat(),
        "size": described.get("size", 0),
        "count": described.get("count", 0),
        "count_of": described.get("count_of", ""),
        "kind": "DAMAGED" if backup.damaged else described["kind"],
        "state": "DAMAGED" if backup.damaged else "OK",
        "problem": backup.problem,
        # Dated by this side's clock when the backup began, never by a server's: no skew.
        "clock_skew": False,
        "legacy": False,
        "encrypted_to": described.get("encrypted_to", []),
        "repository": repository.name,
        **described.get("extra", {}),
    }


def _describe(engine: str, manifest: Any) -> dict[str, Any]:
    """Size (bytes), how many of what, kind and recipients of one readable backup."""
    if engine == "blob":
        return {
            "size": manifest.size,
            "count": manifest.blob_count,
            "count_of": "blobs",
            "kind": manifest.kind,
            "encrypted_to": manifest.recipients,
            "extra": {"containers": sorted(manifest.containers)},
        }
    if engine == "git":
        encryption = manifest.bundle.encryption
        return {
            "size": manifest.bundle.size,
            "count": len(manifest.refs),
            "count_of": "refs",
            "kind": "bundle",
            "encrypted_to": list(encryption.recipients) if encryption else [],
        }
    return {
        # Key Vault encrypts what backup_secret returns itself: there is no age layer.
        "size": sum(secret.size for secret in manifest.secrets.values()),
        "count": len(manifest.secrets),
        "count_of": "secrets",
        "kind": "secrets",
    }


# -- dr backups prune ----------------------------------------------------------------------------


def _retention_step(engine: str) -> Any:
    """The retention task of the engine's backup runbook, run here as a plain function."""
    if engine == "blob":
        from tasks.files import files_apply_retention

        return files_apply_retention.fn
    if engine == "git":
        from tasks.gitconfig import git_apply_retention

        return git_apply_retention.fn
    from tasks.keyvault import keyvault_apply_retention

    return keyvault_apply_retention.fn


def protected_prune(
    loaded: Config, system: str, engine: str, repo: str | None, dry_run: bool, yes: bool
) -> dict[str, Any]:
    """Apply the retention of a file, configuration or Key Vault system in each of its
    repositories (``repo``: in that one): what would go is shown first, and confirmed on a
    terminal unless ``yes``. Returns ``dr backups prune``'s result: ``kept`` and
    ``changes``."""
    only = _existing(repo, loaded)
    repositories = _repositories(loaded, system, only)
    for repository in repositories:
        if not repository.store.exists():
            raise BadInput(f"repository does not exist: {repository.store.location}")
    retention = _retention_step(engine)
    now = datetime.now(UTC)
    listed = {r.name: _catalog(engine, r, system).backups() for r in repositories}
    results = []
    if dry_run or not yes:
        results = [(r, retention(r, system, dry_run=True, now=now)) for r in repositories]
    if not dry_run:
        planned = [line for r, result in results for line in _deletions(r, result, listed)]
        if planned and not yes:
            confirm(
                "prune deletes backups",
                "\n".join(planned),
                f"Delete these from the backups of {system}?",
            )
        results = [(r, retention(r, system, dry_run=False, now=now)) for r in repositories]
    changes: list[dict[str, Any]] = []
    kept = 0
    for repository, result in results:
        backups = listed[repository.name]
        changes += _changes(engine, repository, result, backups)
        gone = set(result["deleted"])
        kept += sum(1 for b in backups if not b.damaged and b.id not in gone)
    return {"kept": kept, "changes": changes, "dry_run": dry_run}


def _deletions(
    repository: Repository, result: dict[str, Any], listed: dict[str, list[Any]]
) -> list[str]:
    """What a dry run would delete, a line each, for the confirmation."""
    points = {b.id: b.consistent_point for b in listed[repository.name]}
    lines = [
        f"delete {backup_id}"
        + (f" ({points[backup_id]:%Y-%m-%d %H:%M} UTC)" if backup_id in points else "")
        + f" from {repository.name}"
        for backup_id in result["deleted"]
    ]
    if result.get("content_deleted"):
        lines.append(
            f"delete {result['content_deleted']} content object(s) no kept backup references "
            f"from {repository.name}"
        )
    return lines


def _changes(
    engine: str, repository: Repository, result: dict[str, Any], backups: list[Any]
) -> list[dict[str, Any]]:
    """A retention step's result as ``dr backups prune`` rows (as the databases' are)."""
    dry_run = result["dry_run"]
    deleted = "would delete" if dry_run else "deleted"
    points = {b.id: b.consistent_point.isoformat() for b in backups}

    def change(backup_id: str, action: str, point: str = "") -> dict[str, Any]:
        return {
            "repository": repository.name,
            "backup_id": backup_id,
            "database": _ROW_NAMES[engine],
            "consistent_point": point,
            "legacy": False,
            "action": action,
        }

    rows = [change(i, deleted, points.get(i, "")) for i in result["deleted"]]
    if result.get("content_deleted"):
        count = result["content_deleted"]
        rows.append(
            {
                **change("", f"{deleted} {count} content object(s) no kept backup references"),
                "content_objects": count,
            }
        )
    rows += [
        change(prefix, ("would remove" if dry_run else "removed") + " abandoned attempt")
        for prefix in result["abandoned_removed"]
    ]
    rows += [
        change(b.id, f"left alone: damaged ({b.problem})", points[b.id])
        for b in backups
        if b.damaged
    ]
    if result.get("content_kept_because"):
        rows.append(change("", f"content left alone: {result['content_kept_because']}"))
    return rows
