"""The file-storage runbooks as real Prefect flows: the daily backup, then the failure runbook
restoring a prefix to the first backup's state (a dry run first, which changes nothing)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.files import FileCatalog
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from flows.backup_files import backup_files
from flows.file_storage_failure import file_storage_failure
from flows.verify_backups import verify_backups
from tests.azure_api import AzureApi
from tests.azure_api.management import GROUP, SUBSCRIPTION, seed_account, site_block
from tests.azurite import Azurite
from tests.files.conftest import Blob, State, generated_state, read, write


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """Every flow test runs against the session's Prefect test server."""


@pytest.fixture
def config(tmp_path: Path, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DR_TEST_FILES", azurite.connection_string)
    path = tmp_path / "dr.yaml"
    path.write_text(f"""
repositories:
  files: {{type: local, path: {tmp_path / "repo"}, retention_days: 7, min_keep: 1}}
""")
    return str(path)


def test_backup_then_restore_a_prefix_through_the_runbooks(
    service: BlobServiceClient,
    source: Callable[[State], str],
    config: str,
    tmp_path: Path,
) -> None:
    first = generated_state(40)
    container = source(first)
    common: dict[str, Any] = {
        "system": "app-files",
        "account": "env:DR_TEST_FILES",
        "config_path": config,
    }

    one = backup_files(**common, repository="files", containers=[container])

    assert one["policy"]["state"] in ("OK", "POLICY")
    assert one["containers"][0]["read"] == 40
    write(service, container, {"docs/file-0000.bin": Blob(b"overwritten", {}, "text/plain")})
    two = backup_files(**common, repository="files", containers=[container])
    assert two["containers"][0]["read"] == 1 and two["retention"]["deleted"] == []

    restore: dict[str, Any] = {
        **common,
        "repository": "files",
        "container": container,
        "prefix": "docs/",
        "backup_id": one["backup_id"],
    }
    plan = file_storage_failure(**restore, dry_run=True)
    assert plan["dry_run"] is True and "docs/" in plan["plan"]
    catalog = FileCatalog(Repository(LocalStore(tmp_path / "repo")), "app-files")
    assert [b.id for b in catalog.backups()] == [two["backup_id"], one["backup_id"]]

    result = file_storage_failure(**restore, approved=True)

    docs = {n: b for n, b in first.items() if n.startswith("docs/")}
    assert read(service, result["target"]) == docs
    assert result["verified"] == len(docs) and result["rpo_met"] is True
    assert read(service, container)["docs/file-0000.bin"].data == b"overwritten"


def test_verify_backups_checks_a_file_system_and_reports_its_policy(
    source: Callable[[State], str], config: str, tmp_path: Path
) -> None:
    container = source(generated_state(8))
    Path(config).write_text(
        Path(config).read_text()
        + f"""
systems:
  app-files:
    engine: blob
    files: {{connection_string_env: DR_TEST_FILES, containers: [{container}]}}
    repositories: [files]
"""
    )
    backup_files(
        system="app-files",
        account="env:DR_TEST_FILES",
        repository="files",
        containers=[container],
        config_path=config,
    )

    # Azurite keeps no blob versions: the account falls short of the plan, which fails the
    # verification (and notifies) though the backup's checksums are fine.
    with pytest.raises(
        RestoreVerificationFailed, match=r"app-files/\(files\): policy: .*versioning: off"
    ):
        verify_backups(systems=["app-files"], notify=False, config_path=config)

    catalog = FileCatalog(Repository(LocalStore(tmp_path / "repo")), "app-files")
    records = catalog.verifications(catalog.find())
    assert [r["ok"] for r in records if r["kind"] == "checksums"][-1] is True


def test_the_runbooks_read_the_account_through_resource_manager_as_a_saved_site(
    source: Callable[[State], str], config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = source(generated_state(4))
    with AzureApi() as api:
        # The site block signs in as the worker's managed identity (DefaultAzureCredential).
        for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("IDENTITY_ENDPOINT", api.identity_endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", api.identity_header)
        site = f"files-arm-{secrets.token_hex(4)}"
        site_block(api).save(site, overwrite=True)
        seed_account(api, "dotcopilotfiles", container_days=None)
        Path(config).write_text(
            Path(config).read_text()
            + f"""
systems:
  app-files:
    engine: blob
    files:
      connection_string_env: DR_TEST_FILES
      containers: [{container}]
      subscription_id: {SUBSCRIPTION}
      resource_group: {GROUP}
      account_name: dotcopilotfiles
      site: {site}
    repositories: [files]
"""
        )

        result = backup_files(
            system="app-files",
            account="env:DR_TEST_FILES",
            repository="files",
            containers=[container],
            config_path=config,
        )

        assert result["policy"]["source"] == "management plane"
        assert result["policy"]["state"] == "POLICY"
        # Read whole: Azurite's missing blob versions play no part.
        with pytest.raises(
            RestoreVerificationFailed,
            match=r"app-files/\(files\): policy: container soft delete: off \(plan: on\)$",
        ):
            verify_backups(systems=["app-files"], notify=False, config_path=config)
        assert {c.status for c in api.calls_to("GET", "/storageAccounts/")} == {200}
