"""File backups against Azurite: incremental backups of a few hundred blobs, restores of a
container, a prefix and a single blob to an earlier state, a blob changed while it is read,
verification and retention."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from pyrage import x25519

from dr_runbooks.crypto import IDENTITY_FILE_ENV
from dr_runbooks.errors import BackupNotFound, BadInput, ChecksumMismatch, IdentityRequired
from dr_runbooks.files import (
    BlobAccount,
    FileCatalog,
    FileManifest,
    SourceBlob,
    backup_files,
    plan_restore,
    restore_files,
)
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from tests.files.conftest import Blob, State, generated_state, read, write


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Changes:
    state: State
    modified: list[str]
    metadata_only: list[str]
    deleted: list[str]
    added: list[str]
    copied: str


def change(service: BlobServiceClient, container: str, before: State) -> Changes:
    """Between two backups: new content for 10 blobs, new metadata for 5, 7 deleted, 12
    added, one copied under a new name. Each kind touches ``docs/``."""
    rng = random.Random(7)
    names = sorted(n for n, b in before.items() if b.data)
    modified, metadata_only, deleted = names[:10], names[10:15], names[20:27]
    state = dict(before)
    for name in modified:
        state[name] = Blob(rng.randbytes(len(before[name].data) + 5), {"v": "2"}, "text/plain")
    for name in metadata_only:
        state[name] = Blob(before[name].data, {"reviewed": "yes"}, before[name].content_type)
    added = [f"{p}new-{i:02d}.bin" for i, p in enumerate(["docs/", "img/2026/", "new/"] * 4)]
    for name in added:
        state[name] = Blob(rng.randbytes(rng.randint(0, 9000)), {"added": "1"}, "image/png")
    copied = "docs/copy-of-" + names[30].replace("/", "-")
    state[copied] = before[names[30]]
    write(service, container, {n: state[n] for n in [*modified, *metadata_only, *added, copied]})
    client = service.get_container_client(container)
    for name in deleted:
        client.delete_blob(name)
        del state[name]
    assert any(n.startswith("docs/") for n in modified + metadata_only + deleted)
    return Changes(state, modified, metadata_only, deleted, added, copied)


def content_objects(catalog: FileCatalog) -> set[str]:
    return set(catalog.content_objects())


def test_incremental_backups_restore_a_container_to_each_state(
    service: BlobServiceClient,
    account: BlobAccount,
    source: Callable[[State], str],
    repository: Repository,
) -> None:
    # A few hundred blobs with the local repository; fewer where Azurite is both sides.
    count = 300 if isinstance(repository.store, LocalStore) else 80
    first = generated_state(count)
    container = source(first)
    catalog = FileCatalog(repository, "files-app")

    one = backup_files(account, catalog, [container])

    record = one.containers[container]
    assert (record.copied, record.reused, record.deleted) == (count, 0, [])
    assert {b.name: (b.size, b.sha256, b.metadata, b.content_type) for b in record.blobs} == {
        n: (len(b.data), sha(b.data), b.metadata, b.content_type) for n, b in first.items()
    }
    assert all(b.content_md5 and b.etag for b in record.blobs)
    distinct = {sha(b.data) for b in first.values()}
    assert set(one.content) == distinct
    assert len(content_objects(catalog)) == len(distinct) < count  # shared content stored once

    changes = change(service, container, first)
    two = backup_files(account, catalog, [container])

    record = two.containers[container]
    assert two.previous == one.id
    # Only new content was read: metadata changes and the copy were matched by MD5.
    assert record.copied == len(changes.modified) + len(changes.added)
    assert record.reused == len(changes.state) - record.copied
    assert record.deleted == sorted(changes.deleted)
    assert {b.name: (b.sha256, b.metadata) for b in record.blobs} == {
        n: (sha(b.data), b.metadata) for n, b in changes.state.items()
    }
    new_content = {sha(changes.state[n].data) for n in changes.modified + changes.added}
    assert len(content_objects(catalog)) == len(distinct | new_content)
    # Deletions in the source are recorded, not propagated: the first backup is whole.
    assert catalog.verify(catalog.find(backup_id=one.id)) == []

    earlier = catalog.find(before=two.started)
    assert earlier.id == one.id
    restored = restore_files(account, catalog, plan_restore(account, catalog, earlier, container))
    assert restored.target != container and restored.verified == count
    assert read(service, restored.target) == first

    latest = catalog.find()
    assert latest.id == two.id
    target = f"{container}-latest"
    plan = plan_restore(account, catalog, latest, container, prefix="logs/", target=target)
    restore_files(account, catalog, plan)
    assert read(service, target) == {
        n: b for n, b in changes.state.items() if n.startswith("logs/")
    }
    assert read(service, container) == changes.state  # the source was never touched


def test_restore_a_prefix_in_place_keeps_what_it_overwrites(
    service: BlobServiceClient,
    account: BlobAccount,
    source: Callable[[State], str],
    local_repository: Repository,
) -> None:
    first = generated_state(120)
    container = source(first)
    catalog = FileCatalog(local_repository, "files-app")
    one = backup_files(account, catalog, [container])
    changes = change(service, container, first)
    two = backup_files(account, catalog, [container])

    backup = catalog.find(backup_id=one.id)
    plan = plan_restore(account, catalog, backup, container, prefix="docs/", in_place=True)
    added_docs = sorted(n for n in [*changes.added, changes.copied] if n.startswith("docs/"))
    assert plan.remove == added_docs
    assert set(plan.overwrite) == {
        n for n in changes.modified + changes.metadata_only if n.startswith("docs/")
    }
    with pytest.raises(BadInput, match="needs approval"):
        restore_files(account, catalog, plan)
    assert read(service, container) == changes.state

    result = restore_files(account, catalog, plan, approved=True)

    now = read(service, container)
    assert {n: b for n, b in now.items() if n.startswith("docs/")} == {
        n: b for n, b in first.items() if n.startswith("docs/")
    }
    assert {n: b for n, b in now.items() if not n.startswith("docs/")} == {
        n: b for n, b in changes.state.items() if not n.startswith("docs/")
    }
    assert result.removed == added_docs and result.kept_in is not None
    assert result.earlier_kept_in == []  # the first run of this restore
    # "Latest" is still the scheduled backup; the pre-restore one is found by its id.
    assert catalog.find().id == two.id
    kept = catalog.find(backup_id=result.kept_in)
    assert kept.manifest is not None and kept.manifest.kind == "pre-restore"

    overwritten = next(n for n in changes.modified if n.startswith("docs/"))
    single = plan_restore(account, catalog, kept, container, blob=overwritten)
    restore_files(account, catalog, single)
    assert read(service, single.target) == {overwritten: changes.state[overwritten]}

    deleted = changes.deleted[0]
    single = plan_restore(account, catalog, backup, container, blob=deleted)
    assert single.target != container
    restore_files(account, catalog, single)
    assert read(service, single.target) == {deleted: first[deleted]}
    with pytest.raises(BadInput, match="holds no blob"):
        plan_restore(account, catalog, backup, container, blob=changes.added[0])


class Interfering(BlobAccount):
    """The real account, where ``name`` is replaced by the next of ``versions`` each time
    its read has returned its first range."""

    def __init__(self, service: BlobServiceClient, name: str, versions: list[bytes]) -> None:
        super().__init__(service)
        self.name, self.versions, self.reads = name, versions, 0

    def read(self, blob: SourceBlob) -> Iterator[bytes]:
        chunks = super().read(blob)
        if blob.name != self.name:
            yield from chunks
            return
        self.reads += 1
        yield next(chunks)
        if self.versions:
            client = self.service.get_blob_client(blob.container, blob.name)
            client.upload_blob(self.versions.pop(0), overwrite=True)
        yield from chunks


def test_a_blob_replaced_while_read_is_read_again_never_stored_half(
    service: BlobServiceClient,
    source: Callable[[State], str],
    local_repository: Repository,
) -> None:
    rng = random.Random(3)
    old, new = rng.randbytes(200_000), rng.randbytes(200_000)
    container = source({"hot.bin": Blob(old, {}, "text/plain"), "cold.bin": Blob(b"x", {}, "")})
    catalog = FileCatalog(local_repository, "files-app")

    account = Interfering(service, "hot.bin", [new])
    manifest = backup_files(account, catalog, [container])

    entry = manifest.containers[container].entry("hot.bin")
    assert entry is not None and entry.sha256 == sha(new) and entry.size == len(new)
    assert account.reads == 2 and manifest.containers[container].unstable == []
    assert sha(old) not in manifest.content
    stored = b"".join(catalog.read_content(manifest.content[sha(new)], None))
    assert stored == new

    # A blob that changes on every read keeps the previous backup's version, named unstable.
    write(service, container, {"hot.bin": Blob(rng.randbytes(200_000), {}, "text/plain")})
    versions = [rng.randbytes(200_000) for _ in range(3)]
    account = Interfering(service, "hot.bin", list(versions))
    before = content_objects(catalog)
    again = backup_files(account, catalog, [container], attempts=3)

    record = again.containers[container]
    assert record.unstable == ["hot.bin"] and account.reads == 3
    kept = record.entry("hot.bin")
    assert kept is not None and kept.sha256 == sha(new)
    assert content_objects(catalog) == before  # no piece of a moving blob was stored
    assert read(service, container)["hot.bin"].data == versions[-1]


def test_verification_finds_damaged_content_and_restore_refuses_it(
    service: BlobServiceClient,
    account: BlobAccount,
    source: Callable[[State], str],
    tmp_path: Path,
) -> None:
    repository = Repository(LocalStore(tmp_path / "repo"))
    state = generated_state(20)
    container = source(state)
    catalog = FileCatalog(repository, "files-app")
    manifest = backup_files(account, catalog, [container])
    backup = catalog.find()
    assert catalog.verify(backup) == []

    name = "docs/file-0004.bin"
    stored = manifest.content[sha(state[name].data)]
    path = tmp_path / "repo" / stored.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    problems = catalog.verify(backup)
    assert len(problems) == 1 and stored.key in problems[0]
    plan = plan_restore(account, catalog, backup, container, blob=name)
    with pytest.raises(ChecksumMismatch):
        restore_files(account, catalog, plan)
    assert name not in read(service, plan.target)


def test_retention_keeps_every_content_object_a_kept_backup_references(
    service: BlobServiceClient,
    account: BlobAccount,
    source: Callable[[State], str],
    local_repository: Repository,
) -> None:
    first = generated_state(60)
    container = source(first)
    catalog = FileCatalog(local_repository, "files-app")
    now = datetime.now(UTC)
    old = backup_files(account, catalog, [container], now=lambda: now - timedelta(days=10))
    changes = change(service, container, first)
    new = backup_files(account, catalog, [container], now=lambda: now)

    young = catalog.plan_retention(now=now)
    assert [b.id for b in young.delete] == [old.id]
    assert young.unreferenced == []  # content written within the last day may be in use

    plan = catalog.plan_retention(now=now + timedelta(days=2))
    only_old = {s.key for s in old.content.values()} - {s.key for s in new.content.values()}
    assert only_old and set(plan.unreferenced) == only_old
    catalog.apply_retention(plan)

    assert [b.id for b in catalog.backups()] == [new.id]
    backup = catalog.find()
    assert catalog.verify(backup) == []
    restored = restore_files(account, catalog, plan_restore(account, catalog, backup, container))
    assert read(service, restored.target) == changes.state
    with pytest.raises(BackupNotFound):
        catalog.find(backup_id=old.id)


def test_a_damaged_manifest_stops_content_deletion(
    account: BlobAccount,
    source: Callable[[State], str],
    local_repository: Repository,
) -> None:
    container = source(generated_state(10))
    catalog = FileCatalog(local_repository, "files-app")
    now = datetime.now(UTC)
    backup_files(account, catalog, [container], now=lambda: now - timedelta(days=10))
    backup_files(account, catalog, [container], now=lambda: now)
    catalog.store.put_bytes(catalog.backup_prefix("20261101T000000Z-dead") + "manifest.json", b"{")

    plan = catalog.plan_retention(now=now + timedelta(days=30))

    assert [b.id for b in plan.damaged] == ["20261101T000000Z-dead"]
    assert plan.unreferenced == [] and plan.content_kept_because
    assert FileManifest.model_fields["engine"].default == "blob"


def test_an_encrypted_repository_stores_content_sealed_and_restores_with_the_identity(
    service: BlobServiceClient,
    account: BlobAccount,
    source: Callable[[State], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity = x25519.Identity.generate()
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{identity}\n")
    key_file.chmod(0o600)
    monkeypatch.delenv(IDENTITY_FILE_ENV, raising=False)
    repository = Repository(LocalStore(tmp_path / "repo"), encrypt_to=[str(identity.to_public())])
    state = generated_state(15)
    container = source(state)
    catalog = FileCatalog(repository, "files-app")
    manifest = backup_files(account, catalog, [container])

    name = "docs/file-0004.bin"
    stored = manifest.content[sha(state[name].data)]
    assert stored.key.endswith(".age") and stored.encryption is not None
    raw = (tmp_path / "repo" / stored.key).read_bytes()
    assert state[name].data not in raw and raw.startswith(b"age-encryption.org/v1")
    backup = catalog.find()
    assert catalog.verify(backup) == []  # checksums of the stored bytes: no key needed

    plan = plan_restore(account, catalog, backup, container, prefix="docs/")
    with pytest.raises(IdentityRequired):
        restore_files(account, catalog, plan)
    assert not account.container_exists(plan.target)  # refused before anything was touched
    monkeypatch.setenv(IDENTITY_FILE_ENV, str(key_file))
    restore_files(account, catalog, plan)
    assert read(service, plan.target) == {n: b for n, b in state.items() if n.startswith("docs/")}


class _CountingStore(LocalStore):
    """A local store that counts the writes of each key, and takes its time over them (so
    reads finishing together overlap while they store)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: dict[str, int] = {}

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        self.puts[key] = self.puts.get(key, 0) + 1
        time.sleep(0.05)
        return super().put(key, chunks)


def test_blobs_read_at_once_store_shared_content_once_even_encrypted(
    account: BlobAccount, source: Callable[[State], str], tmp_path: Path
) -> None:
    # Encrypting the same bytes twice gives different objects: two reads storing the same
    # content at once would leave one object and a manifest describing the other.
    identity = x25519.Identity.generate()
    store = _CountingStore(tmp_path / "repo")
    repository = Repository(store, encrypt_to=[str(identity.to_public())])
    same = random.Random(5).randbytes(70_000)  # read in two ranges: the reads overlap
    state = {
        f"copy-{i:02d}.bin": Blob(same if i % 2 else bytes([i]) * 500, {}, "text/plain")
        for i in range(40)
    }
    container = source(state)
    catalog = FileCatalog(repository, "files-app")

    manifest = backup_files(account, catalog, [container], parallel=8)

    assert [b.name for b in manifest.containers[container].blobs] == sorted(state)  # listed order
    assert len(manifest.content) == 21  # 20 distinct small blobs and one shared content
    stored = sorted(p for p in (tmp_path / "repo" / "files").rglob("*.age"))
    assert len(stored) == 21
    assert [key for key, count in store.puts.items() if count > 1] == []  # each written once
    assert catalog.verify(catalog.find()) == []
    with pytest.raises(BadInput, match="parallel"):
        backup_files(account, catalog, [container], parallel=0)
