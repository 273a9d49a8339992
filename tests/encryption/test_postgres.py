"""Encrypted PostgreSQL backups through the engine, on a real PostgreSQL 18 server: stored
objects show nothing in clear, restores need the identity, damage is caught by the checksum,
plain and encrypted backups share a repository, copies and rekeys keep every backup
restorable."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from dr_runbooks import crypto
from dr_runbooks.errors import ChecksumMismatch, DecryptionFailed, IdentityRequired
from dr_runbooks.postgres import backup as pg_backup
from dr_runbooks.postgres import restore
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.rekey import rekey_backup
from dr_runbooks.repository import MANIFEST, Repository, copy_backup
from dr_runbooks.storage import LocalStore
from tests.encryption.conftest import MARKER, ROWS, Key, count, seed


@pytest.fixture(autouse=True)
def _no_identity_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(crypto.IDENTITY_FILE_ENV, raising=False)
    monkeypatch.setenv("DR_WORK_DIR", str(tmp_path / "work"))
    (tmp_path / "work").mkdir()


def _repo(path: Path, *keys: Key, identity: Key | None = None) -> Repository:
    sources = [crypto.FileIdentity(str(identity.path))] if identity else []
    return Repository(
        LocalStore(path), encrypt_to=[k.recipient for k in keys], keyring=crypto.Keyring(sources)
    )


def _restore(conninfo: ConnInfo, repo: Repository, backup_id: str, source: str, target: str):
    backup = repo.find("postgres", "sys", source, backup_id=backup_id)
    fetched = pg_backup.fetch_backup(repo, backup)
    try:
        restore.restore_database(conninfo, fetched, target)
    finally:
        fetched.cleanup()


def _stored(root: Path) -> Iterable[tuple[Path, bytes]]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def test_an_encrypted_backup_shows_nothing_in_clear_and_restores_with_the_identity(
    pg_server: ConnInfo, make_database: Callable[[str], str], keys, tmp_path: Path
) -> None:
    source = make_database("enc")
    seed(pg_server, source)
    main, offline = keys("main"), keys("offline")
    repo = _repo(tmp_path / "repo", main, offline, identity=offline)
    manifest = pg_backup.backup_database(pg_server, source, "sys", repo)

    assert [o.name for o in manifest.objects] == ["data.dump.zst.age", "roles.json.age"]
    for entry in manifest.objects:
        assert entry.encryption is not None
        assert entry.encryption.recipients == [main.recipient, offline.recipient]
    for path, content in _stored(tmp_path / "repo"):
        assert MARKER.encode() not in content, path
        assert main.identity.encode() not in content and offline.identity.encode() not in content
    # Checking what is stored needs no key.
    assert (
        Repository(LocalStore(tmp_path / "repo")).verify_objects(repo.find("postgres", None, None))
        == []
    )

    _restore(pg_server, repo, manifest.id, source, f"{source}__copy")
    assert count(pg_server, f"{source}__copy") == ROWS


def test_without_a_matching_identity_nothing_is_fetched(
    pg_server: ConnInfo, make_database: Callable[[str], str], keys, tmp_path: Path
) -> None:
    source = make_database("noid")
    seed(pg_server, source, rows=10)
    key, stranger = keys("key"), keys("stranger")
    repo = _repo(tmp_path / "repo", key)
    pg_backup.backup_database(pg_server, source, "sys", repo)
    backup = repo.find("postgres", "sys", source)
    with pytest.raises(IdentityRequired, match=key.recipient):
        pg_backup.fetch_backup(repo, backup)
    with pytest.raises(IdentityRequired, match=stranger.recipient):
        pg_backup.fetch_backup(_repo(tmp_path / "repo", identity=stranger), backup)
    assert list((tmp_path / "work").iterdir()) == []


def test_a_flipped_byte_is_a_checksum_mismatch_and_a_truncation_is_refused(
    pg_server: ConnInfo, make_database: Callable[[str], str], keys, tmp_path: Path
) -> None:
    source = make_database("dmg")
    seed(pg_server, source)
    key = keys("key")
    repo = _repo(tmp_path / "repo", key, identity=key)
    manifest = pg_backup.backup_database(pg_server, source, "sys", repo)
    backup = repo.find("postgres", "sys", source)
    data = tmp_path / "repo" / backup.prefix / "data.dump.zst.age"
    original = data.read_bytes()

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    data.write_bytes(bytes(flipped))
    with pytest.raises(ChecksumMismatch) as mismatch:
        pg_backup.fetch_backup(repo, backup)
    assert type(mismatch.value) is ChecksumMismatch and "is corrupt" in str(mismatch.value)

    # Truncated together with its manifest (a forged or half-copied pair): age refuses it.
    truncated = original[: len(original) - 1000]
    data.write_bytes(truncated)
    import hashlib

    entry = manifest.object("data.dump.zst")
    forged = manifest.model_copy(deep=True)
    forged.objects[0] = entry.model_copy(
        update={"size": len(truncated), "sha256": hashlib.sha256(truncated).hexdigest()}
    )
    (tmp_path / "repo" / backup.prefix / MANIFEST).write_text(forged.model_dump_json())
    with pytest.raises(DecryptionFailed, match="does not decrypt"):
        pg_backup.fetch_backup(repo, repo.find("postgres", "sys", source))
    assert list((tmp_path / "work").iterdir()) == []


def test_plain_and_encrypted_backups_share_a_repository(
    pg_server: ConnInfo, make_database: Callable[[str], str], keys, tmp_path: Path
) -> None:
    source = make_database("mix")
    seed(pg_server, source, rows=50)
    key = keys("key")
    plain = pg_backup.backup_database(pg_server, source, "sys", _repo(tmp_path / "repo"))
    encrypted = pg_backup.backup_database(pg_server, source, "sys", _repo(tmp_path / "repo", key))
    repo = _repo(tmp_path / "repo")  # no identity at all
    listed = {b.id: b.summary()["encrypted_to"] for b in repo.backups("postgres")}
    assert listed == {plain.id: [], encrypted.id: [key.recipient]}
    assert repo.find("postgres", "sys", source).id == encrypted.id
    _restore(pg_server, repo, plain.id, source, f"{source}__plain")
    assert count(pg_server, f"{source}__plain") == 50
    with pytest.raises(IdentityRequired):
        _restore(pg_server, repo, encrypted.id, source, f"{source}__enc")
    _restore(
        pg_server, _repo(tmp_path / "repo", identity=key), encrypted.id, source, f"{source}__e"
    )
    assert count(pg_server, f"{source}__e") == 50


def test_a_copy_into_an_encrypting_repository_is_encrypted_on_the_way(
    pg_server: ConnInfo, make_database: Callable[[str], str], keys, tmp_path: Path
) -> None:
    source = make_database("cpy")
    seed(pg_server, source, rows=40)
    key = keys("key")
    local = _repo(tmp_path / "local")
    pg_backup.backup_database(pg_server, source, "sys", local)
    offsite = _repo(tmp_path / "offsite", key, identity=key)
    copied = copy_backup(local, local.find("postgres", "sys", source), offsite)
    assert [o.name for o in copied.objects] == ["data.dump.zst.age", "roles.json.age"]
    for path, content in _stored(tmp_path / "offsite"):
        assert MARKER.encode() not in content, path
    assert offsite.verify_objects(offsite.find("postgres", None, None)) == []
    _restore(pg_server, offsite, copied.id, source, f"{source}__off")
    assert count(pg_server, f"{source}__off") == 40


class _CrashingStore(LocalStore):
    """Dies (raises) at one chosen write or delete, as a killed process would stop there."""

    crash_on: str | None = None

    def put(self, key: str, chunks) -> int:  # type: ignore[no-untyped-def]
        if self.crash_on == "manifest" and key.endswith(MANIFEST):
            raise KeyboardInterrupt("killed before the manifest switched")
        return super().put(key, chunks)

    def delete(self, keys) -> None:  # type: ignore[no-untyped-def]
        names = list(keys)
        if self.crash_on == "delete" and any("data.dump.zst.age" in k for k in names):
            raise KeyboardInterrupt("killed before the old objects went")
        super().delete(names)


def test_rekey_rotates_keys_and_survives_a_crash_at_either_side_of_the_switch(
    pg_server: ConnInfo, make_database: Callable[[str], str], keys, tmp_path: Path
) -> None:
    source = make_database("rot")
    seed(pg_server, source, rows=30)
    old, new = keys("old"), keys("new")
    store = _CrashingStore(tmp_path / "repo")
    both = crypto.Keyring([crypto.FileIdentity(str(old.path)), crypto.FileIdentity(str(new.path))])
    repo = Repository(store, encrypt_to=[old.recipient], keyring=both)
    made = pg_backup.backup_database(pg_server, source, "sys", repo)

    store.crash_on = "manifest"
    with pytest.raises(KeyboardInterrupt):
        rekey_backup(repo, repo.find("postgres", None, None), [new.recipient])
    store.crash_on = None
    untouched = repo.find("postgres", None, None)
    assert untouched.manifest is not None and untouched.manifest.recipients == [old.recipient]
    _restore(pg_server, _repo(tmp_path / "repo", identity=old), made.id, source, f"{source}__a")

    store.crash_on = "delete"
    with pytest.raises(KeyboardInterrupt):
        rekey_backup(repo, repo.find("postgres", None, None), [new.recipient])
    store.crash_on = None
    switched = repo.find("postgres", None, None)
    assert switched.manifest is not None and switched.manifest.recipients == [new.recipient]
    assert repo.unreferenced(switched)  # the old objects, left by the crash
    with pytest.raises(IdentityRequired):
        _restore(pg_server, _repo(tmp_path / "repo", identity=old), made.id, source, "x")
    again = rekey_backup(repo, switched, [new.recipient])
    assert again.outcome == "already" and again.removed_leftovers >= 2
    assert repo.unreferenced(repo.find("postgres", None, None)) == []
    assert repo.verify_objects(repo.find("postgres", None, None)) == []
    _restore(pg_server, _repo(tmp_path / "repo", identity=new), made.id, source, f"{source}__b")
    assert count(pg_server, f"{source}__b") == 30


def test_rekey_encrypts_a_plain_backup_and_checks_it_decrypts(
    pg_server: ConnInfo, make_database: Callable[[str], str], keys, tmp_path: Path
) -> None:
    source = make_database("rk")
    seed(pg_server, source, rows=20)
    key = keys("key")
    repo = _repo(tmp_path / "repo", identity=key)
    made = pg_backup.backup_database(pg_server, source, "sys", repo)
    result = rekey_backup(repo, repo.find("postgres", None, None), [key.recipient])
    assert result.outcome == "rekeyed" and "decrypted and compared" in result.detail
    rekeyed = repo.find("postgres", None, None)
    assert rekeyed.manifest is not None
    assert [o.logical_name for o in rekeyed.manifest.objects] == ["data.dump.zst", "roles.json"]
    assert rekeyed.manifest.objects[0].raw_size == made.objects[0].raw_size
    for path, content in _stored(tmp_path / "repo"):
        assert MARKER.encode() not in content, path
    _restore(pg_server, repo, made.id, source, f"{source}__r")
    assert count(pg_server, f"{source}__r") == 20
