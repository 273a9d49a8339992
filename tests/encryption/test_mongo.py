"""Encrypted MongoDB backups through the engine (a fake server at the client-factory seam):
the stored archive shows nothing in clear, decrypts with the identity into the very archive
a plain backup stores, and restores equal documents."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from dr_runbooks import crypto
from dr_runbooks.errors import ChecksumMismatch, IdentityRequired
from dr_runbooks.mongo.backup import backup_database
from dr_runbooks.mongo.fetch import fetch_backup
from dr_runbooks.mongo.plan import plan_restore
from dr_runbooks.mongo.side import restore_into_side
from dr_runbooks.mongo.verify import verify_restore
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from tests.encryption.conftest import Key
from tests.mongodb_engine.conftest import URI
from tests.mongodb_engine.fake import FakeServer
from tests.mongodb_engine.seed import documents, seed_shop


@pytest.fixture(autouse=True)
def _no_identity_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crypto.IDENTITY_FILE_ENV, raising=False)


def test_an_encrypted_archive_restores_with_the_identity(
    keys: Callable[[str], Key], tmp_path: Path
) -> None:
    from dr_runbooks.mongo.connection import MongoConnInfo

    server = FakeServer()
    seed_shop(server, orders=120)
    conninfo = MongoConnInfo.from_uri(URI).with_factory(server.client)
    key = keys("key")
    ring = crypto.Keyring([crypto.FileIdentity(str(key.path))])
    sealed = Repository(LocalStore(tmp_path / "sealed"), encrypt_to=[key.recipient], keyring=ring)
    manifest = backup_database(conninfo, "shop", "app", sealed, engine="native")
    assert [o.name for o in manifest.objects] == ["data.archive.zst.age"]
    assert manifest.recipients == [key.recipient]
    stored = next((tmp_path / "sealed").rglob("data.archive.zst.age")).read_bytes()
    assert b"sku-00042" not in stored and stored.startswith(b"age-encryption.org/v1\n")

    backup = sealed.find("mongodb", "app", "shop")
    with pytest.raises(IdentityRequired, match=key.recipient):
        fetch_backup(Repository(LocalStore(tmp_path / "sealed")), backup)
    fetched = fetch_backup(sealed, backup)
    target = FakeServer()
    try:
        archive = zstandard.ZstdDecompressor().decompress(
            fetched.path.read_bytes(), max_output_size=1 << 26
        )
        assert b"sku-00042" in archive
        with fetched.open() as dump:
            plan = plan_restore(dump, backup.id, {"shop": "shop"}, manifest=backup.manifest)
            client = target.client()
            restore_into_side(client, dump, plan)
            assert verify_restore(client, plan)["problems"] == []
    finally:
        fetched.cleanup()
    side = plan.databases[0].side
    assert documents(target, side, "orders") == documents(server, "shop", "orders")

    # The standard tools read the same archive (docs/encryption.md), when they are here.
    if subprocess.run(["which", "age"], capture_output=True).returncode == 0:
        opened = subprocess.run(
            ["age", "--decrypt", "--identity", str(key.path)],
            input=stored,
            capture_output=True,
            check=True,
        ).stdout
        assert zstandard.ZstdDecompressor().decompress(opened, max_output_size=1 << 26) == archive


def test_a_flipped_byte_in_an_encrypted_archive_is_a_checksum_mismatch(
    keys: Callable[[str], Key], tmp_path: Path
) -> None:
    from dr_runbooks.mongo.connection import MongoConnInfo

    server = FakeServer()
    seed_shop(server, orders=60)
    key = keys("key")
    repo = Repository(
        LocalStore(tmp_path / "repo"),
        encrypt_to=[key.recipient],
        keyring=crypto.Keyring([crypto.FileIdentity(str(key.path))]),
    )
    backup_database(
        MongoConnInfo.from_uri(URI).with_factory(server.client),
        "shop",
        "app",
        repo,
        engine="native",
    )
    path = next((tmp_path / "repo").rglob("data.archive.zst.age"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch) as mismatch:
        fetch_backup(repo, repo.find("mongodb", "app", "shop"))
    assert type(mismatch.value) is ChecksumMismatch
