"""The runbooks against the real Azure Blob API (Azurite), and ``dr serve`` against a real
Prefect server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.storage.azure import AzureBlobStore, parse_container_url
from flows.backup_postgres import backup_postgres
from flows.database_failure import database_failure
from tests.pg_helpers import table_fingerprints

ROOT = Path(__file__).resolve().parents[2]


def test_backup_to_azure_and_local_then_restore_from_azure(
    pg_server: ConnInfo, make_database, azure_container: str, tmp_path: Path, monkeypatch
) -> None:
    database = make_database("az")
    with pg_server.connect(dbname=database) as conn:
        conn.execute(
            "CREATE TABLE items AS SELECT g AS id, repeat(md5(g::text), 8) AS body "
            "FROM generate_series(1, 20000) g"
        )
    before = table_fingerprints(pg_server, database)
    monkeypatch.setenv("DR_TEST_AZ_DSN", f"postgresql://postgres@/postgres?host={pg_server.host}")
    azure = f"azure://{azure_container}"

    [made] = backup_postgres(
        database=database,
        connection="env:DR_TEST_AZ_DSN",
        repositories=[azure, str(tmp_path / "local")],
        system="az",
    )

    repo = Repository(AzureBlobStore(parse_container_url(azure)))
    backup = repo.find("postgres", "az", database)
    assert backup.id == made["backup_id"] and repo.verify_objects(backup) == []
    with pg_server.connect(dbname=database) as conn:
        conn.execute("DROP TABLE items")

    result = database_failure(
        system="az",
        database=database,
        connection="env:DR_TEST_AZ_DSN",
        repository=azure,
        approved=True,
    )

    assert result["backup_id"] == made["backup_id"]
    assert table_fingerprints(pg_server, database) == before


def test_dr_serve_registers_every_deployment_of_prefect_yaml(tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert listed.returncode == 0, listed.stderr
    expected = {line.split(":")[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {"postgres-backup-daily", "verify-backups-daily", "database-failure"} <= expected

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        found: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not expected <= found:
            time.sleep(1)
            with get_client(sync_client=True) as client:
                found = {d.name for d in client.read_deployments()}
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
        assert expected <= found
        with get_client(sync_client=True) as client:
            daily = next(d for d in client.read_deployments() if d.name == "postgres-backup-daily")
        assert [s.schedule.cron for s in daily.schedules] == ["0 2 * * *"]  # type: ignore[union-attr]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_status_reports_blob_soft_delete_of_azure_repositories(
    azurite, azure_container: str, tmp_path: Path
) -> None:
    import json

    from azure.storage.blob import BlobServiceClient, RetentionPolicy

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    config = tmp_path / "dr.yaml"
    config.write_text(f"""
repositories:
  azure: {{type: azure, container: {azure_container},
           connection_string_env: AZURE_STORAGE_CONNECTION_STRING}}
systems:
  billing: {{engine: postgres, databases: [billing], repositories: [azure]}}
""")

    def status() -> dict:
        result = subprocess.run(
            [sys.executable, "-m", "cli", "--config", str(config), "status", "--json"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1, result.stderr  # no backup yet: MISSING
        return json.loads(result.stdout)

    service.set_service_properties(delete_retention_policy=RetentionPolicy(enabled=False))
    first = status()
    assert first["systems"][0]["state"] == "MISSING"
    assert first["soft_delete"] == [
        {
            "repository": "azure",
            "meets_plan": False,
            "soft_delete": {"enabled": False, "days": None},
        }
    ]
    service.set_service_properties(delete_retention_policy=RetentionPolicy(enabled=True, days=30))
    assert status()["soft_delete"][0] == {
        "repository": "azure",
        "meets_plan": True,
        "soft_delete": {"enabled": True, "days": 30},
    }
