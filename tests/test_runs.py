"""Run records, the post-mortem drafted from one, the drill report's review and trend, and the
drill and escalation settings of dr.yaml: the engine alone, no Prefect."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr_runbooks.config import load_config
from dr_runbooks.configversion import config_version, export_at
from dr_runbooks.drillreport import drill_markdown, review, trend, trend_png
from dr_runbooks.errors import ConfigError, RepositoryNotFound
from dr_runbooks.escalation import levels, message
from dr_runbooks.postmortem import draft
from dr_runbooks.redaction import register_secret
from dr_runbooks.runs import (
    RecordClosed,
    RunLog,
    RunNotFound,
    RunRecord,
    StepEntry,
    clean_parameters,
    kind_of,
    new_record_id,
)
from dr_runbooks.storage import LocalStore

T0 = datetime(2026, 12, 5, 6, 0, 3, tzinfo=UTC)


def _record(
    started: datetime = T0, kind: str = "drill", rto: float = 600.0, token: str = "1f2e3d4c"
) -> RunRecord:
    steps = [
        StepEntry(name="load", started=started, seconds=1.0, outcome="ok"),
        StepEntry(
            name="simulate the failure",
            started=started + timedelta(seconds=60),
            seconds=2.0,
            outcome="ok",
        ),
        StepEntry(
            name="recover shop/app (database-failure runbook)",
            started=started + timedelta(seconds=62),
            seconds=rto - 10,
            outcome="ok",
        ),
    ]
    return RunRecord(
        id=new_record_id(started, token),
        kind=kind,
        flow="monthly-drill",
        system="shop/app",
        started=started,
        steps=steps,
        severity="Low",
        launched_by="the schedule of deployment dr-drill-monthly",
        measurements={
            "rto_seconds": rto,
            "rto_objective_seconds": 3600.0,
            "rto_met": rto <= 3600,
            "rpo_seconds": 1800.0,
            "rpo_objective_seconds": 3600.0,
            "rpo_met": True,
            "incident_time": (started + timedelta(seconds=62)).isoformat(),
            "resolved_at": (started + timedelta(seconds=62 + rto)).isoformat(),
            "data_lost": {"rows_written": 5, "rows_lost": 5, "proof": "marker rows"},
            "backup": {"id": "20261205T020000Z-7f3a", "consistent_point": "x", "repository": "r"},
        },
    )


def test_a_record_is_written_while_running_and_never_again_once_ended(tmp_path: Path) -> None:
    log = RunLog(LocalStore(tmp_path / "repo"))
    record = _record()
    with pytest.raises(RepositoryNotFound):  # only a backup makes a repository
        log.save(record)
    LocalStore(tmp_path / "repo").create()
    log.save(record)
    record.steps.append(StepEntry(name="verify", started=T0 + timedelta(minutes=11)))
    log.save(record)
    assert log.read(record.id).steps[-1].outcome == "running"

    record.status, record.finished = "completed", T0 + timedelta(minutes=12)
    log.save(record)
    with pytest.raises(RecordClosed, match="ended completed"):
        log.save(record)
    record.status = "running"
    with pytest.raises(RecordClosed):
        log.save(record)
    assert log.read(record.id).status == "completed"
    assert (tmp_path / "repo" / "runs" / f"{record.id}.json").is_file()


def test_records_are_listed_by_kind_oldest_first_and_a_damaged_one_is_named(
    tmp_path: Path,
) -> None:
    log = RunLog(LocalStore(tmp_path / "repo"))
    log.store.create()
    later = _record(T0 + timedelta(days=28), token="aaaa0001")
    log.save(later)
    log.save(_record(T0, token="bbbb0002"))
    log.save(_record(T0, kind="scenario", token="cccc0003"))
    log.attach(later.id, "postmortem.md", b"# draft")
    (tmp_path / "repo" / "runs" / "20261205T070000Z-dead0001.json").write_text("{not json")

    drills, damaged = log.records("drill")
    assert [r.id for r in drills] == [f"{T0:%Y%m%dT%H%M%SZ}-bbbb0002", later.id]
    assert damaged == ["runs/20261205T070000Z-dead0001.json"]
    assert len(log.records()[0]) == 3
    assert log.read("20261205T060003Z-cccc").kind == "scenario"  # a unique prefix
    with pytest.raises(RunNotFound, match="several"):
        log.read("20261205T060003Z")
    with pytest.raises(RunNotFound, match="no run record"):
        log.read("20990101T000000Z-ffff")
    assert RunLog(LocalStore(tmp_path / "none")).records() == ([], [])


def test_parameters_keep_no_secret() -> None:
    register_secret("hunter2-very-secret")
    cleaned = clean_parameters(
        {
            "connection": "postgresql://app:hunter2-very-secret@db/shop",
            "sas_token": "sv=2024&sig=abc",
            "password": "plain",
            "systems": ["shop"],
            "nested": {"api_key": "k", "note": "the hunter2-very-secret one"},
            "rows": 5,
            "token_empty": "",
        }
    )
    text = str(cleaned)
    assert "hunter2" not in text and "sig=abc" not in text and "plain" not in text
    assert cleaned["systems"] == ["shop"] and cleaned["rows"] == 5
    assert cleaned["sas_token"] == cleaned["password"] == cleaned["nested"]["api_key"] == "***"
    assert cleaned["token_empty"] == ""


def test_which_runs_are_recorded() -> None:
    assert kind_of("monthly-drill") == "drill"
    assert kind_of("quarterly-recovery-test") == "recovery-test"
    assert kind_of("database-failure") == kind_of("security-breach") == "scenario"
    assert kind_of("backup-postgres") is None and kind_of("verify-backups") is None


def test_the_post_mortem_is_the_plans_template_filled_from_the_record() -> None:
    record = _record()
    record.status, record.finished = "completed", T0 + timedelta(seconds=700)
    text = draft(record)
    assert text.startswith("# Incident Post-Mortem")
    assert "**Date:** 2026-12-05" in text and "**Severity:** Low" in text
    assert "**Duration:** 10 min 00 s" in text
    assert "- 2026-12-05 06:01:05 UTC - Event occurred (the failure injected by the drill)" in text
    assert "- 2026-12-05 06:01:05 UTC - Detected" in text
    assert "- 2026-12-05 06:01:05 UTC - Response initiated (recover shop/app" in text
    assert "- 2026-12-05 06:11:05 UTC - Resolved" in text
    assert "Data loss: Yes: 5 row(s) written after the restored backup were lost" in text
    assert "3. recover shop/app (database-failure runbook) — ok" in text
    for placeholder in ("What caused the incident?", "What did we learn?", "- [ ] Action 1"):
        assert placeholder in text


def test_the_post_mortem_of_a_failed_incident_says_where_it_failed() -> None:
    record = _record(kind="scenario")
    record.measurements = {}
    record.steps[-1].outcome = "failed"
    record.status, record.error = "failed", "pg_restore exited 1: disk full"
    record.failed_step = record.steps[-1].name
    record.severity = None
    text = draft(record)
    assert "FAILED at step 'recover shop/app (database-failure runbook)'" in text
    assert "failed at step" in text.split("## Root Cause")[1] and "disk full" in text
    assert "- unresolved - Resolved" in text and "Unset (Critical/High/Medium/Low)" in text
    assert "Data loss: Unknown" in text


def test_the_review_names_failed_missed_and_slow_steps() -> None:
    earlier = [_record(T0 - timedelta(days=28 * i), rto=600, token=f"e{i:07d}") for i in (1, 2)]
    now = _record(rto=4000)
    now.steps.append(
        StepEntry(name="integration test", started=T0, seconds=3, outcome="failed", detail="exit 1")
    )
    findings = review(now, earlier)
    assert "step 'integration test' failed: exit 1" in findings
    assert any(f.startswith("RTO missed: 1 h 06 min") for f in findings)
    assert any(
        f.startswith("step 'recover shop/app (database-failure runbook)' was slow")
        for f in findings
    )
    assert not any("load" in f for f in findings)  # fast steps are never "slow"


def test_the_trend_keeps_the_last_12_drills_and_draws_them() -> None:
    records = [_record(T0 + timedelta(days=28 * i), token=f"{i:08d}") for i in range(14)]
    records.append(_record(kind="scenario", token="ffff0000"))
    series = trend(records)
    assert len(series) == 12 and series[0]["run"] == records[2].id
    assert series[-1]["rto_minutes"] == 10.0 and series[-1]["rpo_objective_minutes"] == 60.0
    png = trend_png(series)
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    markdown = drill_markdown(records[-2], series, "chart.png")
    assert "![RTO and RPO of the last drills](chart.png)" in markdown
    assert "**5 lost**" in markdown and "| RTO achieved | 10 min 00 s | 1 h 00 min | met |" in (
        markdown
    )


def test_drill_and_escalation_settings_are_checked_with_plain_messages(tmp_path: Path) -> None:
    config = tmp_path / "dr.yaml"

    def refused(text: str, match: str) -> None:
        config.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_config(config)

    refused("sandbox: {}", "a sandbox needs a postgres or a mongodb server")
    refused("sandbox: {postgres: {connection: {host: x}}}", "names a block or a dsn_env")
    refused("sandbox: {postgres: {connection: {dsn_env: X}, prefix: Drill-}}", "lower-case letters")
    refused("escalation: {levels: [{after: 30m, who: a, block: x/y}]}", "called at once")
    refused(
        "escalation: {levels: [{after: 0, who: a, block: x/y}, {after: 5s, who: b, block: x/y}]}",
        "at least 10s",
    )
    refused("escalation: {}", "names no block")
    refused("drills: {systems: [nope]}", "unknown system 'nope'")

    config.write_text("notifications: {block: custom-webhook/oncall}\nescalation: {}\n")
    path = levels(load_config(config))
    assert [(lvl.number, lvl.after, lvl.who) for lvl in path] == [
        (1, timedelta(0), "On-call engineer"),
        (2, timedelta(minutes=30), "Senior engineer"),
        (3, timedelta(hours=1), "Engineering manager"),
        (4, timedelta(hours=2), "CTO"),
    ]
    assert {lvl.block for lvl in path} == {"custom-webhook/oncall"}
    assert "database-failure" in path[0].flows
    subject, body = message(path[1], "database-failure", "flow run x", "http://ui/runs/x")
    assert subject == (
        "DR escalation level 2 (Senior engineer): database-failure still not finished after "
        "30 min 00 s"
    )
    assert "http://ui/runs/x" in body


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_configuration_is_known_by_commit_and_restored_from_git(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "dr.yaml").write_text("objectives: {rto: {critical: 2h}}\n")
    _git(repo, "add", "dr.yaml")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "config")
    head = _git(repo, "rev-parse", "HEAD")

    version = config_version(repo / "dr.yaml")
    assert version["commit"] == head and version["modified"] is False
    assert version["file"] == "dr.yaml" and len(version["sha256"]) == 64
    (repo / "dr.yaml").write_text("objectives: {rto: {critical: 3h}}\n")
    assert config_version(repo / "dr.yaml")["modified"] is True
    assert config_version(tmp_path / "elsewhere.yaml")["commit"] is None

    files = export_at(repo, head, tmp_path / "restored")
    assert files == ["dr.yaml"]
    assert "critical: 2h" in (tmp_path / "restored" / "dr.yaml").read_text()  # the commit's
