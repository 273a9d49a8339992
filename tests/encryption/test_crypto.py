"""The age streams and the keyring, without a database: what goes in comes out, damage and
wrong keys are refused, identities never show."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dr_runbooks import crypto
from dr_runbooks.errors import BadInput, DecryptionFailed, DumpFailed, IdentityRequired
from dr_runbooks.redaction import redact
from tests.encryption.conftest import Key


def _chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    sent = 0
    block = hashlib.sha256(b"seed").digest() * (size // 32)
    while sent < total:
        piece = block[: min(size, total - sent)]
        sent += len(piece)
        yield piece


def test_a_stream_round_trips_and_is_not_in_clear(keys: Callable[[str], Key]) -> None:
    key = keys("a")
    data = b"".join(_chunks(5 << 20, 300_000)) + b"tail"
    sealed = b"".join(crypto.encrypt(iter([data[:7], data[7:]]), [key.recipient]))
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert data[:4096] not in sealed
    identity = crypto.Identity(key.path.read_text(), "test")
    opened = b"".join(crypto.decrypt(iter([sealed[:100], sealed[100:]]), identity, "x"))
    assert opened == data
    assert crypto.decrypt_bytes(crypto.encrypt_bytes(b"roles", [key.recipient]), identity, "r")


def test_any_of_several_recipients_decrypts(keys: Callable[[str], Key]) -> None:
    first, offline = keys("first"), keys("offline")
    sealed = crypto.encrypt_bytes(b"both", [first.recipient, offline.recipient])
    for key in (first, offline):
        assert crypto.decrypt_bytes(sealed, crypto.Identity(key.identity, "k"), "x") == b"both"


@pytest.mark.parametrize("damage", ["truncated", "flipped", "wrong key"])
def test_damage_or_a_wrong_key_is_refused(keys: Callable[[str], Key], damage: str) -> None:
    key, other = keys("a"), keys("b")
    sealed = b"".join(crypto.encrypt(_chunks(3 << 20), [key.recipient]))
    identity = crypto.Identity(key.identity, "k")
    if damage == "truncated":
        sealed = sealed[: len(sealed) - 70_000]
    elif damage == "flipped":
        middle = len(sealed) // 2
        sealed = sealed[:middle] + bytes([sealed[middle] ^ 1]) + sealed[middle + 1 :]
    else:
        identity = crypto.Identity(other.identity, "k")
    with pytest.raises(DecryptionFailed, match="does not decrypt"):
        for _ in crypto.decrypt(iter([sealed]), identity, "data.dump.zst.age"):
            pass


def test_the_source_keeps_its_own_errors_and_thread(keys: Callable[[str], Key]) -> None:
    """The source is read on the caller's thread (its progress and child processes stay
    there), and its failure surfaces as itself."""
    import threading

    seen: set[int] = set()

    def source() -> Iterator[bytes]:
        seen.add(threading.get_ident())
        yield b"x" * 1000
        raise DumpFailed("pg_dump exited 1: boom")

    with pytest.raises(DumpFailed, match="boom"):
        for _ in crypto.encrypt(source(), [keys("a").recipient]):
            pass
    assert seen == {threading.get_ident()}


def test_a_consumer_that_stops_early_stops_the_worker(keys: Callable[[str], Key]) -> None:
    import threading

    before = threading.active_count()
    stream = crypto.encrypt(_chunks(50 << 20), [keys("a").recipient])
    next(stream)
    stream.close()
    assert threading.active_count() == before


def test_recipients_are_checked_and_a_private_key_is_never_echoed(
    keys: Callable[[str], Key],
) -> None:
    key = keys("a")
    assert crypto.parse_recipients([key.recipient, key.recipient]) == (key.recipient,)
    with pytest.raises(BadInput, match="'age1nope' is not an age recipient"):
        crypto.parse_recipients(["age1nope"])
    with pytest.raises(BadInput) as refused:
        crypto.parse_recipients([key.identity])
    assert key.identity not in str(refused.value)
    assert redact(f"leaked {key.identity}") == "leaked ***"


def test_the_keyring_names_the_recipients_and_what_was_tried(
    keys: Callable[[str], Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, other = keys("a"), keys("b")
    monkeypatch.delenv(crypto.IDENTITY_FILE_ENV, raising=False)
    with pytest.raises(IdentityRequired) as missing:
        crypto.Keyring().identity_for([key.recipient], "backup B")
    message = str(missing.value)
    assert key.recipient in message and "--identity FILE" in message and "\n" not in message

    monkeypatch.setenv(crypto.IDENTITY_FILE_ENV, str(other.path))
    with pytest.raises(IdentityRequired) as wrong:
        crypto.Keyring().identity_for([key.recipient], "backup B")
    text = str(wrong.value)
    assert key.recipient in text and other.recipient in text and str(other.path) in text
    assert other.identity not in text and key.identity not in text

    later = crypto.FileIdentity(str(key.path))
    found = crypto.Keyring([later]).identity_for([key.recipient], "backup B")
    assert found.public_keys == (key.recipient,) and key.identity not in repr(found)


def test_an_unreadable_or_garbled_identity_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: Callable[[str], Key]
) -> None:
    key = keys("a")
    monkeypatch.setenv(crypto.IDENTITY_FILE_ENV, str(tmp_path / "missing.txt"))
    garbled = tmp_path / "garbled.txt"
    garbled.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    ring = crypto.Keyring([crypto.FileIdentity(str(garbled))])
    with pytest.raises(IdentityRequired) as refused:
        ring.identity_for([key.recipient], "backup B")
    text = str(refused.value)
    assert "cannot read identity file" in text and "not an age identity" in text
    assert "AGE-SECRET-KEY-1NOTAKEY" not in text
    assert os.environ[crypto.IDENTITY_FILE_ENV].endswith("missing.txt")
