"""Runbook: configuration restore (the git repository holding configuration is lost or wrong).

1. Load the backup repository.
2. Choose the backup: an id, or the newest.
3. Clone it into a new path (a bare mirror, every ref as recorded): needs no approval, it
   changes nothing that exists.
4. To push the refs to a new remote: show the plan and wait for approval unless approved in
   advance (``dry_run`` stops here). The remote must hold no refs but the backup's own, as
   the backup has them (what a restore killed half-way pushed); nothing is ever forced.
   The path and the remote are locked meanwhile: a second restore into either refuses.
5. Verify: the clone's (and the remote's) refs are exactly the manifest's.
6. Report the refs restored and where, as a table.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import BadInput
from dr_runbooks.locks import restore_lock
from flows import parameters as p
from flows.backup_config import CONFIG_REPOSITORY
from flows.runbook import Runbook, runbook
from tasks.gitconfig import (
    git_choose_backup,
    git_load_repository,
    git_load_target,
    git_push,
    git_restore_clone,
)

__all__ = ["config_restore"]


@flow(name="config-restore", log_prints=True)
@runbook
def config_restore(
    system: str = p.SYSTEM,
    repository: str = CONFIG_REPOSITORY,
    path: str = Field("", description="Clone the backup into this new (or empty) directory."),
    push_to: str = Field(
        "", description="Push the backup's refs to this new, empty git repository (URL or path)."
    ),
    push_password_env: str = Field(
        "", description="Environment variable holding the push target's password or token."
    ),
    backup_id: str = p.BACKUP_ID,
    dry_run: bool = p.DRY_RUN,
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Restore a configuration backup by cloning it, or by pushing it to a new remote."""
    if not path and not push_to:
        raise BadInput("say where to restore: a path to clone into, or a remote to push to")
    with Runbook("config-restore", system=system, config_path=config_path) as rb:
        with rb.step("load"):
            store = git_load_repository(system, repository, config_path or None)
            target = git_load_target(push_to, push_password_env) if push_to else None
        with rb.step("choose backup") as step:
            backup = git_choose_backup(store, system, backup_id or None)
            step.detail = backup.id
        assert backup.manifest is not None
        result: dict[str, Any] = {"system": system, "backup_id": backup.id}
        # One restore writes into a path or a remote at a time, until it ends (a dry run pushes
        # nothing and locks no remote).
        targets = [os.path.abspath(path)] if path else []
        targets += [str(target)] if target is not None and not dry_run else []
        with rb.lock([restore_lock(store, "git", system, where) for where in targets]):
            if path:
                with rb.step("clone and verify", detail=path):
                    result["cloned"] = {
                        "path": path,
                        "refs": git_restore_clone(store, backup, path),
                    }
            if target is not None:
                refs = "\n".join(
                    f"- `{name}` → `{obj[:12]}`"
                    for name, obj in sorted(backup.manifest.refs.items())
                )
                approval = rb.gate(
                    f"config-restore-{system}",
                    f"# Configuration restore plan\n\nPush backup `{backup.id}` of {system} "
                    f"(taken {backup.consistent_point:%Y-%m-%d %H:%M} UTC) to `{target}`, which "
                    f"must hold no refs but these. Nothing is forced.\n\n{refs}\n",
                    dry_run,
                    approved,
                    approval_timeout_seconds,
                )
                if approval is None:
                    return {**result, "dry_run": True}
                with rb.step("push and verify", detail=str(target)):
                    pushed = git_push(store, backup, target)
                result["pushed"] = {"remote": str(target), "refs": pushed, "approval": approval}
        rb.publish(
            f"config-restore-{system}",
            f"Configuration backup {backup.id} of {system} restored",
            table=[*rb.timeline.rows()],
        )
        return {**result, "steps": rb.timeline.rows()}
