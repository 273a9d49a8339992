"""Runbook: file storage failure (blobs deleted, overwritten or corrupted; a lost container).

1. Load the storage account and the backup repository.
2. Choose the backup: an id, the latest before a time, or the latest.
3. Plan: what is restored (a container, a prefix or one blob), where to (a NEW container by
   default; in place only when asked), what an in-place restore overwrites and removes.
4. Lock the target (a second restore into it refuses, naming this run, until this one
   ends); show the plan; wait for approval unless approved in advance (``dry_run``
   stops here, without the lock).
5. Restore: in place, a pre-restore backup of the container first keeps everything
   overwritten or removed; every blob's content is checked against the manifest's sha256
   before it is written.
6. Verify: every restored blob read back against the manifest (content, metadata, content
   type); nothing else under the prefix.
7. Report the RTO and RPO achieved (the plan's file-storage objective, 24 h) as a table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.config import load_config
from dr_runbooks.locks import restore_lock
from dr_runbooks.repository import parse_time
from dr_runbooks.text import human_duration
from flows import parameters as p
from flows.backup_files import ACCOUNT, FILE_REPOSITORY
from flows.runbook import Runbook, runbook
from tasks.files import (
    files_choose_backup,
    files_load_account,
    files_load_repository,
    files_plan_restore,
    files_restore,
)

__all__ = ["file_storage_failure"]


@flow(name="file-storage-failure", log_prints=True)
@runbook
def file_storage_failure(
    system: str = p.SYSTEM,
    account: str = ACCOUNT,
    repository: str = FILE_REPOSITORY,
    container: str = Field(description="The container to restore."),
    prefix: str = Field("", description="Only blobs whose names start with this."),
    blob: str = Field("", description="Only this blob (instead of a prefix)."),
    target: str = Field(
        "",
        description="Restore into this container (default: a new one, "
        "`<container>-restore-<backup id>`); it must hold nothing under the prefix.",
    ),
    in_place: bool = Field(
        False,
        description="Restore into the container itself; what it overwrites or removes is "
        "kept first in a pre-restore backup.",
    ),
    backup_id: str = p.BACKUP_ID,
    before: str = p.BEFORE,
    dry_run: bool = p.DRY_RUN,
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    incident_time: str = p.INCIDENT_TIME,
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Restore a container, a prefix or a blob to a file backup's state, and verify it."""
    with Runbook(
        "file-storage-failure", system=system, config_path=config_path, incident_time=incident_time
    ) as rb:
        cutoff = parse_time(before) if before else None
        with rb.step("load"):
            blob_account, _ = files_load_account(account)
            store = files_load_repository(repository, config_path or None)
        with rb.step("choose backup"):
            backup = files_choose_backup(store, system, backup_id or None, cutoff)
        with rb.step("plan"):
            plan = files_plan_restore(
                blob_account,
                store,
                backup,
                container,
                prefix or None,
                blob or None,
                target or None,
                in_place,
            )
        # One restore writes into a container at a time, from before the approval to the
        # end; a dry run changes nothing and takes no lock.
        locks = [] if dry_run else [restore_lock(store, "blob", system, plan.target)]
        with rb.lock(locks):
            approval = rb.gate(
                f"restore-files-{system}-{container}",
                "# File restore plan\n\n" + plan.markdown(),
                dry_run,
                approved,
                approval_timeout_seconds,
            )
            if approval is None:
                return {"dry_run": True, "plan": plan.markdown(), "backup_id": backup.id}
            with rb.step("restore and verify", detail=f"{plan.scope} → {plan.target}"):
                result = files_restore(blob_account, store, plan, approval is not None)
        return _recovered(rb, backup.consistent_point, result.summary(), approval, config_path)


def _recovered(
    rb: Runbook,
    point: datetime,
    result: dict[str, Any],
    approval: str,
    config_path: str,
) -> dict[str, Any]:
    """RTO since the run began and RPO from the incident back to the backup, against the
    plan's file-storage objectives (the skeleton's ``recovered`` measures a database's)."""
    objectives = load_config(config_path or None).objectives
    rto, rto_objective = rb.timeline.elapsed(), objectives.rto.critical
    rpo, rpo_objective = rb.incident - point, objectives.rpo.file_storage
    measured = {
        "rto_seconds": round(rto.total_seconds(), 3),
        "rto_objective_seconds": rto_objective.total_seconds(),
        "rto_met": rto <= rto_objective,
        "rpo_seconds": round(rpo.total_seconds(), 3),
        "rpo_objective_seconds": rpo_objective.total_seconds(),
        "rpo_met": rpo <= rpo_objective,
    }
    rb.measure(
        **measured,
        incident_time=rb.incident,
        resolved_at=datetime.now(UTC),
        backup={"id": result["backup_id"], "consistent_point": point},
    )
    rb.publish(
        f"file-storage-failure-{rb.system}",
        f"RTO {human_duration(rto)} (objective {human_duration(rto_objective)}), "
        f"RPO {human_duration(rpo)} (objective {human_duration(rpo_objective)})",
        table=[
            *rb.timeline.rows(),
            {
                "step": "RTO achieved",
                "seconds": measured["rto_seconds"],
                "outcome": "met" if measured["rto_met"] else "MISSED",
            },
            {
                "step": "RPO achieved",
                "seconds": measured["rpo_seconds"],
                "outcome": "met" if measured["rpo_met"] else "MISSED",
            },
        ],
    )
    return {**result, **measured, "approval": approval, "steps": rb.timeline.rows()}
