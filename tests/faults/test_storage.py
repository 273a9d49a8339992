"""The Azure repository failing under a backup: a network cut mid-upload is transient (retried,
exit 1 if it lasts), never reported as bad input, and leaves nothing half-written; refused
credentials are said to be refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.storage.azure import AzureBlobStore
from tests.azurite import Azurite
from tests.faults.conftest import Dr, seed, wait_for
from tests.faults.proxy import CuttableProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[CuttableProxy]:
    port = int(azurite.account_url.rsplit(":", 1)[1].split("/")[0])
    cuttable = CuttableProxy(port)
    yield cuttable
    cuttable.close()


def _via(azurite: Azurite, proxy: CuttableProxy) -> str:
    """The Azurite connection string, through the proxy."""
    direct = azurite.account_url
    return azurite.connection_string.replace(
        direct, direct.replace(direct.rsplit(":", 1)[1].split("/")[0], str(proxy.port), 1)
    )


def _repository(azurite: Azurite, container: str) -> Repository:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    return Repository(AzureBlobStore(client))


def _uncommitted(azurite: Azurite, container: str) -> list[str]:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    committed = {b.name for b in client.list_blobs()}
    every = {b.name for b in client.list_blobs(include=["uncommittedblobs"])}
    return sorted(every - committed)


def _cut_during_upload(proxy: CuttableProxy, outage_seconds: float | None) -> threading.Thread:
    def run() -> None:
        wait_for(lambda: proxy.upstream_bytes > 8 * 1024 * 1024, 120, "the upload to start")
        proxy.cut()
        if outage_seconds is not None:
            time.sleep(outage_seconds)
            proxy.restore()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_network_cut_mid_upload_is_retried_and_leaves_nothing_half_written(
    dr: Dr,
    pg_server: ConnInfo,
    make_database,
    azurite: Azurite,
    azure_container: str,
    proxy: CuttableProxy,
) -> None:
    database = make_database("cut")
    seed(pg_server, database, rows=800_000)
    dr.env["AZURE_STORAGE_CONNECTION_STRING"] = _via(azurite, proxy)
    cutter = _cut_during_upload(proxy, outage_seconds=12)

    result = dr(
        "--debug",
        "backup",
        "postgres",
        "--database",
        database,
        "--repo",
        f"azure://{azure_container}",
        "--json",
    )

    cutter.join(timeout=30)
    assert proxy.upstream_bytes > 8 * 1024 * 1024
    assert result.returncode == 0, result.stderr[-3000:]
    # Ridden out by the storage client's retries and, when those give up, the task's retry
    # (transient_only retries StoreUnavailable: tests/test_errors.py).
    repository = _repository(azurite, azure_container)
    [backup] = repository.backups("postgres", None, database)
    assert repository.verify_objects(backup) == []
    assert repository.leftovers("postgres", backup.system, database) == []
    assert _uncommitted(azurite, azure_container) == []


def test_an_outage_that_lasts_is_an_operation_failure_not_bad_input(
    dr: Dr,
    pg_server: ConnInfo,
    make_database,
    azurite: Azurite,
    azure_container: str,
    proxy: CuttableProxy,
) -> None:
    database = make_database("outage")
    seed(pg_server, database, rows=800_000)
    dr.env["AZURE_STORAGE_CONNECTION_STRING"] = _via(azurite, proxy)
    cutter = _cut_during_upload(proxy, outage_seconds=None)

    result = dr(
        "backup", "postgres", "--database", database, "--repo", f"azure://{azure_container}"
    )

    cutter.join(timeout=5)
    assert result.returncode == 1, result.stderr
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("error: "))
    assert "does not exist" not in line and "cannot reach" not in line
    assert "failed" in line
    proxy.restore()
    assert _repository(azurite, azure_container).backups("postgres", None, database) == []
    # Once the storage is back, the next backup works and removes what the cut left.
    ok = dr(
        "backup",
        "postgres",
        "--database",
        database,
        "--repo",
        f"azure://{azure_container}",
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    made = json.loads(ok.stdout)[0]
    repository = _repository(azurite, azure_container)
    assert [b.id for b in repository.backups("postgres", None, database)] == [made["backup_id"]]
    assert repository.leftovers("postgres", made["system"], database) == []
    assert _uncommitted(azurite, azure_container) == []


def test_refused_credentials_are_not_taken_for_a_missing_repository(
    dr: Dr, azurite: Azurite, azure_container: str, tmp_path: Path
) -> None:
    client = ContainerClient.from_connection_string(azurite.connection_string, azure_container)
    client.create_container()
    forged = "sv=2023-11-03&sr=c&sp=rl&se=2099-01-01T00%3A00%3A00Z&sig=Zm9yZ2VkLXNpZ25hdHVyZQ%3D%3D"
    url = f"{azurite.account_url}/{azure_container}?{forged}"

    listed = dr("backups", "list", "--repo", url)

    assert listed.returncode == 2
    assert "denied" in listed.stderr and "does not exist" not in listed.stderr
    assert "Zm9yZ2Vk" not in listed.stderr
