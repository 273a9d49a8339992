"""The drill behind ``make drill`` and ``dr drill``: the monthly drill on embedded defaults,
end to end on its own throwaway server, and its records read back by ``dr runs``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from flows.monthly_drill import monthly_drill

ROOT = Path(__file__).resolve().parents[2]


def _dr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": "200"}
    env.pop("DR_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_the_drill_on_embedded_defaults_recovers_and_proves_the_rpo_with_lost_markers(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / ".dr"
    result = monthly_drill(embedded=True, rows=3000, markers=4, workdir=str(workdir))

    assert result["verified"] is True and result["target"] == "sandbox"
    assert result["markers_written_after_backup"] == 4 and result["markers_lost"] == 4
    assert 0 < result["rpo_seconds"] < result["rpo_objective_seconds"]
    assert 0 < result["rto_seconds"] < result["rto_objective_seconds"]
    steps = [s["step"] for s in result["steps"]]
    assert steps[:5] == [
        "load",
        "announce",
        "start throwaway PostgreSQL",
        "seed application database",
        "backup",
    ]
    assert steps[-1] == "tear down the sandbox"
    report = Path(result["report"])
    assert report.parent == workdir / "reports" and report.with_suffix(".trend.png").is_file()
    text = report.read_text()
    assert "recovery VERIFIED" in text and "RTO achieved" in text and "**4 lost**" in text
    assert "1 written before it restored" in text
    assert (workdir / "repo" / "runs" / f"{result['record']}.json").is_file()

    # dr drill (what make drill runs) in a directory without dr.yaml: the same flow.
    ran = _dr("drill", "--rows", "2000", "--workdir", str(workdir), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "recovery VERIFIED in sandbox" in ran.stdout
    assert "RTO achieved" in ran.stdout and "RPO achieved" in ran.stdout
    assert "marker rows lost: 5 of 5 written after the backup" in ran.stdout

    listed = _dr("runs", "list", "--kind", "drill", "--repo", str(workdir / "repo"), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "trend over 2 drills: RTO" in listed.stdout
    rows = json.loads(
        _dr("runs", "list", "--repo", str(workdir / "repo"), "--json", cwd=tmp_path).stdout
    )
    assert [r["kind"] for r in rows].count("drill") == 2
    assert [r["flow"] for r in rows].count("database-failure") == 2
    records = [
        json.loads(p.read_text()) for p in sorted((workdir / "repo" / "runs").glob("*.json"))
    ]
    by_cli = [r for r in records if r["kind"] == "drill" and r["id"] != result["record"]]
    assert by_cli[0]["launched_by"].endswith(": dr drill"), by_cli[0]["launched_by"]
