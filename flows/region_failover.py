"""Runbook: Scenario 2, Azure region failure: fail a system over to its DR region.

The plan's steps, each shown before it changes anything:

1. Preflight: the DR subscription and resource group answer (the group is created if
   missing); the source server's geo-backup and its latest restorable time are read; the DNS
   records (addresses and TTLs) are captured and stored in the records repository as the
   rollback plan, before anything changes.
2. Show the plan (the template's what-if, the restore, the records) and wait for approval
   (``dry_run`` stops here); then deploy the DR infrastructure: the template, or the
   command (``./deploy.sh --environment prod --region westus2``) with its output in the logs.
3. Restore the database in the DR region: a geo-restore of the flexible server (a chosen
   ``restore_time``, or the latest geo-backup), or the restore runbook from a repository the
   DR region can read.
4. Approval before the DNS cutover, showing each record's change.
5. DNS cutover: the A records to the DR addresses, each only if unchanged since step 1.
6. Verify the DR site's health endpoints with backoff; if they fail, the records are put
   back from the stored plan, the run says so loudly, and fails.
7. Report: the RTO against the objective, every change made, and what to clean up later.

Started again after a crash, it resumes from its durable record: what is done is not done
again, and once the cutover has begun the stored rollback plan is the one used.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import Field

from flows import azure_parameters as az_p
from flows import parameters as p
from flows import site_steps as steps
from flows.runbook import Runbook, runbook
from tasks.azure import azure_load_system

__all__ = ["region_failover"]


@flow(name="region-failover", log_prints=True)
@runbook
def region_failover(
    system: str = az_p.SYSTEM,
    restore_time: str = Field(
        "",
        description="Restore the database to this time (ISO 8601; UTC when no zone is "
        "given). Default: the latest geo-backup.",
    ),
    target_server: str = az_p.TARGET_SERVER,
    health_timeout_seconds: int = p.HEALTH_TIMEOUT,
    restore_timeout_seconds: int = az_p.RESTORE_TIMEOUT,
    dry_run: bool = p.DRY_RUN,
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    incident_time: str = p.INCIDENT_TIME,
    severity: p.Severity = p.severity("Critical"),
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Fail a system over to its DR region (the plan's Scenario 2, Azure region failure)."""
    with Runbook(
        "region-failover", system=system, config_path=config_path, incident_time=incident_time
    ) as rb:
        with rb.step("load"):
            az = azure_load_system(system, config_path)
        with steps.locked(rb, az, dry_run):
            sw = steps.open_switch(rb, "failover", az, dry_run)
            try:
                # 1. Preflight, the rollback plan stored before anything changes.
                steps.preflight(rb, sw, target_server)
                # 2. The plan and its approval; then the DR infrastructure.
                plan = steps.activation_plan(sw, restore_time)
                approval = rb.gate(
                    f"failover-{system}", plan, dry_run, approved, approval_timeout_seconds
                )
                if approval is None:
                    return {"dry_run": True, "plan": plan, "system": system}
                steps.deploy_site(rb, sw)
                # 3. The database in the DR region.
                point = steps.restore_database(
                    rb, sw, restore_time, restore_timeout_seconds, config_path, incident_time
                )
                # 4. Approval before the DNS cutover.
                cutover = rb.gate(
                    f"failover-{system}-dns",
                    steps.cutover_plan(sw),
                    dry_run,
                    approved,
                    approval_timeout_seconds,
                )
            except BaseException as exc:
                steps.abandon_if_untouched(sw, exc)
                raise
            # 5. DNS cutover; 6. verify, putting the records back if the site is not healthy.
            dns = steps.cut_over_and_verify(rb, sw, health_timeout_seconds)
            # 7. Report.
            return steps.report(rb, sw, point, dns, [approval, cutover or ""])
