"""Runbook: Key Vault restore (secrets deleted or damaged, or a vault lost).

1. Load the vault's client (the system's vault, or a recovery vault in the same
   subscription and geography) and the backup repository.
2. Choose the backup: an id, or the newest.
3. Lock the target vault (a second restore into it refuses, naming this run, until this
   one ends); show the plan (the secrets, the target vault, the limit); wait for approval
   unless approved in advance (``dry_run`` stops here, without the lock).
4. Restore with ``restore_secret_backup`` each secret the target does not hold, its checksum
   checked first. A secret the vault holds (or holds deleted) is reported, never
   overwritten; one it holds with exactly the backup's versions (restored by a run killed
   half-way) is reported as already there.
5. A table artifact: restored and left alone, with why.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.keyvault import LIMIT
from dr_runbooks.locks import restore_lock
from flows import parameters as p
from flows.backup_keyvault import SITE
from flows.runbook import Runbook, runbook
from tasks.keyvault import keyvault_choose_backup, keyvault_load, keyvault_restore

__all__ = ["keyvault_restore_flow"]


@flow(name="keyvault-restore", log_prints=True)
@runbook
def keyvault_restore_flow(
    system: str = p.SYSTEM,
    secrets: list[str] = Field([], description="Secrets to restore (default: every one)."),
    vault_url: str = Field(
        "",
        description="Restore into this vault (default: the system's own); it must be in the "
        "same subscription and geography.",
    ),
    site: str = SITE,
    backup_id: str = p.BACKUP_ID,
    dry_run: bool = p.DRY_RUN,
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Restore a vault backup's secrets into the same or a recovery vault, never overwriting."""
    with Runbook("keyvault-restore", system=system, config_path=config_path) as rb:
        with rb.step("load"):
            client, _, store = keyvault_load(system, site, config_path or None, vault_url)
        with rb.step("choose backup") as step:
            backup = keyvault_choose_backup(store, system, backup_id or None)
            step.detail = backup.id
        assert backup.manifest is not None
        names = list(secrets) or sorted(backup.manifest.secrets)
        # One restore writes into a vault at a time, from before the approval to the end; a
        # dry run changes nothing and takes no lock.
        locks = [] if dry_run else [restore_lock(store, "keyvault", system, str(client.vault_url))]
        with rb.lock(locks):
            approval = rb.gate(
                f"keyvault-restore-{system}",
                f"# Key Vault restore plan\n\nRestore {len(names)} secret(s) of backup "
                f"`{backup.id}` into `{client.vault_url}` ({LIMIT}). A secret the vault already "
                "holds, or holds deleted, is reported and left alone.\n\n"
                + "\n".join(f"- `{name}`" for name in names),
                dry_run,
                approved,
                approval_timeout_seconds,
            )
            if approval is None:
                return {"dry_run": True, "backup_id": backup.id, "secrets": names}
            with rb.step("restore") as step:
                outcome = keyvault_restore(client, store, backup, list(secrets))
                step.detail = (
                    f"{len(outcome.restored)} restored, {len(outcome.already)} already there as "
                    f"in the backup, {len(outcome.existing)} left alone"
                )
        rb.publish(
            f"keyvault-restore-{system}",
            f"Vault backup {backup.id} of {system} restored into {outcome.vault}",
            table=[{"secret": n, "outcome": "restored"} for n in outcome.restored]
            + [{"secret": n, "outcome": "already there as in the backup"} for n in outcome.already]
            + [{"secret": n, "outcome": f"left alone: {w}"} for n, w in outcome.existing.items()],
        )
        return {**outcome.as_dict(), "backup_id": backup.id, "approval": approval}
