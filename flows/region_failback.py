"""Runbook: return a system from its DR region to the primary, once the primary is healthy.

The failover's steps in the other direction, after a check of the primary:

0. The primary is healthy again: its subscription and resource group answer, its flexible
   server (if it has one) is Ready, its own health endpoints answer.
1. Preflight: the DR server's backups are read; the DNS records (now pointing at the DR site)
   are captured and stored as the rollback plan before anything changes.
2. Show the plan and wait for approval (``dry_run`` stops here); deploy the primary's
   infrastructure (its template or command; incremental, so what stands is kept).
3. Bring the data written in the DR region back: a geo-restore of the DR server into the
   primary region (``target_server``: the primary's old server must be deleted first, or
   another name given), or the restore runbook into the system's own server.
4. Approval before the DNS cutover.
5. DNS cutover: the A records back to the primary's addresses.
6. Verify the primary's health endpoints; if they fail, the records go back to the DR site.
7. Report: the RTO, every change, what to clean up (the DR resources that now stand idle).
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

__all__ = ["region_failback"]


@flow(name="region-failback", log_prints=True)
@runbook
def region_failback(
    system: str = az_p.SYSTEM,
    target_server: str = az_p.TARGET_SERVER,
    restore_time: str = Field(
        "",
        description="Bring the DR database back as of this time (ISO 8601; default: its "
        "latest backup).",
    ),
    health_timeout_seconds: int = p.HEALTH_TIMEOUT,
    restore_timeout_seconds: int = az_p.RESTORE_TIMEOUT,
    dry_run: bool = p.DRY_RUN,
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    incident_time: str = p.INCIDENT_TIME,
    severity: p.Severity = p.severity("Medium"),
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Return a system from its DR region to the primary region."""
    with Runbook(
        "region-failback", system=system, config_path=config_path, incident_time=incident_time
    ) as rb:
        with rb.step("load"):
            az = azure_load_system(system, config_path)
        # 0. The primary is healthy again.
        steps.check_site_healthy(rb, az.primary, health_timeout_seconds)
        with steps.locked(rb, az, dry_run):
            sw = steps.open_switch(rb, "failback", az, dry_run)
            try:
                # 1. Preflight, the rollback plan stored before anything changes.
                steps.preflight(rb, sw, target_server)
                # 2. The plan and its approval; then the primary's infrastructure.
                plan = steps.activation_plan(sw, restore_time)
                approval = rb.gate(
                    f"failback-{system}", plan, dry_run, approved, approval_timeout_seconds
                )
                if approval is None:
                    return {"dry_run": True, "plan": plan, "system": system}
                steps.deploy_site(rb, sw)
                # 3. The data written in the DR region, back in the primary region.
                point = steps.restore_database(
                    rb, sw, restore_time, restore_timeout_seconds, config_path, incident_time
                )
                # 4. Approval before the DNS cutover.
                cutover = rb.gate(
                    f"failback-{system}-dns",
                    steps.cutover_plan(sw),
                    dry_run,
                    approved,
                    approval_timeout_seconds,
                )
            except BaseException as exc:
                steps.abandon_if_untouched(sw, exc)
                raise
            # 5. DNS cutover; 6. verify, putting the records back if the primary is not healthy.
            dns = steps.cut_over_and_verify(rb, sw, health_timeout_seconds)
            # 7. Report.
            return steps.report(rb, sw, point, dns, [approval, cutover or ""])
