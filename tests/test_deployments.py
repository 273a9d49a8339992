"""prefect.yaml: valid for Prefect, every entrypoint imports, the schedules fire when the plan
says (computed with Prefect's own schedule classes over several years)."""

from __future__ import annotations

import asyncio
import calendar
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import load_flow_from_entrypoint
from prefect.server.schemas.schedules import CronSchedule, RRuleSchedule

from cli.deployments import deployment_specs

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
START = datetime(2026, 11, 28, tzinfo=UTC)
END = START + timedelta(days=3 * 366)


def fire_times(
    spec: dict[str, Any], start: datetime = START, end: datetime = END
) -> list[datetime]:
    if "cron" in spec:
        schedule: Any = CronSchedule(
            cron=spec["cron"], timezone=spec.get("timezone"), day_or=spec.get("day_or", True)
        )
    else:
        schedule = RRuleSchedule(rrule=spec["rrule"], timezone=spec.get("timezone"))
    # Prefect checks at most 1,000 candidates a call: walk the window in pages.
    times: list[datetime] = []
    cursor = start
    while True:
        page = asyncio.run(schedule.get_dates(n=500, start=cursor, end=end))
        page = [datetime.fromtimestamp(d.timestamp(), UTC) for d in page]
        page = [t for t in page if not times or t > times[-1]]
        if not page:
            return times
        times.extend(page)
        cursor = page[-1] + timedelta(seconds=1)


def by_name() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in deployment_specs(PREFECT_YAML)}


def test_prefect_yaml_is_valid_for_prefect_and_uses_the_dr_pool() -> None:
    raw = yaml.safe_load(PREFECT_YAML.read_text())
    model = PrefectYamlModel.model_validate(raw)
    assert model.deployments
    for deployment in raw["deployments"]:
        assert deployment["work_pool"]["name"] == "dr-pool"
        assert deployment.get("description")
    assert "null" not in PREFECT_YAML.read_text()


@pytest.mark.parametrize("name", sorted(by_name()))
def test_every_entrypoint_imports_for_real(name: str) -> None:
    entrypoint = by_name()[name]["entrypoint"]
    flow = load_flow_from_entrypoint(str(ROOT / entrypoint), use_placeholder_flow=False)
    params = flow.parameters.model_dump()["properties"]
    assert params, f"{entrypoint} has no parameters"
    for parameter in params.values():
        assert parameter.get("description"), f"{entrypoint}: a parameter lacks a description"
    for key in by_name()[name].get("parameters") or {}:
        assert key in params, f"{name} sets unknown parameter {key}"


def test_expected_deployments_exist() -> None:
    names = set(by_name())
    assert {
        "postgres-backup-daily",
        "postgres-backup-hourly",
        "verify-backups-daily",
        "database-failure",
        "data-corruption",
        "files-backup-daily",
        "file-storage-failure",
        "config-backup",
        "config-restore",
        "keyvault-backup-daily",
        "keyvault-restore",
    } <= names
    assert by_name()["file-storage-failure"]["schedules"] == []
    assert by_name()["config-restore"]["schedules"] == []
    assert by_name()["keyvault-restore"]["schedules"] == []


def _schedule(name: str) -> dict[str, Any]:
    [schedule] = by_name()[name]["schedules"]
    return schedule


def test_daily_full_backup_at_0200_every_day() -> None:
    times = fire_times(_schedule("postgres-backup-daily"))
    assert len(times) == (END - START).days
    assert {(t.hour, t.minute) for t in times} == {(2, 0)}


def test_hourly_backup_every_hour_but_0200() -> None:
    times = fire_times(_schedule("postgres-backup-hourly"))
    assert {t.minute for t in times} == {0}
    hours = Counter(t.hour for t in times)
    assert 2 not in hours and set(hours) == set(range(24)) - {2}
    days = Counter(t.date() for t in times if t < END)
    assert set(days.values()) == {23}


def test_mongodb_backup_at_0300_every_day() -> None:
    times = fire_times(_schedule("mongodb-backup-daily"))
    assert {(t.hour, t.minute) for t in times} == {(3, 0)}
    assert len({t.date() for t in times}) == len(times) == (END - START).days


def test_file_backup_at_0100_every_day() -> None:
    times = fire_times(_schedule("files-backup-daily"))
    assert {(t.hour, t.minute) for t in times} == {(1, 0)}
    assert len({t.date() for t in times}) == len(times) == (END - START).days


def test_config_check_every_15_minutes() -> None:
    day = START + timedelta(days=1)
    times = [t for t in fire_times(_schedule("config-backup"), START, day) if t < day]
    assert {t.minute for t in times} == {0, 15, 30, 45}
    assert len(times) == 24 * 4


def test_verification_at_0400_every_day() -> None:
    times = fire_times(_schedule("verify-backups-daily"))
    assert {(t.hour, t.minute) for t in times} == {(4, 0)}
    assert len({t.date() for t in times}) == len(times) == (END - START).days


def _anchor(name: str) -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())["definitions"]["schedules"][name]


def test_monthly_drill_schedule_is_the_first_saturday_at_0600() -> None:
    times = fire_times(_anchor("first_saturday_0600"))
    assert len(times) == 36
    for t in times:
        assert (t.weekday(), t.hour, t.minute) == (calendar.SATURDAY, 6, 0)
        assert t.day <= 7
    assert len({(t.year, t.month) for t in times}) == 36


def test_quarterly_test_schedule_is_the_last_saturday_of_each_quarter_at_0600() -> None:
    times = fire_times(_anchor("last_saturday_of_quarter_0600"))
    assert len(times) == 12
    for t in times:
        assert (t.weekday(), t.hour, t.minute) == (calendar.SATURDAY, 6, 0)
        assert t.month in (3, 6, 9, 12)
        assert t.day + 7 > calendar.monthrange(t.year, t.month)[1]
    # 30-day months too: 2027-06-26 is the last Saturday of June 2027.
    assert datetime(2027, 6, 26, 6, tzinfo=UTC) in times


def test_the_cron_trap_is_real() -> None:
    """Why the drills use RRules: cron ORs day-of-month and day-of-week."""
    times = fire_times({"cron": "0 6 1-7 * 6", "timezone": "UTC"}, end=START + timedelta(days=62))
    assert any(t.day > 7 for t in times)


def test_every_deployment_says_whether_it_is_scheduled_and_schedules_start_paused() -> None:
    for name, spec in by_name().items():
        assert "schedules" in spec, f"{name}: say `schedules: []` (else deploy asks on a terminal)"
        for schedule in spec["schedules"]:
            assert schedule.get("active") is False, f"{name}: a schedule must start paused"


def _descriptions() -> list[tuple[str, str]]:
    found = []
    for name in sorted(by_name()):
        entrypoint = by_name()[name]["entrypoint"]
        flow = load_flow_from_entrypoint(str(ROOT / entrypoint), use_placeholder_flow=False)
        for param, schema in flow.parameters.model_dump()["properties"].items():
            found.append((f"{name}.{param}", str(schema.get("description") or "")))
    return found


def test_parameter_descriptions_render_as_written_in_the_ui() -> None:
    # The UI renders descriptions as markdown with HTML: <db> vanishes, __x__ turns italic.
    import re

    for where, text in _descriptions():
        outside_code = re.sub(r"`[^`]*`", "", text)
        assert "<" not in outside_code and ">" not in outside_code, (where, text)
        assert "__" not in outside_code, (where, text)


@pytest.mark.slow
def test_the_whole_file_deploys_on_a_terminal_without_a_question(
    prefect_server: None, tmp_path: Path
) -> None:
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "DR_RUNBOOKS_HOME": str(ROOT),
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    subprocess.run(
        [prefect, "work-pool", "create", "dr-pool", "--type", "process"],
        env=env,
        capture_output=True,
    )
    primary, secondary = pty.openpty()  # a terminal, where a question would wait for an answer
    process = subprocess.Popen(
        [prefect, "deploy", "--all"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        cwd=ROOT,
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if select.select([primary], [], [], 1)[0]:
            try:
                output += os.read(primary, 65536)
            except OSError:
                break
    if process.poll() is None:
        process.kill()
    text = output.decode(errors="replace")
    assert process.wait() == 0, text[-2000:]
    assert "[y/n]" not in text and "?" not in text.split("Deploying", 1)[0], text[-2000:]
    with get_client(sync_client=True) as client:
        for name, spec in by_name().items():
            flow = load_flow_from_entrypoint(
                str(ROOT / spec["entrypoint"]), use_placeholder_flow=False
            )
            deployment = client.read_deployment_by_name(f"{flow.name}/{name}")
            assert len(deployment.schedules) == len(spec["schedules"]), name
            assert all(not s.active for s in deployment.schedules), name


def test_run_forms_ask_plainly_required_is_required_and_choices_are_choices() -> None:
    for name in sorted(by_name()):
        entrypoint = by_name()[name]["entrypoint"]
        flow = load_flow_from_entrypoint(str(ROOT / entrypoint), use_placeholder_flow=False)
        schema = flow.parameters.model_dump()
        for param, field in schema["properties"].items():
            # anyOf [string, null] shows a type picker and "Property is type None".
            options = [o.get("type") for o in field.get("anyOf", [])]
            assert "null" not in options, f"{name}.{param}: use '' rather than None"
        if "system" in schema["properties"]:
            assert "system" in schema.get("required", []), f"{name}: system is required"
    backup = load_flow_from_entrypoint(
        str(ROOT / "flows/backup_postgres.py:backup_postgres"), use_placeholder_flow=False
    )
    kind = backup.parameters.model_dump()["properties"]["kind"]
    definitions = backup.parameters.model_dump()["definitions"]
    enum = kind.get("enum") or definitions[kind["$ref"].rsplit("/", 1)[1]]["enum"]
    assert set(enum) >= {"full", "hourly", "manual"}
