"""The runbook skeleton: timeline, gate, RTO/RPO, and what a failure leaves behind."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import ArtifactSort

from dr_runbooks.config import load_config
from dr_runbooks.errors import ConfigError, OperationFailed
from dr_runbooks.targets import Target
from flows.runbook import Runbook
from flows.verify_backups import verify_backups
from tests.webhook import Receiver


@pytest.fixture
def alerts_config(tmp_path: Path, receiver: Receiver) -> str:
    config = tmp_path / "dr.yaml"
    config.write_text("""
objectives:
  rto: {critical: 30m}
  rpo: {database: 10m}
notifications: {block: custom-webhook/dr-test-alerts}
""")
    return str(config)


def _artifact(key: str) -> Any:
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            limit=1, artifact_filter=_by_key(key), sort=ArtifactSort.CREATED_DESC
        )
    return artifact


def _by_key(key: str) -> Any:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    return ArtifactFilter(key=ArtifactFilterKey(any_=[key]))


@flow(name="skeleton-fails-at-step-two")
def _fails(config_path: str, system: str) -> None:
    with Runbook("skeleton-test", system=system, config_path=config_path) as rb:
        with rb.step("one"):
            pass
        with rb.step("two"):
            raise OperationFailed("the disk caught fire")


@flow(name="skeleton-outer")
def _outer(config_path: str, system: str) -> None:
    with (
        Runbook("skeleton-outer", system=system, config_path=config_path) as rb,
        rb.step("inner runbook"),
    ):
        _fails(config_path, system)


def test_a_failure_publishes_the_partial_timeline_and_notifies_once(
    alerts_config: str, receiver: Receiver
) -> None:
    with pytest.raises(OperationFailed, match="caught fire"):
        _fails(alerts_config, "fail-a")

    table = json.loads(_artifact("skeleton-test-fail-a").data)
    assert [(row["step"], row["outcome"]) for row in table] == [
        ("one", "ok"),
        ("two", "failed"),
        ("FAILED", "failed"),
    ]
    assert table[-1]["detail"] == "the disk caught fire"
    [message] = receiver.messages
    assert message["subject"] == "DR: skeleton-test failed for fail-a"
    assert "cause: the disk caught fire" in message["body"]
    assert "failed step: two" in message["body"] and "flow run" in message["body"]


def test_a_runbook_run_inside_another_leaves_the_notification_to_the_outer_one(
    alerts_config: str, receiver: Receiver
) -> None:
    with pytest.raises(OperationFailed):
        _outer(alerts_config, "fail-b")

    [message] = receiver.messages
    assert message["subject"] == "DR: skeleton-outer failed for fail-b"
    assert "failed step: inner runbook" in message["body"]
    # Both timelines are published, each with its own failure.
    assert json.loads(_artifact("skeleton-test-fail-b").data)[-1]["step"] == "FAILED"
    assert json.loads(_artifact("skeleton-outer-fail-b").data)[-1]["step"] == "FAILED"


@flow(name="skeleton-recovers")
def _recovers(config_path: str, incident_time: str, dry_run: bool) -> dict[str, Any]:
    with Runbook("skeleton-recovers", system="rec", incident_time=incident_time) as rb:
        with rb.step("restore"):
            pass
        if rb.gate("skeleton-plan", "# the plan", dry_run, True, 10) is None:
            return {"dry_run": True}
        target = Target(
            "rec", "postgres", None, ["db"], [], tier="critical", config=load_config(config_path)
        )
        point = rb.incident - timedelta(minutes=20)
        return rb.recovered(target, point, key="skeleton-recovers-rec", backup_id="b1")


def test_rto_and_rpo_are_measured_once_against_the_objectives(alerts_config: str) -> None:
    incident = datetime.now(UTC) - timedelta(minutes=5)

    result = _recovers(alerts_config, incident.isoformat(), dry_run=False)

    assert result["backup_id"] == "b1"
    assert result["rpo_seconds"] == pytest.approx(1200, abs=1)
    assert result["rpo_objective_seconds"] == 600 and result["rpo_met"] is False
    assert result["rto_objective_seconds"] == 1800 and result["rto_met"] is True
    assert 0 <= result["rto_seconds"] < 600
    assert [s["step"] for s in result["steps"]] == ["restore", "approval"]
    rows = {row["step"]: row for row in json.loads(_artifact("skeleton-recovers-rec").data)}
    assert rows["RPO achieved"]["outcome"] == "MISSED"
    assert rows["RTO achieved"]["outcome"] == "met"


def test_a_dry_run_stops_at_the_gate_with_the_plan_published(alerts_config: str) -> None:
    result = _recovers(alerts_config, datetime.now(UTC).isoformat(), dry_run=True)

    assert result == {"dry_run": True}
    assert _artifact("plan-skeleton-plan-report").data == "# the plan"


def test_verification_that_cannot_start_still_notifies(
    alerts_config: str, receiver: Receiver
) -> None:
    with pytest.raises(ConfigError, match="unknown system 'nope'"):
        verify_backups(systems=["nope"], config_path=alerts_config)

    [message] = receiver.messages
    assert message["subject"] == "DR: verify-backups failed for nope"
    assert "unknown system 'nope'" in message["body"]
