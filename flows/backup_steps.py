"""The steps every backup runbook takes around its dump: clearing abandoned attempts before,
copying to the other repositories and applying retention after, and the result it reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dr_runbooks.repository import Manifest
from dr_runbooks.targets import Target
from dr_runbooks.text import human_size
from flows.runbook import Runbook
from tasks.repository import (
    repository_apply_retention,
    repository_copy_backup,
    repository_remove_abandoned,
    repository_remove_leftovers,
)

__all__ = [
    "Retention",
    "backup_row",
    "clear_abandoned",
    "copy_and_prune",
    "publish_backups",
    "remove_leftovers",
]


@dataclass(frozen=True)
class Retention:
    """How a backup run applies retention afterwards (from its parameters)."""

    enabled: bool = True
    dry_run: bool = False
    include_legacy: bool = False
    #: Keep backups of ``kind`` only this many days (hourly backups); None: the repository's.
    days: int | None = None
    kind: str | None = None


def remove_leftovers(rb: Runbook, target: Target, database: str) -> None:
    """With the database's backups lock held, every unfinished attempt of it is a leftover (a
    failed first attempt of this run's dump included). Housekeeping never fails the backup:
    what cannot be removed now (storage down) goes with the next run."""
    with rb.step(f"remove leftovers of {database}") as step:
        state = repository_remove_leftovers(
            target.primary, target.engine, target.system, database, return_state=True
        )
        if state.is_failed():
            step.outcome = "skipped"
            step.detail = "could not remove them now; the next run will"


def clear_abandoned(rb: Runbook, target: Target) -> None:
    """Remove attempts abandoned more than a day ago, in every repository of the target."""
    with rb.step("clean up abandoned attempts"):
        for repository in target.repositories:
            repository_remove_abandoned(repository, target.engine)


def copy_and_prune(
    rb: Runbook, target: Target, manifest: Manifest, retention: Retention
) -> tuple[list[str], list[dict[str, Any]]]:
    """Copy a committed backup to the target's other repositories, then apply each
    repository's retention; return where it was copied and what retention did."""
    database = manifest.database
    with rb.step(f"copy {database}"):
        copies = [
            repository_copy_backup(target.primary, manifest, repository)
            for repository in target.repositories[1:]
        ]
    pruned: list[dict[str, Any]] = []
    if retention.enabled:
        with rb.step(f"retention {database}"):
            for repository in target.repositories:
                pruned.append(
                    repository_apply_retention(
                        repository,
                        target.engine,
                        target.system,
                        database,
                        dry_run=retention.dry_run,
                        include_legacy=retention.include_legacy,
                        retention_days=retention.days,
                        kind=retention.kind if retention.days is not None else None,
                    )
                )
    return copies, pruned


def backup_row(
    target: Target,
    manifest: Manifest,
    copies: list[str],
    pruned: list[dict[str, Any]],
    **details: Any,
) -> dict[str, Any]:
    """One backup taken, as the run returns it: the common fields and the engine's ``details``."""
    data = manifest.objects[0]
    return {
        "system": target.system,
        "database": manifest.database,
        "backup_id": manifest.id,
        "consistent_point": manifest.consistent_point.isoformat(),
        "size": data.size,
        "raw_size": data.raw_size,
        "encrypted_to": manifest.recipients,
        **details,
        "repositories": ", ".join([target.primary.name, *copies]),
        "retention": pruned,
    }


def publish_backups(rb: Runbook, title: str, results: list[dict[str, Any]]) -> None:
    """The backups taken, as a table artifact (retention details stay in the run's result)."""
    rb.publish(f"{rb.name}-{rb.system}", title, table=[_for_people(r) for r in results])


def _for_people(row: dict[str, Any]) -> dict[str, Any]:
    """A result row as the table shows it: sizes in words, the point to the second."""
    shown = {k: v for k, v in row.items() if k not in ("retention", "size", "raw_size")}
    shown["consistent point (UTC)"] = row["consistent_point"][:19].replace("T", " ")
    del shown["consistent_point"]
    shown["stored"] = human_size(row["size"])
    if row.get("raw_size"):
        shown["before compression"] = human_size(row["raw_size"])
    return shown
