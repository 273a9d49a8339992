"""Runbook: configuration backup (the plan's configuration in git, RPO 0).

Runs every 15 minutes and costs one request while nothing changes.

1. Load the system's git repository (its credential from the environment variable dr.yaml
   names) and the backup repository.
2. Check: the remote's refs (``git ls-remote``) against the newest bundle's manifest. When
   they match, record the check and stop: the RPO achieved is 0.
3. Back up: fetch the refs into a scratch repository, ``git bundle create --all``, store the
   bundle with its sha256, the manifest (the commit of every ref) last.
4. Verify the new backup: the stored bytes' checksum, ``git bundle verify``, its refs.
5. Retention: backups past the repository's retention go (its ``min_keep`` newest stay).
6. A table artifact: the refs added, moved and deleted since the previous bundle.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import ChecksumMismatch
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.gitconfig import (
    git_apply_retention,
    git_backup,
    git_compare,
    git_load_remote,
    git_load_repository,
    git_record_check,
    git_verify,
)

__all__ = ["CONFIG_REPOSITORY", "backup_config"]

CONFIG_REPOSITORY: Any = Field(
    "",
    description="Where the backups go: a dr.yaml repository name, a directory, a container "
    "URL or a repository block's name (default: the system's first repository).",
)


@flow(name="backup-config", log_prints=True)
@runbook
def backup_config(
    system: str = p.SYSTEM,
    repository: str = CONFIG_REPOSITORY,
    retention: bool = p.RETENTION,
    retention_dry_run: bool = p.RETENTION_DRY_RUN,
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Bundle a configuration repository when its refs changed since the newest bundle."""
    with Runbook("backup-config", system=system, config_path=config_path) as rb:
        with rb.step("load"):
            remote, patterns = git_load_remote(system, config_path or None)
            store = git_load_repository(system, repository, config_path or None)
        with rb.step("check") as step:
            drift = git_compare(remote, store, system, patterns)
            step.detail = drift.describe()
            if drift.same and drift.newest is not None:
                git_record_check(store, system, drift.newest)
        if drift.same and drift.newest is not None:
            return {"system": system, "changed": False, "backup_id": drift.newest.id}
        with rb.step("back up"):
            manifest = git_backup(remote, store, system, patterns, drift.head)
        with rb.step("verify bundle"):
            record = git_verify(store, system, manifest.id)
            if not record["ok"]:
                raise ChecksumMismatch(
                    f"configuration backup {manifest.id}: {record['problems'][0]}"
                )
        pruned = None
        if retention:
            with rb.step("retention"):
                pruned = git_apply_retention(store, system, retention_dry_run)
        rows = [
            {"change": change, "ref": ref}
            for change, refs in (
                ("new", drift.added),
                ("moved", drift.changed),
                ("deleted", drift.removed),
            )
            for ref in refs
        ]
        rb.publish(
            f"backup-config-{system}",
            f"Configuration backup {manifest.id} of {system}: {len(manifest.refs)} refs; "
            f"{drift.describe()}",
            table=rows or None,
        )
        return {
            "system": system,
            "changed": True,
            "backup_id": manifest.id,
            "consistent_point": manifest.consistent_point.isoformat(),
            "refs": manifest.refs,
            "changes": rows,
            "retention": pruned,
        }
