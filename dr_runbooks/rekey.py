"""Key rotation: a kept backup's objects encrypted again to a new set of recipients.

For one backup (the caller holds the lock of its database's backups)::

    1. remove what an earlier rekey that died left in the folder (objects the manifest does
       not name);
    2. stream each object: read (sha256 checked against the manifest), decrypt with an
       identity from the repository's keyring (an object stored in clear needs none),
       encrypt to the new recipients, store it under ``rekey-<stamp>/<name>.age``;
    3. verify the new objects: read back, size and sha256 as written; and when an identity
       of the new set is at hand, decrypted and compared with what was encrypted;
    4. switch the manifest to the new objects (one write: the commit point);
    5. delete the old objects.

A crash before step 4 leaves the backup as it was, plus new objects that nothing names; after
it, the rekeyed backup, plus old objects that nothing names. Either way the backup stays
restorable, and the next rekey removes the leftovers (step 1). The compressed content never
changes, so ``raw_size`` and every row count still hold.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dr_runbooks import crypto, progress
from dr_runbooks.errors import ChecksumMismatch, IdentityRequired, OperationFailed
from dr_runbooks.repository import (
    MANIFEST,
    Backup,
    ObjectEncryption,
    ObjectEntry,
    Repository,
)
from dr_runbooks.streams import Digest, hashed, read_chunks

__all__ = ["RekeyResult", "rekey_backup"]

REKEY_FOLDER = "rekey-"


@dataclass(frozen=True)
class RekeyResult:
    backup_id: str
    #: rekeyed, already (to exactly these recipients), or protected (immutable store).
    outcome: str
    detail: str
    removed_leftovers: int = 0


def rekey_backup(
    repository: Repository, backup: Backup, recipients: tuple[str, ...] | list[str]
) -> RekeyResult:
    """Encrypt ``backup``'s objects again to ``recipients`` (see the module docstring)."""
    wanted = crypto.parse_recipients(recipients, "rekey")
    if not wanted:
        raise OperationFailed("rekey needs at least one recipient")
    manifest = backup.manifest
    if manifest is None or backup.damaged:
        raise OperationFailed(f"backup {backup.id} has no usable manifest; it is left alone")
    leftovers = repository.unreferenced(backup)
    repository.store.delete(leftovers)
    if all(
        entry.encryption is not None and set(entry.encryption.recipients) == set(wanted)
        for entry in manifest.objects
    ):
        return RekeyResult(backup.id, "already", "already encrypted to them", len(leftovers))
    reason = repository.store.protection(backup.prefix)
    if reason:
        return RekeyResult(backup.id, "protected", reason, len(leftovers))
    identity = repository.identity_for(backup)
    stamp = f"{REKEY_FOLDER}{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}/"
    written: list[str] = []
    try:
        rekeyed_objects = [
            _rekey_object(repository, backup, entry, wanted, identity, stamp, written)
            for entry in manifest.objects
        ]
        entries = [entry for entry, _ in rekeyed_objects]
        checked = _verify(repository, backup, rekeyed_objects, wanted)
        rekeyed = manifest.model_copy(update={"objects": entries})
        repository.store.put_bytes(
            backup.prefix + MANIFEST, rekeyed.model_dump_json(indent=2).encode()
        )
    except BaseException:
        with contextlib.suppress(Exception):
            repository.store.delete(written)
        raise
    after = replace(backup, manifest=rekeyed, size=rekeyed.size)
    repository.store.delete(repository.unreferenced(after))
    return RekeyResult(
        backup.id,
        "rekeyed",
        f"encrypted to {len(wanted)} recipient(s); new objects {checked}",
        len(leftovers),
    )


def _rekey_object(
    repository: Repository,
    backup: Backup,
    entry: ObjectEntry,
    recipients: tuple[str, ...],
    identity: crypto.Identity | None,
    stamp: str,
    written: list[str],
) -> tuple[ObjectEntry, str]:
    """The object encrypted again under ``stamp``, and the sha256 of its content (the
    compressed bytes), to compare when it is verified; that checksum is not kept: it would
    tell a right guess of the plaintext from a wrong one."""
    name = f"{stamp}{entry.logical_name}{crypto.SUFFIX}"
    old, content, new = Digest(), Digest(), Digest()
    with repository.store.open(backup.prefix + entry.name) as handle:
        chunks: Iterator[bytes] = hashed(
            progress.counted("rekey", read_chunks(handle), restart=False), old
        )
        if entry.encryption is not None:
            assert identity is not None
            chunks = crypto.decrypt(chunks, identity, entry.name)
        chunks = crypto.encrypt(hashed(chunks, content), recipients)
        written.append(backup.prefix + name)
        try:
            repository.store.put(backup.prefix + name, hashed(chunks, new))
        except ChecksumMismatch:
            _check_stored(repository, backup, entry)
            raise
    if old.size != entry.size or old.sha256 != entry.sha256:
        raise ChecksumMismatch(
            f"backup {backup.id}: {entry.name} is corrupt (sha256 {old.sha256[:16]}…, manifest "
            f"{entry.sha256[:16]}…); it was not rekeyed"
        )
    rekeyed = entry.model_copy(
        update={
            "name": name,
            "size": new.size,
            "sha256": new.sha256,
            "encryption": ObjectEncryption(recipients=list(recipients)),
        }
    )
    return rekeyed, content.sha256


def _check_stored(repository: Repository, backup: Backup, entry: ObjectEntry) -> None:
    """A decryption that failed: a damaged object says so as a checksum mismatch."""
    problems = [p for p in repository.verify_objects(backup) if p.startswith(entry.name + ":")]
    if problems:
        raise ChecksumMismatch(f"backup {backup.id}: {problems[0]}; it was not rekeyed")


def _verify(
    repository: Repository,
    backup: Backup,
    objects: list[tuple[ObjectEntry, str]],
    recipients: tuple[str, ...],
) -> str:
    """Read the new objects back; decrypt them too when an identity of the new set is at
    hand. Returns how far they were checked."""
    try:
        identity: crypto.Identity | None = repository.keyring.identity_for(
            recipients, f"backup {backup.id}"
        )
    except IdentityRequired:
        identity = None
    for entry, expected in objects:
        stored, content = Digest(), Digest()
        with repository.store.open(backup.prefix + entry.name) as handle:
            chunks: Iterator[bytes] = hashed(read_chunks(handle), stored)
            if identity is not None:
                chunks = hashed(crypto.decrypt(chunks, identity, entry.name), content)
            for _ in chunks:
                pass
        if stored.size != entry.size or stored.sha256 != entry.sha256:
            raise ChecksumMismatch(f"rekeyed {entry.name} of {backup.id} reads back differently")
        if identity is not None and content.sha256 != expected:
            raise ChecksumMismatch(f"rekeyed {entry.name} of {backup.id} decrypts differently")
    return "decrypted and compared" if identity is not None else "read back, checksums match"
