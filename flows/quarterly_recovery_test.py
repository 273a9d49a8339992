"""Runbook: the plan's quarterly full recovery test (last Saturday of March, June, September
and December, 06:00 UTC).

1. Prepare a clean sandbox: the one dr.yaml declares, checked apart from production, locked
   for this run, and emptied of anything an earlier run left.
2. Restore from backups only: every PostgreSQL database of every protected system (its newest
   backup, checksums verified, restored into the sandbox), every MongoDB database (restored
   into the MongoDB sandbox and compared with its manifest), and the configuration: each
   ``engine: git`` system's newest bundle cloned into the test's work directory (checksum,
   refs as in the manifest), where the commit this run's record names must be, with a valid
   dr.yaml at it. Without a git system in dr.yaml, the configuration comes from the checkout
   dr.yaml was read from, at that commit, and the report says it was not a backup.
3. Verify all: rows against each backup's manifest and the SQL checks; the sandbox's health
   URLs.
4. Performance: the configured query set (a pgbench script), or ``pgbench --select-only``
   for a fixed time, on the restored system, compared with the previous quarter's record.
5. Report: what was restored, verified and measured, as artifacts and with the run record.
6. Tear the sandbox down: always, also after a failure (a step of its own, reported).
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.config import Config, load_config
from dr_runbooks.drillreport import recovery_test_markdown, review, step_rows
from dr_runbooks.errors import ConfigError, DRError, RestoreVerificationFailed
from dr_runbooks.sandbox import Sandbox, sandbox_lock
from dr_runbooks.text import first_line, human_duration
from flows import parameters as p
from flows.drill_steps import ended
from flows.runbook import Runbook, runbook
from tasks._runtime import logger
from tasks.config import dr_load_target
from tasks.drill import drill_system, postgres_teardown_sandbox
from tasks.gitconfig import git_choose_backup, git_load_repository, git_restore_clone
from tasks.health import http_wait_healthy
from tasks.mongodb import mongodb_verify_backup
from tasks.postgres import postgres_fetch_backup, postgres_restore, postgres_verify_restore
from tasks.recovery_test import config_find_commit, config_restore_from_git, postgres_performance
from tasks.repository import repository_choose_backup, repository_list_databases
from tasks.sandbox import sandbox_load

__all__ = ["quarterly_recovery_test"]

_SCRATCH = "dr_performance"


_DATABASE_ENGINES = ("postgres", "mongodb")


@flow(name="quarterly-recovery-test", log_prints=True)
@runbook
def quarterly_recovery_test(
    systems: list[str] = Field(
        [], description="Systems to restore (default: every system in dr.yaml)."
    ),
    severity: p.Severity = p.severity("Low"),
    performance_seconds: int = Field(
        0,
        ge=0,
        description="How long pgbench runs per database (0: dr.yaml's "
        "`drills.performance.duration`).",
    ),
    health_timeout_seconds: int = p.HEALTH_TIMEOUT,
    lock_timeout_seconds: int = Field(
        0,
        ge=0,
        description="How long to wait, in seconds, while another drill uses the sandbox "
        "(0: fail at once naming it).",
    ),
    config_path: str = p.CONFIG_PATH,
) -> dict[str, Any]:
    """Restore every protected system into a clean sandbox from backups alone, verify it,
    measure it, and remove it."""
    first = systems[0] if systems else drill_system(config_path, [])
    with Runbook("quarterly-recovery-test", system=first, config_path=config_path) as rb:
        # 1. Prepare a clean sandbox.
        with rb.step("load"):
            config = load_config(config_path)
            # The databases, and the configuration below; file storage and vault backups are
            # checked by verify-backups.
            databases = {n for n, s in config.systems.items() if s.engine in _DATABASE_ENGINES}
            git_systems = sorted(n for n, s in config.systems.items() if s.engine == "git")
            names = systems or sorted(databases)
            if not names:
                raise ConfigError("dr.yaml declares no database systems to restore")
            for name in names:
                if name in config.systems and name not in databases:
                    raise ConfigError(
                        f"system {name!r} is not a database ({config.systems[name].engine}): "
                        "the recovery test restores databases; verify-backups checks its backups"
                    )
            postgres = sandbox_load(config_path, "postgres")
            mongodb = sandbox_load(config_path, "mongodb")
        rb.system = ", ".join(names)
        rb.record_into(dr_load_target(None, names[0], config_path=config_path).primary)
        if postgres is None:
            raise ConfigError("the recovery test needs a PostgreSQL sandbox (sandbox: postgres:)")
        made: list[str] = []
        restored: list[dict[str, Any]] = []
        problems: list[str] = []
        config_dirs: list[str] = []
        begun = datetime.now(UTC)
        try:
            with rb.lock([sandbox_lock(postgres)], lock_timeout_seconds):
                try:
                    with rb.step("clear the sandbox"):
                        postgres_teardown_sandbox(postgres.conninfo, [postgres.database(_SCRATCH)])
                    # 2. Restore from backups only; 3. verify each.
                    for name in names:
                        _restore_system(
                            rb, config_path, name, postgres, mongodb, made, restored, problems
                        )
                    _restore_configuration(
                        rb, config_path, git_systems, config_dirs, restored, problems
                    )
                    for url in config.sandbox.health_urls if config.sandbox else []:
                        with rb.step("health check", detail=url):
                            http_wait_healthy(url, health_timeout_seconds)
                    recovered_at = datetime.now(UTC)
                    # 4. Performance.
                    performance = _performance(rb, config, postgres, restored, performance_seconds)
                    rb.note(restored=restored, performance=performance)
                    _measure(rb, config, restored, begun, recovered_at)
                finally:
                    # 6. Tear the sandbox down, whatever happened.
                    with rb.step("tear down the sandbox") as step:
                        dropped = postgres_teardown_sandbox(
                            postgres.conninfo, [*made, postgres.database(_SCRATCH)]
                        )
                        for directory in config_dirs:
                            shutil.rmtree(directory, ignore_errors=True)
                        step.detail = "removed " + (", ".join(dropped) or "nothing")
        except BaseException as exc:
            _report(rb, exc)
            raise
        failure = RestoreVerificationFailed("; ".join(problems)) if problems else None
        # 5. Report (a failed test is reported too).
        _report(rb, failure)
        if failure is not None:
            raise failure
        return {
            "record": rb.record_id,
            "restored": restored,
            "performance": performance,
            "steps": rb.timeline.rows(),
        }


def _failed(system: str, database: str, exc: BaseException) -> dict[str, Any]:
    return {
        "system": system,
        "database": database,
        "backup": "",
        "outcome": "FAILED",
        "detail": first_line(exc),
    }


def _restore_system(
    rb: Runbook,
    config_path: str,
    name: str,
    postgres: Sandbox,
    mongodb: Sandbox | None,
    made: list[str],
    restored: list[dict[str, Any]],
    problems: list[str],
) -> None:
    """Steps 2 and 3 for one system: each database restored into the sandbox and verified;
    a failure is that database's finding, and the others are still restored."""
    with rb.step(f"load {name}"):
        target = dr_load_target(None, name, config_path=config_path)
        databases = target.databases or repository_list_databases(
            target.primary, target.engine, name
        )
    for database in databases:
        with rb.step(f"restore {name}/{database}") as step:
            try:
                backup = repository_choose_backup(target.primary, target.engine, name, database)
                if target.engine == "mongodb":
                    if mongodb is None:
                        raise ConfigError("dr.yaml declares no MongoDB sandbox (sandbox: mongodb:)")
                    result = mongodb_verify_backup(mongodb.conninfo, target.primary, backup)
                    if result["problems"]:
                        raise RestoreVerificationFailed("; ".join(result["problems"]))
                    detail = f"{result['collections']} collections, {result['documents']} documents"
                else:
                    live = postgres.database(f"{name}_{database}".replace("-", "_"))
                    made.append(live)
                    postgres_teardown_sandbox(postgres.conninfo, [live])
                    fetched = postgres_fetch_backup(target.primary, backup)
                    try:
                        postgres_restore(postgres.conninfo, fetched, live)
                    finally:
                        fetched.cleanup()
                    expected = backup.manifest.tables if backup.manifest else {}
                    verified = postgres_verify_restore(
                        postgres.conninfo, live, expected, target.checks_file
                    )
                    detail = (
                        f"{verified['tables']} tables, {verified['rows']} rows as in the manifest"
                    )
                restored.append(
                    {
                        "system": name,
                        "database": database,
                        "engine": target.engine,
                        "sandbox": live if target.engine == "postgres" else "(temporary)",
                        "backup": backup.id,
                        "consistent_point": backup.consistent_point.isoformat(),
                        "outcome": "ok",
                        "detail": detail,
                    }
                )
                step.detail = f"backup {backup.id}: {detail}"
            except DRError as exc:
                problems.append(f"{name}/{database}: {first_line(exc)}")
                restored.append(_failed(name, database, exc))
                step.outcome, step.detail = "failed", first_line(exc)


def _restore_configuration(
    rb: Runbook,
    config_path: str,
    git_systems: list[str],
    work: list[str],
    restored: list[dict[str, Any]],
    problems: list[str],
) -> None:
    """Step 2 for the configuration: each git system's newest bundle cloned into a work
    directory (added to ``work``, removed at the end) and its refs checked against the
    manifest; then the commit this run's dr.yaml came from found there. A failure is a
    finding. The steps' time is part of the RTO; the record says where the configuration
    came from (``configuration``)."""
    record = rb.record()
    version = record.config if record is not None else {}
    if not git_systems:
        _configuration_from_checkout(rb, version, work, restored, problems)
        return
    directory = tempfile.mkdtemp(prefix="dr-config-restore-")
    work.append(directory)
    clones: dict[str, str] = {}
    systems: list[dict[str, Any]] = []
    for name in git_systems:
        with rb.step(f"restore the configuration of {name} from its newest backup") as step:
            backup_id = ""
            try:
                store = git_load_repository(name, "", config_path or None)
                backup = git_choose_backup(store, name, None)
                backup_id = backup.id
                refs = git_restore_clone(store, backup, str(Path(directory) / name))
                clones[name] = str(Path(directory) / name)
                step.detail = f"backup {backup.id}: {len(refs)} refs as in the manifest"
            except DRError as exc:
                problems.append(f"configuration of {name}: {first_line(exc)}")
                step.outcome, step.detail = "failed", first_line(exc)
        restored.append(
            {
                "system": name,
                "database": "(config)",
                "engine": "git",
                "sandbox": "(work directory)",
                "backup": backup_id,
                "outcome": "ok" if step.outcome == "ok" else "FAILED",
                "detail": step.detail,
            }
        )
        systems.append(
            {
                "system": name,
                "backup": backup_id,
                "seconds": round(step.seconds, 3),
                "outcome": step.outcome,
                "detail": step.detail,
            }
        )
    commit = version.get("commit") or ""
    with rb.step("find the run's commit in the restored configuration") as step:
        found: dict[str, Any] = {}
        try:
            found = config_find_commit(clones, version)
            step.detail = (
                f"commit {commit[:12]} in the backup of {found['system']}: {found['files']} "
                "files; dr.yaml valid"
                + ("" if found["matches_the_run"] else " (the run read a copy not committed)")
            )
        except DRError as exc:
            problems.append(f"configuration: {first_line(exc)}")
            step.outcome, step.detail = "failed", first_line(exc)
    rb.note(
        configuration={
            "source": "backup",
            "commit": commit,
            "systems": systems,
            "found_in": found.get("system"),
            "files": found.get("files"),
            "matches_the_run": found.get("matches_the_run"),
            "outcome": step.outcome,
            "detail": step.detail,
            "seconds": round(step.seconds + sum(s["seconds"] for s in systems), 3),
        }
    )


def _configuration_from_checkout(
    rb: Runbook,
    version: dict[str, Any],
    work: list[str],
    restored: list[dict[str, Any]],
    problems: list[str],
) -> None:
    """Without a git system there is no configuration backup: the configuration comes from
    the checkout dr.yaml was read from, at the commit the run record names."""
    with rb.step("restore the configuration from git") as step:
        try:
            restored_config = config_restore_from_git(version)
            work.append(restored_config["directory"])
            step.detail = (
                f"commit {restored_config['commit'][:12]}, from the checkout (dr.yaml declares "
                "no engine: git system)"
            )
            restored.append(
                {
                    "system": "configuration",
                    "database": version.get("file"),
                    "backup": f"git {restored_config['commit'][:12]}",
                    "outcome": "ok",
                    "detail": f"{restored_config['files']} files; dr.yaml valid",
                }
            )
        except DRError as exc:
            problems.append(f"configuration: {first_line(exc)}")
            restored.append(_failed("configuration", "dr.yaml", exc))
            step.outcome, step.detail = "failed", first_line(exc)
    rb.note(
        configuration={
            "source": "checkout",
            "commit": version.get("commit") or "",
            "systems": [],
            "outcome": step.outcome,
            "detail": step.detail,
            "seconds": round(step.seconds, 3),
        }
    )


def _performance(
    rb: Runbook,
    config: Config,
    postgres: Sandbox,
    restored: list[dict[str, Any]],
    seconds: int,
) -> list[dict[str, Any]]:
    """pgbench on each restored PostgreSQL database, compared with the previous quarter."""
    settings = config.drills.performance
    duration = seconds or settings.duration.total_seconds()
    script = str(config.resolve_path(settings.queries_file)) if settings.queries_file else None
    previous = _previous_performance(rb)
    results = []
    targets = [r for r in restored if r.get("engine") == "postgres" and r["outcome"] == "ok"]
    if not script:
        targets = targets[:1]  # --select-only measures the sandbox server: once is enough
    for row in targets:
        label = f"{row['system']}/{row['database']}"
        with rb.step(f"performance {label}") as step:
            measured = postgres_performance(
                postgres.conninfo, row["sandbox"], duration, script, postgres.database(_SCRATCH)
            )
            before = previous.get(label)
            measured["label"] = label
            measured["previous_tps"] = before
            if before:
                change = (measured["tps"] - before) / before
                measured["change"] = f"{change:+.0%}"
                if change < -settings.max_regression:
                    measured["regression"] = True
                    step.detail = f"{measured['tps']} tps, {change:+.0%} against last quarter"
            else:
                measured["change"] = "no earlier measurement"
            step.detail = step.detail or f"{measured['tps']} tps ({measured['change']})"
        results.append(measured)
    return results


def _previous_performance(rb: Runbook) -> dict[str, float]:
    for record in reversed(rb.history("recovery-test")):
        rows = record.results.get("performance") or []
        found = {r["label"]: float(r["tps"]) for r in rows if r.get("label") and r.get("tps")}
        if found:
            return found
    return {}


def _measure(
    rb: Runbook,
    config: Config,
    restored: list[dict[str, Any]],
    begun: datetime,
    recovered_at: datetime,
) -> None:
    """The full-system RTO (restore start → all verified) and the RPO a disaster now would
    have (the oldest restored backup), against the objectives."""
    objectives = config.objectives
    rto = recovered_at - begun
    points = [
        datetime.fromisoformat(r["consistent_point"]) for r in restored if r.get("consistent_point")
    ]
    rpo = (recovered_at - min(points)) if points else None
    rb.measure(
        rto_seconds=round(rto.total_seconds(), 3),
        rto_objective_seconds=objectives.rto.full_system.total_seconds(),
        rto_met=rto <= objectives.rto.full_system,
        rpo_seconds=round(rpo.total_seconds(), 3) if rpo is not None else None,
        rpo_objective_seconds=objectives.rpo.database.total_seconds(),
        rpo_met=rpo <= objectives.rpo.database if rpo is not None else None,
        resolved_at=recovered_at.isoformat(),
        data_lost={"proof": "backups only: what was written after each consistent point"},
    )


def _report(rb: Runbook, failure: BaseException | None) -> None:
    """The review and the report, kept with the record and published; never raises."""
    try:
        _publish(rb, failure)
    except Exception as exc:  # the test's own outcome is what must surface
        logger().error("the recovery test report could not be made: %s", first_line(exc))


def _publish(rb: Runbook, failure: BaseException | None) -> None:
    record = ended(rb.record(), failure)
    if record is None:
        return
    findings = review(record, rb.history(record.kind))
    findings += [
        f"performance of {r['label']}: {r['tps']} transactions/s, {r['change']} against the "
        "previous quarter"
        for r in record.results.get("performance") or []
        if r.get("regression")
    ]
    rb.note(review=findings)
    record.results["review"] = findings
    markdown = recovery_test_markdown(record)
    rb.attach("report.md", markdown.encode())
    rb.publish(
        "quarterly-recovery-test-steps",
        "Recovery test: steps and durations",
        table=step_rows(record),
    )
    rb.publish(
        "quarterly-recovery-test",
        f"Recovery test: RTO {human_duration(record.measurements.get('rto_seconds'))}",
        markdown=markdown,
    )
