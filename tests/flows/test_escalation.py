"""The escalation path, with its later level shrunk to seconds: Prefect automations on the
session's server notify a local webhook even after the run's process was killed, and a run on
a server without them escalates from inside its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL

from dr_runbooks.config import Config, load_config
from flows.runbook import Runbook
from tasks.escalation import escalation_apply, escalation_served
from tests.webhook import Receiver

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import sys, time
from prefect import flow
from flows.runbook import Runbook

@flow(name="escalation-probe")
def probe(config_path: str) -> None:
    with Runbook("escalation-probe", system="probe", config_path=config_path) as rb:
        with rb.step("hang"):
            time.sleep(600)

probe(config_path=sys.argv[1])
"""


def _config(tmp_path: Path, flow_name: str) -> Path:
    path = tmp_path / "dr.yaml"
    path.write_text(
        f"""
notifications: {{block: custom-webhook/dr-test-alerts}}
escalation:
  flows: [{flow_name}]
  levels:
    - {{after: 0, who: On-call engineer}}
    - {{after: 10s, who: Senior engineer}}
"""
    )
    return path


def _wait_for(receiver: Receiver, text: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in list(receiver.messages):
            if text in message.get("subject", ""):
                return message
        time.sleep(0.5)
    raise AssertionError(f"no notification {text!r}; got {receiver.messages}")


@pytest.fixture
def no_automations_left() -> Iterator[None]:
    yield
    escalation_apply(Config())  # nothing declared: ours are removed


def test_the_server_escalates_a_run_whose_process_was_killed(
    tmp_path: Path, receiver: Receiver, no_automations_left: None
) -> None:
    config = _config(tmp_path, "escalation-probe")
    applied = escalation_apply(load_config(config))
    assert [a["name"] for a in applied] == ["dr-escalation-level-1", "dr-escalation-level-2"]
    assert escalation_served("escalation-probe") and not escalation_served("database-failure")

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    process = subprocess.Popen(
        [sys.executable, "-c", _PROBE, str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first = _wait_for(receiver, "level 1 (On-call engineer): escalation-probe started")
        os.kill(process.pid, 9)  # the run stays Running: only the server can escalate now
        process.wait(timeout=30)
        second = _wait_for(receiver, "level 2 (Senior engineer): escalation-probe still not")
    finally:
        if process.poll() is None:
            process.kill()
    run = first["body"].split("flow run ")[1].split(",")[0]
    assert run and run in second["body"]
    assert "may have died" in second["body"]
    assert len([m for m in receiver.messages if "level 1" in m["subject"]]) == 1


@flow(name="escalation-fallback-probe")
def _fallback_probe(config_path: str, seconds: float) -> None:
    with (
        Runbook("escalation-fallback-probe", system="probe", config_path=config_path) as rb,
        rb.step("wait"),
    ):
        time.sleep(seconds)


def test_without_automations_a_run_escalates_from_its_own_process(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = _config(tmp_path, "escalation-fallback-probe")
    assert not escalation_served("escalation-fallback-probe")

    _fallback_probe(str(config), 12)

    subjects = [m["subject"] for m in receiver.messages]
    assert any(
        "level 1 (On-call engineer): escalation-fallback-probe started" in s for s in subjects
    )
    assert any("level 2 (Senior engineer)" in s for s in subjects)
    count = len(receiver.messages)
    _fallback_probe(str(config), 0)  # ends before level 2 is due: only level 1
    time.sleep(11)
    later = [m["subject"] for m in receiver.messages[count:]]
    assert len(later) == 1 and "level 1" in later[0]
