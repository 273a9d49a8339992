"""``dr failover``, ``dr failback`` and ``dr breach`` as a person runs them: a real process,
the usual exit codes, ``--json`` on stdout, nothing changed before a confirmation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from tests.azure.landscape import DR_ADDRESSES, PRIMARY_ADDRESSES, Landscape

ROOT = Path(__file__).resolve().parents[2]


def _dr(landscape: Landscape, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "DR_CONFIG": landscape.config,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=landscape.tmp,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _writes(landscape: Landscape) -> int:
    return len([c for c in landscape.api.calls if c.method not in ("GET", "HEAD")])


def test_failover_without_a_terminal_or_yes_changes_nothing(landscape: Landscape) -> None:
    result = _dr(landscape, "failover", "--system", landscape.system)
    assert result.returncode == 2, result.stderr
    assert "confirm on a terminal or pass --yes" in result.stderr
    assert _writes(landscape) == 0 and landscape.addresses() == PRIMARY_ADDRESSES

    unknown = _dr(landscape, "failover", "--system", "nope", "--yes")
    assert unknown.returncode == 2 and "unknown system 'nope'" in unknown.stderr
    bad_time = _dr(landscape, "failback", "-s", landscape.system, "--restore-time", "yesterday")
    assert bad_time.returncode == 2 and "yesterday" in bad_time.stderr


def test_failover_with_yes_and_json(landscape: Landscape) -> None:
    result = _dr(landscape, "failover", "-s", landscape.system, "--yes", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["direction"] == "eastus → westus2" and report["rto_met"] is True
    assert {row["record"]: row["TTL"] for row in report["dns"]} == {
        "www.dotcopilot.com": 300,
        "api.dotcopilot.com": 60,
    }
    assert landscape.addresses() == DR_ADDRESSES


def test_breach_refuses_a_restore_without_the_breach_time(landscape: Landscape) -> None:
    config = Path(landscape.config)
    config.write_text(config.read_text() + "    breach: {stop_command: [echo, stopped]}\n")

    result = _dr(landscape, "breach", "-s", landscape.system, "--yes")

    assert result.returncode == 2, result.stderr
    assert "give breach_time" in result.stderr
    assert _writes(landscape) == 0
