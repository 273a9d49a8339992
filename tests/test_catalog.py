"""The protocol the file, configuration and vault catalogs share (dr_runbooks.catalog), run
against each of them on a local repository and one in Azurite: the marker first, the manifest
last, the lock, a damaged manifest, and what dead attempts leave."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from dr_runbooks.catalog import MANIFEST, CatalogManifest, SystemCatalog
from dr_runbooks.errors import BackupDamaged, BackupNotFound, LockHeld, OperationFailed
from dr_runbooks.files import FileCatalog, FileManifest
from dr_runbooks.gitconfig import ConfigCatalog, ConfigManifest
from dr_runbooks.gitconfig.catalog import StoredBundle
from dr_runbooks.keyvault import VaultCatalog, VaultManifest
from dr_runbooks.repository import Repository, new_backup_id
from dr_runbooks.storage import LocalStore
from dr_runbooks.storage.azure import AzureBlobStore, container_client_from
from tests.azurite import Azurite

KINDS = ["files", "config", "vault"]


def _manifest(kind: str, backup_id: str, started: datetime) -> Any:
    common = {"id": backup_id, "system": "app", "started": started, "finished": started}
    if kind == "files":
        return FileManifest(**common, account="https://a.blob", containers={})
    if kind == "config":
        bundle = StoredBundle(key="k", size=0, sha256="0" * 64)
        return ConfigManifest(**common, source="https://git", refs={}, bundle=bundle)
    return VaultManifest(**common, vault="https://v.vault", secrets={})


def _catalog(kind: str, repository: Repository) -> SystemCatalog[Any, Any]:
    kinds: dict[str, type[SystemCatalog[Any, Any]]] = {
        "files": FileCatalog,
        "config": ConfigCatalog,
        "vault": VaultCatalog,
    }
    return kinds[kind](repository, "app")


@pytest.fixture(params=["local", "azure"])
def repository(
    request: pytest.FixtureRequest, tmp_path: Path, azurite: Azurite
) -> Iterator[Repository]:
    if request.param == "local":
        yield Repository(LocalStore(tmp_path / "repo"), name="local", retention_days=7, min_keep=1)
        return
    client = container_client_from(
        connection_string=azurite.connection_string, container_name=f"cat-{secrets.token_hex(5)}"
    )
    yield Repository(AzureBlobStore(client), name="azure", retention_days=7, min_keep=1)
    with contextlib.suppress(ResourceNotFoundError):
        client.delete_container()


def _commit(catalog: SystemCatalog[Any, Any], kind: str, started: datetime) -> str:
    backup_id = new_backup_id(started)
    prefix = catalog.begin(backup_id, started)
    catalog.store.put_bytes(prefix + "payload", b"x")
    catalog.commit(prefix, _manifest(kind, backup_id, started))
    return backup_id


@pytest.mark.parametrize("kind", KINDS)
def test_only_a_committed_folder_is_a_backup_and_the_lock_holder_removes_the_rest(
    kind: str, repository: Repository
) -> None:
    catalog = _catalog(kind, repository)
    now = datetime.now(UTC)
    done = _commit(catalog, kind, now - timedelta(minutes=5))
    dead = catalog.begin(new_backup_id(now), now)
    catalog.store.put_bytes(dead + "payload", b"half")

    assert [b.id for b in catalog.backups()] == [done]
    assert catalog.find().id == done
    # Too young to be anyone's leftover without the lock; all the lock holder's.
    assert catalog.abandoned() == []
    assert catalog.abandoned(now + timedelta(days=2)) == [dead]
    assert catalog.leftovers() == [dead]
    with catalog.locked("test"):
        removed = catalog.remove_leftovers()
    assert removed == [dead.rstrip("/").rsplit("/", 1)[-1]]
    assert list(catalog.store.list(dead)) == []
    assert [b.id for b in catalog.backups()] == [done]
    with pytest.raises(OperationFailed, match="refusing to remove committed backup"):
        catalog.abort(catalog.backup_prefix(done))


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_holder_is_refused_naming_the_first(kind: str, repository: Repository) -> None:
    catalog = _catalog(kind, repository)
    second = _catalog(kind, repository)
    with (
        catalog.locked("first run"),
        pytest.raises(LockHeld, match=r"locked by .*first run"),
        second.locked("second run"),
    ):
        pass
    with catalog.locked("third run"):
        pass  # released with its holder


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_manifest_is_listed_never_chosen_never_expired(
    kind: str, repository: Repository
) -> None:
    catalog = _catalog(kind, repository)
    old = datetime.now(UTC) - timedelta(days=30)
    kept = _commit(catalog, kind, old)
    broken = _commit(catalog, kind, old + timedelta(days=1))
    catalog.store.put_bytes(catalog.backup_prefix(broken) + MANIFEST, b"{not json")
    newest = _commit(catalog, kind, datetime.now(UTC))

    listed = {b.id: b.damaged for b in catalog.backups()}
    assert listed == {kept: False, broken: True, newest: False}
    with pytest.raises(BackupDamaged, match=broken):
        catalog.find(broken)
    with pytest.raises(BackupNotFound, match="newest: "):
        catalog.find("20990101T000000Z-0000")
    if kind != "files":  # the files catalog plans retention with its content
        assert [b.id for b in catalog.expired()] == [kept]


def test_the_lock_holder_removes_a_dead_backups_half_written_content(tmp_path: Path) -> None:
    repository = Repository(LocalStore(tmp_path / "repo"))
    catalog = FileCatalog(repository, "app")
    repository.store.create()
    kept = catalog.put_content("a" * 64, [b"whole"])
    folder = tmp_path / "repo" / "files" / "app" / "content" / "bb"
    folder.mkdir(parents=True)
    partial = folder / f".{'b' * 64}.partial-1234abcd"  # what a put killed mid-way leaves
    partial.write_bytes(b"hal")

    with catalog.locked("test"):
        catalog.remove_leftovers()

    assert not partial.exists()
    assert catalog.content_objects().keys() == {kept.key}


def test_every_manifest_records_what_its_backup_cleaned_up() -> None:
    fields = CatalogManifest.model_fields
    assert "leftovers_removed" in fields
    for manifest in (FileManifest, ConfigManifest, VaultManifest):
        assert issubclass(manifest, CatalogManifest)
