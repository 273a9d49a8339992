"""Runbook: Scenario 4, security breach.

The plan's immediate actions, shown as one plan and approved before anything changes:

1. Isolate: a ``DenyAll`` rule at priority 100, inbound and outbound, in each network
   security group (a rule already holding priority 100 is recorded and moved aside), the
   services stopped by the configured command; the rules are read back to prove it.
2. Preserve evidence: the configured log and data paths as ``.tar.gz`` archives with a
   sha256 manifest in the evidence repository (a legal hold where the account allows it),
   and a chain-of-custody record (who, when, what, the hashes) kept apart from them.
3. Assess: the configuration repository's changes since the last known-good commit.
4. Restore from the last clean backup before ``breach_time``: the restore runbook for each
   database, or a point-in-time restore of the site's flexible server into a new server.
5. Rotate secrets: PostgreSQL roles (``ALTER ROLE … PASSWORD``, a SCRAM verifier of a new
   password from ``secrets``), MongoDB users (``updateUser``), Key Vault secrets (a new
   version each) and the Prefect blocks that hold them. New values are never logged, shown or
   put in an artifact.
6. Resume after a second approval (or in a later run, ``resume="later"``): the DenyAll rules
   removed, the displaced rules put back, the services started.
7. Audit: a pass/fail checklist: isolation held until approval, old passwords refused, new
   ones accepted, evidence hashes verify on download, every block updated.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from pydantic import Field

from dr_runbooks.errors import VerificationFailed
from dr_runbooks.repository import parse_time
from dr_runbooks.text import markdown_table
from flows import azure_parameters as az_p
from flows import breach_steps as steps
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.azure import azure_load_system
from tasks.breach import dr_load_breach, prefect_run_launcher

__all__ = ["security_breach"]


@flow(name="security-breach", log_prints=True)
@runbook
def security_breach(
    system: str = az_p.SYSTEM,
    breach_time: str = Field(
        "",
        description="When the breach began (ISO 8601; UTC when no zone is given): the restore "
        "takes the last backup before it.",
    ),
    known_good: str = Field(
        "",
        description="Last known-good commit of the configuration repository (default: "
        "`known_good` in dr.yaml).",
    ),
    restore: bool = Field(True, description="Restore the last clean backup (step 4)."),
    rotate: bool = Field(True, description="Rotate the configured secrets (step 5)."),
    resume: Literal["ask", "later", "now"] = Field(
        "ask",
        description="Lifting the isolation (step 6): `ask` pauses for a second approval; "
        "`later` stops isolated, for a later run to resume; `now` resumes without asking "
        "(drills only).",
    ),
    restore_timeout_seconds: int = az_p.RESTORE_TIMEOUT,
    dry_run: bool = p.DRY_RUN,
    approved: bool = p.APPROVED,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    incident_time: str = p.INCIDENT_TIME,
    severity: p.Severity = p.severity("Critical"),
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Contain a security breach, keep the evidence, restore, rotate secrets, resume, audit
    (the plan's Scenario 4)."""
    with Runbook(
        "security-breach", system=system, config_path=config_path, incident_time=incident_time
    ) as rb:
        if breach_time:
            parse_time(breach_time)  # a malformed time is refused before anything happens
        with rb.step("load"):
            az = azure_load_system(system, config_path)
            setup = dr_load_breach(az)
        with steps.locked(rb, az, dry_run):
            br = steps.open_breach(rb, az, setup, dry_run)
            try:
                steps.check_restore_time(br, breach_time, restore)
                plan = steps.plan(br, breach_time, restore, rotate)
                approval = rb.gate(
                    f"breach-{system}", plan, dry_run, approved, approval_timeout_seconds
                )
            except BaseException as exc:
                steps.abandon_if_untouched(br, exc)
                raise
            if approval is None:
                return {"dry_run": True, "plan": plan, "system": system}
            # 1. Isolate, and prove it.
            steps.isolate(rb, br)
            # 2. Preserve evidence, the custody record apart.
            launched_by = prefect_run_launcher()
            steps.preserve_evidence(rb, br, launched_by, breach_time)
            # 3. Assess the configuration.
            changes = steps.assess_changes(rb, br, known_good)
            # 4. Restore the last clean backup.
            restored = steps.restore_clean(
                rb, br, breach_time, restore, restore_timeout_seconds, config_path, incident_time
            )
            # 5. Rotate secrets.
            steps.rotate_secrets(rb, br, rotate)
            # 6. Resume after a second approval (or leave it to a later run).
            resumed = None
            if resume != "later":
                resumed = rb.gate(
                    f"breach-{system}-resume",
                    steps.resume_plan(br),
                    False,
                    resume == "now",
                    approval_timeout_seconds,
                )
                steps.lift_isolation(rb, br)
            # 7. Audit.
            checklist = steps.audit(rb, br, lifted=resumed is not None)
            failed = [row for row in checklist if row["result"] == "FAIL"]
            rb.publish(
                f"breach-{system}-audit",
                f"security breach of {system}: audit {len(checklist) - len(failed)}/"
                f"{len(checklist)} passed",
                table=checklist,
            )
            rb.publish(
                f"breach-{system}-report",
                f"security breach of {system}: changes and configuration assessment",
                markdown=_report(br, changes, restored),
            )
            record = steps.finish(br) if resumed is not None else None
            if failed:
                raise VerificationFailed(
                    f"the breach response's audit failed: {', '.join(r['check'] for r in failed)}"
                )
            return {
                "system": system,
                "isolated": resumed is None,
                "approvals": [approval, resumed],
                "launched_by": launched_by,
                "audit": checklist,
                "configuration_changes": changes,
                "restored": restored,
                "changes": [f"{c.when:%Y-%m-%d %H:%M:%S} {c.what}" for c in br.record.changes],
                "cleanup": [c.cleanup for c in br.record.changes if c.cleanup],
                "evidence": br.record.result("evidence"),
                "record": record,
                "steps": rb.timeline.rows(),
            }


def _report(br: steps.Breach, changes: dict[str, Any] | None, restored: list[Any]) -> str:
    text = f"# Security breach response: {br.system}\n\n## Changes\n\n"
    text += "".join(f"- {c.when:%H:%M:%S} {c.what}\n" for c in br.record.changes) or "none\n"
    if changes is not None:
        text += (
            f"\n## Configuration since {changes['known_good']} (HEAD {changes['head']})\n\n"
            + markdown_table(changes["commits"])
            + "\n### Files\n\n"
            + markdown_table(changes["files"])
            + "\n### Not committed\n\n"
            + "".join(f"- `{line}`\n" for line in changes["uncommitted"])
            + ("" if changes["uncommitted"] else "none\n")
        )
    if restored:
        text += "\n## Restored\n\n" + markdown_table(restored)
    return text
