"""The region failover end to end against the loopback Azure endpoint: real SDK clients, real
HTTP, state read back from the endpoint; a Prefect test server for the runs, approvals and
artifacts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.exceptions import CancelledRun
from prefect.settings import PREFECT_API_URL

from dr_runbooks.errors import LockHeld, VerificationFailed
from flows.region_failover import region_failover
from tests.azure.landscape import (
    DR_ADDRESSES,
    DR_RG,
    DR_SERVER,
    LATEST_BACKUP,
    PRIMARY_ADDRESSES,
    PRIMARY_RG,
    PRIMARY_SERVER,
    Landscape,
    record_id,
    rid,
    server_id,
)
from tests.azure.runs import Background, answer
from tests.webhook import Receiver

ROOT = Path(__file__).resolve().parents[2]


def _writes(landscape: Landscape) -> list[str]:
    return [f"{c.method} {c.path}" for c in landscape.api.calls if c.method not in ("GET", "HEAD")]


def _history(landscape: Landscape) -> list[dict]:
    folder = landscape.records / "failover" / landscape.system / "history"
    return [json.loads(p.read_text()) for p in sorted(folder.iterdir())] if folder.exists() else []


def test_failover_happy_path(landscape: Landscape) -> None:
    api = landscape.api
    result = region_failover(system=landscape.system, config_path=landscape.config, approved=True)

    assert landscape.addresses() == DR_ADDRESSES
    assert landscape.a_record("www")[1] == 300 and landscape.a_record("api")[1] == 60
    group = api.resource(rid(DR_RG))
    assert group is not None and group["location"] == "westus2"
    assert api.resource(rid(DR_RG, "Microsoft.Network/publicIPAddresses/pip-dot-copilot-dr"))
    server = landscape.dr_server()
    assert server is not None and server["properties"]["state"] == "Ready"
    assert server["location"] == "westus2"
    assert server["properties"]["createMode"] == "GeoRestore"
    assert server["properties"]["sourceServerResourceId"] == server_id(PRIMARY_RG, PRIMARY_SERVER)
    assert server["properties"]["pointInTimeUTC"] == LATEST_BACKUP
    assert len(api.calls_to("POST", "deployments/dr-site/whatIf$")) == 1
    assert len(api.calls_to("PUT", "deployments/dr-site$")) == 1
    assert len(api.calls_to("PUT", f"flexibleServers/{DR_SERVER}$")) == 1
    # The records were changed only with If-Match on the captured ETags (see the endpoint).
    assert len(api.calls_to("PUT", "dnszones/dotcopilot.com/A/")) == 2

    assert result["rto_met"] is True
    assert {row["record"] for row in result["dns"]} == {"www.dotcopilot.com", "api.dotcopilot.com"}
    assert any("www.dotcopilot.com: 20.50.1.10 → 20.60.2.10" in c for c in result["changes"])
    assert any("clients may keep the old address up to 300 s" in c for c in result["changes"])
    assert any(DR_SERVER in c for c in result["cleanup"])
    assert result["rpo_seconds"] is not None
    # The run's record is closed into the history, with the rollback plan it captured.
    assert not landscape.record_file().exists()
    [record] = _history(landscape)
    assert record["status"] == "completed"
    assert {r["name"]: r["addresses"] for r in record["captured"]["dns"]} == PRIMARY_ADDRESSES


def test_dry_run_shows_the_plan_and_changes_nothing(landscape: Landscape) -> None:
    result = region_failover(system=landscape.system, config_path=landscape.config, dry_run=True)

    assert result["dry_run"] is True
    assert "GeoRestore of dot-copilot-db-prod (eastus) into NEW server" in result["plan"]
    assert "| www.dotcopilot.com | 20.50.1.10 | 300 | 20.60.2.10 |" in result["plan"]
    assert "MISSING: created after approval" in result["plan"]
    assert _writes(landscape) == []
    assert not landscape.records.exists()


def test_health_check_fails_and_the_dns_records_are_put_back(
    managed_identity, health, prefect_server: None, tmp_path: Path
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from tests.azure.landscape import build

    hook = Receiver()
    CustomWebhookNotificationBlock(
        name="dr-azure-test",
        url=hook.url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save("dr-azure-alerts", overwrite=True)
    landscape = build(managed_identity, health, tmp_path)
    Path(landscape.config).write_text(
        Path(landscape.config).read_text()
        + "notifications: {block: custom-webhook/dr-azure-alerts}\n"
    )
    health.mode = "fail"
    try:
        with pytest.raises(VerificationFailed, match="ROLLED BACK") as failed:
            region_failover(
                system=landscape.system,
                config_path=landscape.config,
                approved=True,
                health_timeout_seconds=2,
            )
    finally:
        hook.server.shutdown()

    assert "were put back" in str(failed.value)
    assert landscape.addresses() == PRIMARY_ADDRESSES
    assert landscape.a_record("www")[1] == 300
    [record] = _history(landscape)
    assert record["status"] == "rolled-back"
    assert any("put back" in c["what"] for c in record["changes"])
    [message] = hook.messages
    assert "region-failover failed" in message["subject"]
    assert "ROLLED BACK" in message["body"] and "failed step: verify health" in message["body"]


def test_approval_rejected_changes_nothing(landscape: Landscape) -> None:
    run = Background(lambda: region_failover(system=landscape.system, config_path=landscape.config))
    answer("region-failover", approve=False, reason="not a regional outage")
    with pytest.raises(CancelledRun, match="not a regional outage"):  # a decision, not a failure
        run.join()

    assert _writes(landscape) == []
    assert landscape.addresses() == PRIMARY_ADDRESSES
    assert landscape.api.resource(rid(DR_RG)) is None
    [record] = _history(landscape)
    assert record["status"] == "rejected" and record["changes"] == []


def test_two_failovers_of_one_system_cannot_both_cut_dns(landscape: Landscape) -> None:
    first = Background(
        lambda: region_failover(system=landscape.system, config_path=landscape.config)
    )
    answer("region-failover", approve=True)  # the first is now waiting at the DNS approval

    with pytest.raises(LockHeld, match=f"the failover of {landscape.system}"):
        region_failover(system=landscape.system, config_path=landscape.config, approved=True)

    answer("region-failover", approve=True)
    first.join()
    assert landscape.addresses() == DR_ADDRESSES
    assert len(landscape.api.calls_to("PUT", "dnszones/dotcopilot.com/A/")) == 2
    assert len(landscape.api.calls_to("PUT", f"flexibleServers/{DR_SERVER}$")) == 1


def test_a_record_changed_by_someone_else_is_not_overwritten(landscape: Landscape) -> None:
    run = Background(lambda: region_failover(system=landscape.system, config_path=landscape.config))
    answer("region-failover", approve=True)
    # While the DNS cutover waits for its approval, a person points api elsewhere.
    landscape.api.seed(
        record_id("api"), {"properties": {"TTL": 60, "ARecords": [{"ipv4Address": "20.70.3.3"}]}}
    )
    answer("region-failover", approve=True)
    with pytest.raises(VerificationFailed, match="changed since the rollback plan"):
        run.join()

    # www (cut over by this run) was put back; api keeps the person's change.
    assert landscape.addresses() == {"www": PRIMARY_ADDRESSES["www"], "api": ["20.70.3.3"]}


def test_throttling_and_server_errors_during_the_restore_are_retried_not_doubled(
    landscape: Landscape,
) -> None:
    api = landscape.api
    # The create is applied but its answer lost: the SDK sends the PUT again.
    api.fail("PUT", f"flexibleServers/{DR_SERVER}$", 500, after=True)
    api.fail("GET", "^/_operations/", 429, retry_after=1, times=2)
    api.fail("GET", "^/_operations/", 503)

    region_failover(system=landscape.system, config_path=landscape.config, approved=True)

    puts = api.calls_to("PUT", f"flexibleServers/{DR_SERVER}$")
    assert [c.status for c in puts] == [500, 409]
    assert len(api.operations.on(server_id(DR_RG, DR_SERVER))) == 1  # created once
    assert [c.status for c in api.calls_to("GET", "^/_operations/")][:3] == [429, 429, 503]
    server = landscape.dr_server()
    assert server is not None and server["properties"]["state"] == "Ready"
    assert landscape.addresses() == DR_ADDRESSES


def test_a_run_killed_after_the_dns_change_is_rolled_back_from_its_stored_plan(
    landscape: Landscape,
) -> None:
    api, health = landscape.api, landscape.health
    health.mode = "hang"  # the health check blocks: the run is inside step 6
    script = (
        "from flows.region_failover import region_failover\n"
        f"region_failover(system={landscape.system!r}, config_path={landscape.config!r}, "
        "approved=True)\n"
    )
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert health.entered.wait(120), "the run never reached its health check"
        assert landscape.addresses() == DR_ADDRESSES  # the DNS change was made
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    health.mode = "fail"
    health.release.set()
    stored = json.loads(landscape.record_file().read_text())
    assert stored["status"] == "in-progress" and "dns cutover" in stored["done"]

    # Started again, it finds the rollback plan the killed run stored, not the records as they
    # are now (pointing at the DR site), and puts back what was there before the failover.
    with pytest.raises(VerificationFailed, match="ROLLED BACK"):
        region_failover(
            system=landscape.system,
            config_path=landscape.config,
            approved=True,
            health_timeout_seconds=2,
        )
    assert landscape.addresses() == PRIMARY_ADDRESSES
    # What the killed run did was not done again.
    assert len(api.calls_to("PUT", "deployments/dr-site$")) == 1
    assert len(api.calls_to("PUT", f"flexibleServers/{DR_SERVER}$")) == 1
    [record] = _history(landscape)
    assert record["status"] == "rolled-back"
    assert len(record["runs"]) == 2 and record["runs"][0] != record["runs"][1]


def test_a_self_managed_database_is_restored_in_the_dr_region_from_its_repository(
    managed_identity, health, prefect_server: None, pg_server, make_database, tmp_path: Path
) -> None:
    """``database: repository``: the restore runbook, run as a step, restores the newest backup
    into the DR region's server (here a second PostgreSQL, which demands a password)."""
    import shutil
    import tempfile
    from dataclasses import replace

    from pydantic import SecretStr

    from flows.backup_postgres import backup_postgres
    from tests.azure.landscape import build
    from tests.pg_helpers import PasswordServer, table_fingerprints

    database = make_database("shop")
    with pg_server.connect(dbname=database) as conn:
        conn.execute("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 500) g")
    base = Path(tempfile.mkdtemp(prefix="dr-tests-dr-region-"))
    dr_password = "Dr-Region-Pa55"
    dr_server = PasswordServer(base, dr_password)
    dr = replace(dr_server.start(), password=SecretStr(dr_password))
    try:
        os.environ["DR_TEST_PRIMARY_DSN"] = (
            f"postgresql://postgres@/{database}?host={pg_server.host}"
        )
        os.environ["DR_TEST_DR_DSN"] = (
            f"postgresql://postgres:{dr_password}@/{database}?host={dr.host}"
        )
        landscape = build(
            managed_identity,
            health,
            tmp_path,
            system_yaml=f"""
    connection: {{dsn_env: DR_TEST_PRIMARY_DSN}}
    databases: [{database}]
""",
        )
        config = Path(landscape.config)
        config.write_text(
            config.read_text().replace(
                "sites: {primary:",
                "sites: {database: repository, dr_connection: 'env:DR_TEST_DR_DSN', primary:",
            )
        )
        backup_postgres(system=landscape.system, config_path=landscape.config, retention=False)

        result = region_failover(
            system=landscape.system, config_path=landscape.config, approved=True
        )

        assert table_fingerprints(dr, database) == table_fingerprints(pg_server, database)
        assert landscape.dr_server() is None  # no flexible server in this mode
        assert result["rpo_seconds"] is not None and landscape.addresses() == DR_ADDRESSES
    finally:
        os.environ.pop("DR_TEST_PRIMARY_DSN", None)
        os.environ.pop("DR_TEST_DR_DSN", None)
        dr_server.stop()
        shutil.rmtree(base, ignore_errors=True)
