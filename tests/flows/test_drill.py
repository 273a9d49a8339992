"""The local drill behind ``make drill``, end to end on its own throwaway server."""

from __future__ import annotations

from pathlib import Path

from flows.drill import local_drill


def test_local_drill_recovers_and_proves_the_rpo_with_lost_markers(tmp_path: Path) -> None:
    result = local_drill(rows=3000, markers=4, workdir=str(tmp_path / ".dr"))

    assert result["verified"] is True
    assert result["markers_written_after_backup"] == 4 and result["markers_lost"] == 4
    assert result["markers_before_backup_restored"] == 1
    assert result["seeded_rows"] == 3000
    assert 0 < result["rpo_seconds"] < result["rpo_objective_seconds"]
    assert 0 < result["rto_seconds"] < result["rto_objective_seconds"]
    steps = [s["step"] for s in result["recovery_steps"]]
    assert steps[-1] == "swap" and "download and verify checksums" in steps
    report = Path(result["report"])
    assert report.parent == tmp_path / ".dr" / "reports"
    text = report.read_text()
    assert "recovery VERIFIED" in text and "RTO achieved" in text and "lost: **4**" in text
