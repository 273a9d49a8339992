"""Runbook: the plan's monthly DR drill (first Saturday, 06:00 UTC), made safe.

1. Announce: a notification to the configured channel: what, how long, where to watch.
2. Simulate the failure in the sandbox dr.yaml declares, never in production: each protected
   database's newest backup is restored there as its live copy, marker rows are written
   after that backup, then the copy is dropped. One drill per sandbox at a time (a lock that
   dies with the run). With ``target: production`` the plan's literal drill runs on the
   production servers, only after an approval in the Prefect UI, and the report says so.
3. Execute recovery: the database-failure runbook for each database, as a subflow, from the
   real repositories into the sandbox.
4. Verify: the sandbox's health URLs, the restore verification (rows against the backup's
   manifest, the SQL checks), the marker rows, and the integration test command with its
   timeout (its exit status and the end of its output are recorded).
5. Document: the RTO achieved (failure injected → service verified) and the RPO achieved
   (failure time minus the restored backup's consistent point) against the objectives; the
   marker rows written after the backup must all be missing: the RPO proven by data.
6. Review: what failed or was slow, with the step; the report with the last 12 drills' RTO
   and RPO (a chart beside it in the repository), kept with the run record.
7. Tear the sandbox down: always, also after a failure.

On embedded defaults (``make drill``, ``dr drill`` with no sandbox in dr.yaml) a throwaway
PostgreSQL seeded with an application database and backed up into ``<workdir>/repo`` is both
production and the sandbox.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from pydantic import Field

from dr_runbooks.config import load_config
from dr_runbooks.drills import DrillPlan
from dr_runbooks.sandbox import sandbox_lock
from dr_runbooks.text import human_duration
from flows import drill_steps as steps
from flows import parameters as p
from flows.runbook import Runbook, runbook
from tasks.drill import drill_announce, drill_plan, drill_system

__all__ = ["monthly_drill"]


@flow(name="monthly-drill", log_prints=True)
@runbook
def monthly_drill(
    systems: list[str] = Field(
        [],
        description="Systems to drill (default: dr.yaml's `drills.systems`, else every "
        "PostgreSQL system).",
    ),
    target: Literal["", "sandbox", "production"] = Field(
        "",
        description="Where the failure is simulated (default: dr.yaml's `sandbox.target`): "
        "`sandbox`, or `production` for the plan's literal drill, which waits for an approval "
        "in the UI.",
    ),
    embedded: bool = Field(
        False,
        description="Drill on embedded defaults: a throwaway PostgreSQL with a seeded "
        "application database is production and sandbox (what `make drill` runs).",
    ),
    severity: p.Severity = p.severity("Low"),
    markers: int = Field(
        0,
        ge=0,
        le=1000,
        description="Marker rows written after the backup (0: dr.yaml's `drills.markers`).",
    ),
    integration_test: bool = Field(
        True, description="Run dr.yaml's `drills.integration_test` command after the recovery."
    ),
    rows: int = Field(
        100_000, ge=100, description="Embedded defaults: rows in the seeded application database."
    ),
    workdir: str = Field(
        ".dr", description="Embedded defaults: where the repository and the reports go."
    ),
    health_timeout_seconds: int = p.HEALTH_TIMEOUT,
    approval_timeout_seconds: int = p.APPROVAL_TIMEOUT,
    lock_timeout_seconds: int = Field(
        0,
        ge=0,
        description="How long to wait, in seconds, while another drill uses the sandbox "
        "(0: fail at once naming it).",
    ),
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """The monthly DR drill: break a sandbox copy, recover it with the real runbooks, prove
    the RTO and RPO."""
    first = "drill" if embedded else drill_system(config_path, systems)
    with Runbook("monthly-drill", system=first, config_path=config_path) as rb:
        with rb.step("load"):
            config = load_config(config_path)
            plan = None if embedded else drill_plan(config_path, systems, target)
        # 1. Announce.
        with rb.step("announce") as step:
            where = "embedded defaults" if plan is None else plan.describe()
            channel = drill_announce(
                config_path,
                f"DR drill starting: {rb.name} in {where}",
                [
                    f"The monthly DR drill starts now in {where}"
                    + (f": {', '.join(d.label for d in plan.databases)}" if plan else "")
                    + ".",
                    f"Expected duration: {human_duration(config.drills.expected_duration)}.",
                    "Production is not touched."
                    if plan is None or plan.target == "sandbox"
                    else "This drill runs on PRODUCTION once approved in the Prefect UI.",
                ],
            )
            step.detail = f"on {channel}" if channel else "no channel in dr.yaml"
        if plan is None:
            plan = steps.embedded_setup(rb, rows, workdir, config_path)
        rb.system = ", ".join(d.label for d in plan.databases)
        rb.record_into(plan.databases[0].repository)
        rb.note(target=plan.target, sandbox=plan.describe())
        if plan.target == "production":
            approval = rb.gate(
                "drill-on-production",
                _production_plan(plan.describe(), [d.label for d in plan.databases]),
                False,
                False,  # never approved in advance: a person decides in the UI
                approval_timeout_seconds,
            )
            rb.note(approval=approval)
        locks = [sandbox_lock(plan.sandbox)] if plan.sandbox is not None else []
        try:
            with rb.lock(locks, lock_timeout_seconds):
                try:
                    # 2. Simulate the failure.
                    staged = steps.stage(rb, plan, markers or config.drills.markers)
                    failed_at = steps.simulate_failure(rb, plan)
                    # 3. Execute recovery.
                    recoveries = steps.recover(rb, plan, failed_at, config_path)
                    # 4. Verify.
                    verified_at = steps.verify(
                        rb,
                        plan,
                        config,
                        staged,
                        recoveries,
                        health_timeout_seconds,
                        integration_test,
                    )
                    # 5. Document.
                    measured = steps.document(rb, plan, recoveries, staged, failed_at, verified_at)
                finally:
                    # 7. Tear the sandbox down, whatever happened.
                    steps.teardown(rb, plan)
        except BaseException as exc:
            # 6. Review and report: a failed drill is reported too.
            steps.publish_drill_report(rb, "monthly-drill", _local(plan, workdir), exc)
            raise
        report = steps.publish_drill_report(rb, "monthly-drill", _local(plan, workdir), None)
        return {
            "verified": True,
            "record": rb.record_id,
            "target": plan.target,
            **measured,
            "markers_written_after_backup": sum(s["markers_written"] for s in staged.values()),
            "markers_lost": sum(s["markers_lost"] for s in staged.values()),
            "databases": {
                k: {**v, "backup_id": recoveries[k]["backup_id"]} for k, v in staged.items()
            },
            "steps": rb.timeline.rows(),
            **report,
        }


def _local(plan: DrillPlan, workdir: str) -> str | None:
    """Where a drill on embedded defaults also writes its report (``<workdir>/reports``)."""
    return workdir if plan.embedded else None


def _production_plan(where: str, databases: list[str]) -> str:
    return (
        f"# DR drill on {where}\n\n"
        "The plan's literal drill. For each database below, marker rows are written, then the "
        "database-failure runbook **replaces the live database with its newest backup**; the "
        "current database is kept as `<db>__pre_restore_<ts>` (writes since the backup are "
        "there, and only there, until merged back). The report will say this drill ran on "
        "production.\n\n" + "".join(f"- {d}\n" for d in databases)
    )
