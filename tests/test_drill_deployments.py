"""The drills' deployments in prefect.yaml fire on the plan's days (Prefect's own schedule
classes, over three years)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from tests.test_deployments import by_name, fire_times


def _times(name: str) -> list[datetime]:
    [schedule] = by_name()[name]["schedules"]
    assert schedule.get("active") is False  # enabled once dr.yaml declares a sandbox
    return fire_times(schedule)


def test_the_monthly_drill_runs_at_0600_on_the_first_saturday() -> None:
    assert by_name()["dr-drill-monthly"]["entrypoint"] == "flows/monthly_drill.py:monthly_drill"
    times = _times("dr-drill-monthly")
    assert len(times) == 36 and len({(t.year, t.month) for t in times}) == 36
    for t in times:
        assert (t.weekday(), t.hour, t.minute, t.day <= 7) == (calendar.SATURDAY, 6, 0, True)


def test_the_quarterly_test_runs_at_0600_on_the_last_saturday_of_each_quarter() -> None:
    spec = by_name()["recovery-test-quarterly"]
    assert spec["entrypoint"] == "flows/quarterly_recovery_test.py:quarterly_recovery_test"
    times = _times("recovery-test-quarterly")
    assert len(times) == 12
    for t in times:
        last_day = calendar.monthrange(t.year, t.month)[1]
        assert (t.weekday(), t.hour, t.month % 3, t.day + 7 > last_day) == (5, 6, 0, True)
    assert datetime(2027, 6, 26, 6, tzinfo=UTC) in times
