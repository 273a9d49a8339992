"""The steps the monthly drill and the quarterly recovery test share, each calling one task
per action: the drill on embedded defaults, staging the sandbox, the recovery with the real
runbook, the checks, the teardown, and the reports kept with the run record."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dr_runbooks.config import Config
from dr_runbooks.drillreport import (
    drill_markdown,
    objective_rows,
    review,
    step_rows,
    trend,
    trend_png,
)
from dr_runbooks.drills import DrillPlan
from dr_runbooks.errors import DRError, VerificationFailed
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.runs import RunRecord
from dr_runbooks.targets import repository_from_spec
from dr_runbooks.text import first_line, human_duration
from flows.backup_postgres import backup_postgres
from flows.database_failure import database_failure
from flows.runbook import Runbook
from tasks._runtime import logger
from tasks.drill import (
    drill_embedded_plan,
    drill_integration_test,
    drill_write_report,
    postgres_count_markers,
    postgres_seed_application,
    postgres_start_embedded,
    postgres_teardown_sandbox,
    postgres_write_markers,
)
from tasks.health import http_wait_healthy
from tasks.postgres import postgres_drop_database, postgres_fetch_backup, postgres_restore
from tasks.repository import repository_choose_backup

__all__ = [
    "EMBEDDED_DSN",
    "embedded_setup",
    "ended",
    "publish_drill_report",
    "recover",
    "stage",
    "teardown",
    "verify",
]

#: The drill's throwaway DSN reaches the runbooks through the environment, never a parameter.
EMBEDDED_DSN = "DR_DRILL_DSN"
#: The real database-failure runbook, under a name of its own: a drill's recovery is not an
#: incident, so the escalation automations (which follow database-failure) leave it alone.
_DRILL_RECOVERY = "database-failure-drill"


def _dsn(conninfo: ConnInfo) -> str:
    host = conninfo.host or ""
    return f"postgresql://{conninfo.user or 'postgres'}@/postgres?host={host}" + (
        f"&port={conninfo.port}" if conninfo.port else ""
    )


def embedded_setup(rb: Runbook, rows: int, workdir: str, config_path: str) -> DrillPlan:
    """A throwaway PostgreSQL with an application database, backed up into the work
    directory's repository: the drill on embedded defaults has its own production."""
    base = Path(workdir).absolute()
    repository = str(base / "repo")
    with rb.step("start throwaway PostgreSQL"):
        conninfo = postgres_start_embedded()
    os.environ[EMBEDDED_DSN] = _dsn(conninfo)
    with rb.step("seed application database"):
        seeded = postgres_seed_application(conninfo, "app", rows)
    with rb.step("backup"):
        [made] = backup_postgres(
            system="drill",
            database="app",
            connection=f"env:{EMBEDDED_DSN}",
            repositories=[repository],
            kind="drill",
            retention=False,
        )
    rb.note(seeded_rows=sum(seeded.values()), backup_bytes=made["size"])
    repo = repository_from_spec(repository, Config())
    rb.record_into(repo)
    return drill_embedded_plan(conninfo, f"env:{EMBEDDED_DSN}", "app", repo, config_path)


def stage(rb: Runbook, plan: DrillPlan, markers: int) -> dict[str, dict[str, Any]]:
    """Make each database's live copy and write marker rows after its backup: in a sandbox,
    the newest backup restored there (what production held at that point); on embedded
    defaults and in production, the database as it is."""
    staged: dict[str, dict[str, Any]] = {}
    for db in plan.databases:
        if plan.target == "sandbox" and not plan.embedded:
            with rb.step(f"stage {db.label} in the sandbox", detail=db.live) as step:
                backup = repository_choose_backup(db.repository, "postgres", db.system, db.database)
                postgres_teardown_sandbox(db.server, [db.live])
                fetched = postgres_fetch_backup(db.repository, backup)
                try:
                    postgres_restore(db.server, fetched, db.live)
                finally:
                    fetched.cleanup()
                step.detail = f"{db.live} from backup {backup.id}"
        with rb.step(f"write marker rows after the backup into {db.live}"):
            written = postgres_write_markers(db.server, db.live, markers)
        staged[db.label] = {"markers_written": len(written)}
    return staged


def simulate_failure(rb: Runbook, plan: DrillPlan) -> datetime:
    """Drop each sandbox database (in production nothing is dropped: the recovery replaces
    the live database and keeps it as ``<db>__pre_restore_<ts>``)."""
    with rb.step("simulate the failure") as step:
        if plan.target == "sandbox":
            for db in plan.databases:
                postgres_drop_database(db.server, db.live)
            step.detail = "dropped " + ", ".join(d.live for d in plan.databases)
        else:
            step.detail = "production: the recovery replaces each database, keeping the old one"
    return datetime.now(UTC)


def recover(
    rb: Runbook, plan: DrillPlan, failed_at: datetime, config_path: str
) -> dict[str, dict[str, Any]]:
    """The database-failure runbook for each database, pre-approved, from the real
    repository into the sandbox (or production)."""
    recovery = database_failure.with_options(name=_DRILL_RECOVERY)
    results: dict[str, dict[str, Any]] = {}
    for db in plan.databases:
        with rb.step(f"recover {db.label} (database-failure runbook)", detail=db.live):
            results[db.label] = recovery(
                system=db.system,
                database=db.database,
                connection=plan.connection,
                repository=db.repository.store.location if plan.embedded else "",
                restore_as=db.live if db.live != db.database else "",
                approved=True,
                keep_old=plan.target == "production",
                incident_time=failed_at.isoformat(),
                severity="Low",  # a drill, not an incident
                config_path=config_path,
            )
    return results


def verify(
    rb: Runbook,
    plan: DrillPlan,
    config: Config,
    staged: dict[str, dict[str, Any]],
    recoveries: dict[str, dict[str, Any]],
    health_timeout_seconds: int,
    run_integration_test: bool,
) -> datetime:
    """Health checks, the restore verification, the marker rows, and the integration test;
    every finding is recorded, then the first failure fails the drill."""
    problems: list[str] = []
    checks: list[dict[str, Any]] = []
    for url in plan.health_urls:
        with rb.step("health check", detail=url):
            try:
                http_wait_healthy(url, health_timeout_seconds)
                checks.append({"check": f"health {url}", "outcome": "ok", "detail": ""})
            except DRError as exc:
                checks.append({"check": f"health {url}", "outcome": "FAILED", "detail": str(exc)})
                problems.append(first_line(exc))
    lost_total = written_total = 0
    before_restored: int | None = 0 if plan.embedded else None
    for db in plan.databases:
        verification = recoveries[db.label].get("verification") or {}
        checks.append(
            {
                "check": f"restore verification {db.label}",
                "outcome": "ok",
                "detail": f"{verification.get('tables')} tables, {verification.get('rows')} "
                "rows match the backup's manifest",
            }
        )
        with rb.step(f"count marker rows in {db.live}"):
            found = postgres_count_markers(db.server, db.live)
        written = staged[db.label]["markers_written"]
        lost = written - found["after_backup"]
        staged[db.label].update(markers_lost=lost, markers_found=found["after_backup"])
        written_total, lost_total = written_total + written, lost_total + lost
        if before_restored is not None:
            before_restored += found["before_backup"]
        outcome = "ok" if lost == written else "FAILED"
        if lost != written:
            problems.append(
                f"{db.label}: {found['after_backup']} marker row(s) written after the backup "
                "are still there: the recovery did not restore that backup"
            )
        checks.append(
            {
                "check": f"data-loss check {db.label}",
                "outcome": outcome,
                "detail": f"{written} written after the backup, {lost} lost",
            }
        )
    test = config.drills.integration_test
    if test is not None and run_integration_test:
        with rb.step("integration test", detail=" ".join(test.command)):
            ran = drill_integration_test(
                test,
                str(config.base_dir),
                {"DR_DRILL_DATABASES": ",".join(f"{d.label}={d.live}" for d in plan.databases)},
            )
        rb.note(integration_test=ran)
        checks.append(
            {
                "check": "integration test",
                "outcome": "ok" if ran["passed"] else "FAILED",
                "detail": f"exit {ran['exit_status']}"
                + (" (timed out)" if ran["timed_out"] else ""),
            }
        )
        if not ran["passed"]:
            problems.append(f"the integration test {ran['command']} exited {ran['exit_status']}")
    verified_at = datetime.now(UTC)
    rb.note(checks=checks)
    rb.measure(
        data_lost={
            "rows_written": written_total,
            "rows_lost": lost_total,
            "rows_before_backup_restored": before_restored,
            "proof": "marker rows written after the backup, counted after the restore",
        }
    )
    with rb.step("verdict") as step:
        if problems:
            raise VerificationFailed("; ".join(problems))
        step.detail = f"{len(checks)} checks passed"
    return verified_at


def document(
    rb: Runbook,
    plan: DrillPlan,
    recoveries: dict[str, dict[str, Any]],
    staged: dict[str, dict[str, Any]],
    failed_at: datetime,
    verified_at: datetime,
) -> dict[str, Any]:
    """RTO (failure injected → service verified) and RPO (failure time minus the restored
    backup's consistent point, the worst database) against the objectives."""
    tiers = {d.tier for d in plan.databases}
    rto_objective = min(plan.objectives.rto_for(t) for t in tiers)
    rpo_objective = plan.objectives.rpo.database
    rto = verified_at - failed_at
    rows, rpos = [], []
    for db in plan.databases:
        result = recoveries[db.label]
        point = datetime.fromisoformat(result["consistent_point"])
        rpo = failed_at - point
        rpos.append(rpo)
        rows.append(
            {
                "database": db.label,
                "recovered as": db.live,
                "backup": result["backup_id"],
                "consistent point": point.isoformat(timespec="seconds"),
                "RPO": human_duration(rpo),
                "restore took": human_duration(result["rto_seconds"]),
                "markers lost": f"{staged[db.label]['markers_lost']} of "
                f"{staged[db.label]['markers_written']}",
            }
        )
    rpo = max(rpos)
    measured = {
        "rto_seconds": round(rto.total_seconds(), 3),
        "rto_objective_seconds": rto_objective.total_seconds(),
        "rto_met": rto <= rto_objective,
        "rpo_seconds": round(rpo.total_seconds(), 3),
        "rpo_objective_seconds": rpo_objective.total_seconds(),
        "rpo_met": rpo <= rpo_objective,
        "incident_time": failed_at.isoformat(),
        "resolved_at": verified_at.isoformat(),
        "backup": {
            "id": ", ".join(r["backup"] for r in rows),
            "consistent_point": min(r["consistent point"] for r in rows),
            "repository": ", ".join(sorted({d.repository.name for d in plan.databases})),
        },
    }
    rb.measure(**measured)
    rb.note(databases=rows)
    return measured


def teardown(rb: Runbook, plan: DrillPlan) -> None:
    """Remove every sandbox database the run made or left, also after a failure; in
    production nothing is removed (the kept ``__pre_restore`` copies are the team's)."""
    with rb.step("tear down the sandbox") as step:
        if plan.target != "sandbox" or plan.sandbox is None:
            step.detail = "production: nothing to remove; the replaced databases are kept"
            return
        dropped = []
        for db in plan.databases:
            dropped += postgres_teardown_sandbox(db.server, [db.live])
        step.detail = "removed " + (", ".join(dropped) or "nothing")


def publish_drill_report(
    rb: Runbook, key: str, workdir: str | None, failure: BaseException | None
) -> dict[str, Any]:
    """The review, the step and objective tables, the trend of the last drills (a table and
    a PNG) and the markdown report: artifacts, and kept beside the run record. Never raises:
    a drill that failed (``failure``) still gets its report."""
    try:
        record = ended(rb.record(), failure)
        if record is None:
            return {}
        earlier = rb.history(record.kind)
        findings = review(record, earlier, _slow_factor(rb))
        rb.note(review=findings)
        record.results["review"] = findings
        series = trend([*earlier, record])
        chart_where = rb.attach("trend.png", trend_png(series)) if series else None
        chart = f"{record.id}.trend.png" if chart_where else None
        markdown = drill_markdown(record, series, chart)
        report_where = rb.attach("report.md", markdown.encode())
        rb.publish(f"{key}-steps", f"{record.flow}: steps and durations", table=step_rows(record))
        rb.publish(f"{key}-objectives", f"{record.flow}: RTO and RPO", table=objective_rows(record))
        if series:
            rb.publish(f"{key}-trend", f"The last {len(series)} drills", table=series)
        rb.publish(key, f"{record.flow} report", markdown=markdown)
        local = None
        if workdir:
            reports = str(Path(workdir).absolute() / "reports")
            local = drill_write_report(reports, f"{record.id}.md", markdown.encode())
            if chart_where:
                drill_write_report(reports, chart or "", trend_png(series))
        return {"report": local or report_where, "chart": chart_where, "review": findings}
    except Exception as exc:  # the drill's own outcome is what must surface
        logger().error("the drill report could not be made: %s", first_line(exc))
        return {}


def ended(record: RunRecord | None, failure: BaseException | None) -> RunRecord | None:
    """A copy of the record as it will end, for the report made just before it does."""
    if record is None:
        return None
    if failure is None:
        record.status = "completed"
    else:
        failed = record.failed_at()
        record.status, record.error = "failed", first_line(failure)
        record.failed_step = failed.name if failed else None
    record.finished = datetime.now(UTC)
    return record


def _slow_factor(rb: Runbook) -> float:
    from dr_runbooks.config import load_config

    try:
        return load_config(rb.config_path).drills.slow_step
    except DRError:
        return 1.5
