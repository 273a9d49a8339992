"""``dr backups list`` and ``dr backups prune`` for file storage, configuration and Key Vault
backups: the real command against a local directory and Azurite, beside a database's backups.

The backups are made by the engines themselves (dated in the past where retention needs
them old); listing and pruning go through ``dr`` as an operator runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from dr_runbooks.files import BlobAccount, FileCatalog, backup_files
from dr_runbooks.gitconfig import DEFAULT_REFS, ConfigCatalog, GitRemote, backup_config
from dr_runbooks.keyvault import VaultCatalog, backup_vault
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from dr_runbooks.storage.azure import AzureBlobStore, container_client_from
from tests.azure_api import AzureApi
from tests.azurite import Azurite
from tests.gitconfig.conftest import commit
from tests.keyvault.conftest import BackupActions, client_for
from tests.test_cli import dr
from tests.test_repository import fake_backup

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


@dataclass
class World:
    """dr.yaml with a database, a file storage, a configuration and a Key Vault system; a
    local repository and one in Azurite (both: retention 7 days, min_keep 1)."""

    tmp: Path
    env: dict[str, str]
    local: Repository
    cloud: Repository
    service: BlobServiceClient
    container: str
    origin: Path
    vault: Any

    def dr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return dr(*args, env=self.env)

    def json(self, *args: str) -> Any:
        done = self.dr(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def files(self, repository: Repository) -> FileCatalog:
        return FileCatalog(repository, "app-files")

    def back_up_files(self, repository: Repository, when: datetime) -> str:
        account = BlobAccount(self.service)
        return backup_files(account, self.files(repository), [self.container], now=lambda: when).id

    def back_up_config(self, when: datetime) -> str:
        catalog = ConfigCatalog(self.local, "app-config")
        return backup_config(
            GitRemote.parse(str(self.origin)), catalog, DEFAULT_REFS, now=lambda: when
        ).id

    def back_up_vault(self, when: datetime) -> str:
        return backup_vault(self.vault, VaultCatalog(self.cloud, "app-vault"), now=lambda: when).id


@pytest.fixture
def world(tmp_path: Path, azurite: Azurite) -> Iterator[World]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = f"src-{secrets.token_hex(5)}"
    service.create_container(container)
    source = service.get_container_client(container)
    for name, data in (("a.txt", b"first"), ("b/c.txt", b"second"), ("d.bin", bytes(5000))):
        source.upload_blob(name, data)
    repo_container = f"repo-{secrets.token_hex(5)}"
    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(origin)], check=True)
    commit(origin, "app.yaml", "replicas: 2\n")
    with AzureApi() as api:
        BackupActions(api)
        vault = client_for(api)
        vault.set_secret("db-password", "Pa55-word")
        vault.set_secret("api-key", "k-123")
        config = tmp_path / "dr.yaml"
        config.write_text(f"""
repositories:
  local: {{type: local, path: {tmp_path / "backups"}, retention_days: 7, min_keep: 1}}
  cloud:
    type: azure
    container: {repo_container}
    connection_string_env: DR_TEST_REPO
    retention_days: 7
    min_keep: 1
systems:
  app-db:
    engine: postgres
    connection: {{dsn_env: NO_SUCH_DSN}}
    databases: [shop]
    repositories: [local]
  app-files:
    engine: blob
    files: {{connection_string_env: DR_TEST_FILES, containers: [{container}]}}
    repositories: [local, cloud]
  app-config:
    engine: git
    git: {{url: {origin}}}
    repositories: [local]
  app-vault:
    engine: keyvault
    keyvault: {{vault_url: "{api.url}"}}
    repositories: [cloud]
""")
        cloud = container_client_from(
            connection_string=azurite.connection_string, container_name=repo_container
        )
        yield World(
            tmp=tmp_path,
            env={
                "DR_CONFIG": str(config),
                "DR_TEST_REPO": azurite.connection_string,
                "DR_TEST_FILES": azurite.connection_string,
                "COLUMNS": "200",
            },
            local=Repository(LocalStore(tmp_path / "backups"), "local", 7, 1),
            cloud=Repository(AzureBlobStore(cloud), "cloud", 7, 1),
            service=service,
            container=container,
            origin=origin,
            vault=vault,
        )
    for name in (container, repo_container):
        with contextlib.suppress(ResourceNotFoundError):
            service.delete_container(name)
    service.close()


def _damage_a_manifest(repository: Repository, prefix: str) -> None:
    """A backup folder whose manifest cannot be read (listed DAMAGED, never deleted)."""
    repository.store.put_bytes(prefix + "manifest.json", b'{"id": "truncat')


def _age(path: Path, days: float) -> None:
    """Date a local repository's files ``days`` back (Azurite's clock cannot be set)."""
    moment = time.time() - days * 86400
    for item in [path, *path.rglob("*")]:
        os.utime(item, (moment, moment))


def test_list_shows_file_configuration_and_vault_backups_beside_the_databases(
    world: World,
) -> None:
    database = fake_backup(world.local, "20261101T000000Z-0db0", NOW - DAY, "app-db", "shop")
    files_local = world.back_up_files(world.local, NOW - 2 * DAY)
    files_cloud = world.back_up_files(world.cloud, NOW - DAY)
    config = world.back_up_config(NOW - 3 * DAY)
    damaged = ConfigCatalog(world.local, "app-config").backup_prefix("20261102T000000Z-dead")
    _damage_a_manifest(world.local, damaged)
    vault = world.back_up_vault(NOW - 4 * DAY)

    rows = world.json("backups", "list")

    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == {
        database.id,
        files_local,
        files_cloud,
        config,
        vault,
        "20261102T000000Z-dead",
    }
    files = by_id[files_local]
    assert (files["engine"], files["system"], files["repository"]) == ("blob", "app-files", "local")
    assert (files["count"], files["count_of"], files["size"]) == (3, "blobs", 5011)
    assert files["kind"] == "files" and files["state"] == "OK"
    assert files["consistent_point"] == (NOW - 2 * DAY).isoformat()
    assert files["containers"] == [world.container]
    assert by_id[files_cloud]["repository"] == "cloud"
    git = by_id[config]
    assert (git["engine"], git["database"], git["kind"], git["count"]) == (
        "git",
        "(config)",
        "bundle",
        1,
    )
    assert git["size"] > 0 and git["count_of"] == "refs" and git["state"] == "OK"
    broken = by_id["20261102T000000Z-dead"]
    assert (broken["engine"], broken["kind"], broken["state"]) == ("git", "DAMAGED", "DAMAGED")
    assert broken["problem"]
    secrets_row = by_id[vault]
    assert (secrets_row["engine"], secrets_row["count"], secrets_row["count_of"]) == (
        "keyvault",
        2,
        "secrets",
    )
    assert secrets_row["repository"] == "cloud" and secrets_row["state"] == "OK"
    assert by_id[database.id]["engine"] == "postgres" and by_id[database.id]["state"] == "OK"
    assert "Pa55-word" not in json.dumps(rows)

    # The filters keep working, and each engine can be asked for alone.
    assert {r["id"] for r in world.json("backups", "list", "--engine", "postgres")} == {database.id}
    assert {r["id"] for r in world.json("backups", "list", "--engine", "blob")} == {
        files_local,
        files_cloud,
    }
    assert {r["id"] for r in world.json("backups", "list", "--system", "app-config")} == {
        config,
        "20261102T000000Z-dead",
    }
    assert {r["id"] for r in world.json("backups", "list", "--repo", "cloud")} == {
        files_cloud,
        vault,
    }
    assert {r["id"] for r in world.json("backups", "list", "--database", "shop")} == {database.id}
    refused = world.dr("backups", "list", "--system", "app-vault", "--database", "shop")
    assert refused.returncode == 2 and "--database is for database backups" in refused.stderr
    unknown = world.dr("backups", "list", "--engine", "ftp")
    assert unknown.returncode == 2 and "unknown engine 'ftp'" in unknown.stderr

    shown = world.dr("backups", "list", "--system", "app-config")
    assert shown.returncode == 0, shown.stderr
    assert config in shown.stdout and "(config)" in shown.stdout and "1 refs" in shown.stdout
    assert "damaged 20261102T000000Z-dead" in shown.stdout


def test_prune_of_file_backups_deletes_old_backups_and_the_content_only_they_held(
    world: World,
) -> None:
    old = {r.name: world.back_up_files(r, NOW - 10 * DAY) for r in (world.local, world.cloud)}
    world.service.get_container_client(world.container).upload_blob(
        "a.txt", b"changed", overwrite=True
    )
    new = {r.name: world.back_up_files(r, NOW) for r in (world.local, world.cloud)}
    catalog = world.files(world.local)
    only_old = sorted(
        {s.key for s in catalog.find(backup_id=old["local"]).manifest.content.values()}  # type: ignore[union-attr]
        - {s.key for s in catalog.find(backup_id=new["local"]).manifest.content.values()}  # type: ignore[union-attr]
    )
    assert len(only_old) == 1
    # Content written more than a day ago may be deleted once no kept backup references it.
    _age(world.tmp / "backups" / "files" / "app-files" / "content", days=2)

    dry = world.json("backups", "prune", "--system", "app-files", "--dry-run")

    assert dry["dry_run"] is True and dry["kept"] == 2
    actions = {(c["repository"], c["backup_id"]): c["action"] for c in dry["changes"]}
    assert actions[("local", old["local"])] == "would delete"
    assert actions[("cloud", old["cloud"])] == "would delete"
    assert actions[("local", "")] == "would delete 1 content object(s) no kept backup references"
    assert ("cloud", "") not in actions  # Azurite's content was written just now: it stays
    assert len(catalog.backups()) == 2 and (world.tmp / "backups" / only_old[0]).exists()

    refused = world.dr("backups", "prune", "--system", "app-files")
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    assert len(catalog.backups()) == 2

    # Retention holds the system's lock: while a backup holds it, nothing is deleted.
    with catalog.locked("files backup of app-files"):
        blocked = world.dr("backups", "prune", "--system", "app-files", "--yes")
    assert blocked.returncode == 1 and "locked by" in blocked.stderr
    assert "files backup of app-files" in blocked.stderr and len(catalog.backups()) == 2

    done = world.json("backups", "prune", "--system", "app-files", "--yes")

    assert done["dry_run"] is False and done["kept"] == 2
    assert {(c["repository"], c["backup_id"], c["action"]) for c in done["changes"]} == {
        ("local", old["local"], "deleted"),
        ("cloud", old["cloud"], "deleted"),
        ("local", "", "deleted 1 content object(s) no kept backup references"),
    }
    for repository in (world.local, world.cloud):
        left = world.files(repository).backups()
        assert [b.id for b in left] == [new[repository.name]]
        assert world.files(repository).verify(left[0]) == []
    assert not (world.tmp / "backups" / only_old[0]).exists()


def test_prune_of_configuration_and_vault_backups_keeps_the_newest_and_damaged_ones(
    world: World,
) -> None:
    configs = [world.back_up_config(NOW - days * DAY) for days in (30, 20, 1)]
    catalog = ConfigCatalog(world.local, "app-config")
    damaged = catalog.backup_prefix("20261003T000000Z-dead")
    _damage_a_manifest(world.local, damaged)
    abandoned = catalog.backup_prefix("20261004T000000Z-gone")
    world.local.store.put_bytes(abandoned + "_in_progress.json", b"{}")
    _age(world.tmp / "backups" / abandoned, days=3)
    vaults = [world.back_up_vault(NOW - days * DAY) for days in (12, 0)]

    dry = world.json("backups", "prune", "--system", "app-config", "--dry-run")

    actions = {c["backup_id"]: c["action"] for c in dry["changes"]}
    assert actions == {
        configs[0]: "would delete",
        configs[1]: "would delete",
        abandoned: "would remove abandoned attempt",
        "20261003T000000Z-dead": actions["20261003T000000Z-dead"],
    }
    assert actions["20261003T000000Z-dead"].startswith("left alone: damaged (")
    assert dry["kept"] == 1 and len(catalog.backups()) == 4
    shown = world.dr("backups", "prune", "--system", "app-config", "--dry-run")
    assert f"would delete {configs[0]} in local" in shown.stdout
    assert "kept 1 backup(s) (dry run: nothing deleted)" in shown.stdout

    done = world.json("backups", "prune", "--system", "app-config", "--yes")

    assert {c["backup_id"] for c in done["changes"] if c["action"] == "deleted"} == set(configs[:2])
    assert {b.id for b in catalog.backups()} == {configs[2], "20261003T000000Z-dead"}
    assert not any(world.local.store.list(abandoned))

    vault = world.json("backups", "prune", "--system", "app-vault", "--yes")

    assert vault["kept"] == 1
    assert [(c["repository"], c["backup_id"], c["action"]) for c in vault["changes"]] == [
        ("cloud", vaults[0], "deleted")
    ]
    assert [b.id for b in VaultCatalog(world.cloud, "app-vault").backups()] == [vaults[1]]

    wrong = world.dr("backups", "prune", "--system", "app-vault", "--database", "x", "--yes")
    assert wrong.returncode == 2 and "are for database systems" in wrong.stderr
