"""One PostgreSQL backup into a repository, and fetching one back, verified, for a restore.

The backup writes, in order: the in-progress marker, ``data.dump.zst`` (pg_dump's custom format,
zstd-compressed on the fly, sha256 computed as it streams), ``roles.json``, then the manifest. If
anything fails (pg_dump's exit status, a count, an upload), the partial objects are removed and no
manifest is written, so the attempt never shows up as a backup.

Into a repository with ``encrypt_to``, both objects are encrypted with age after compression,
as they stream, and stored as ``data.dump.zst.age`` and ``roles.json.age``; the checksums are
of what is stored. Decrypted, they are exactly the plain objects, so a backup can be restored
without this project (docs/encryption.md)::

    age -d -i identity.txt data.dump.zst.age | zstd -d > data.dump && pg_restore -d … data.dump
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dr_runbooks import crypto, progress
from dr_runbooks.errors import ChecksumMismatch, DumpFailed, OperationFailed
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.dump import DumpStream
from dr_runbooks.postgres.snapshot import DatabaseSettings, exported_snapshot
from dr_runbooks.postgres.tools import tool_version
from dr_runbooks.processes import POSTGRES_WORKDIR_PREFIX, owned_workdir
from dr_runbooks.repository import (
    Backup,
    Manifest,
    ObjectEncryption,
    ObjectEntry,
    Repository,
    new_backup_id,
)
from dr_runbooks.streams import Digest, compress, consume_aside, decompress, hashed, read_chunks
from dr_runbooks.text import first_line

__all__ = [
    "DATA",
    "ROLES",
    "WORKDIR_PREFIX",
    "FetchedBackup",
    "backup_database",
    "fetch_backup",
    "work_base",
]

DATA = "data.dump.zst"
ROLES = "roles.json"
#: A restore's work directories (the unpacked dump): ``<DR_WORK_DIR or tmp>/dr-restore-*``.
WORKDIR_PREFIX = POSTGRES_WORKDIR_PREFIX


def work_base() -> Path | None:
    """Where restores unpack (``DR_WORK_DIR``; None: the system's temporary directory). It
    needs the dump's uncompressed size free."""
    return Path(os.environ["DR_WORK_DIR"]) if os.environ.get("DR_WORK_DIR") else None


def backup_database(
    conninfo: ConnInfo,
    database: str,
    system: str,
    repository: Repository,
    kind: str = "full",
    role_passwords: bool = False,
    compression_level: int = 3,
    backup_id: str | None = None,
) -> Manifest:
    """Dump ``database`` into ``repository`` and commit it (encrypted to the repository's
    ``encrypt_to``, if any); return the manifest."""
    started = datetime.now(UTC)
    backup_id = backup_id or new_backup_id(started)
    recipients = repository.encrypt_to
    encryption = ObjectEncryption(recipients=list(recipients)) if recipients else None
    suffix = crypto.SUFFIX if recipients else ""
    with exported_snapshot(conninfo, database, role_passwords) as snapshot:
        prefix = repository.begin("postgres", system, database, backup_id)
        try:
            counts: dict[str, int] = {}
            count_error: list[BaseException] = []

            def count() -> None:
                try:
                    counts.update(snapshot.count_rows())
                except BaseException as exc:  # reported after pg_dump's own status
                    count_error.append(exc)

            counter = threading.Thread(target=count, daemon=True)
            dump = DumpStream(conninfo, database, snapshot.snapshot_id)
            raw, stored = Digest(), Digest()
            counter.start()
            try:
                chunks = progress.counted("dump", hashed(dump, raw))
                compressed = compress(chunks, level=compression_level)
                if recipients:
                    compressed = crypto.encrypt(compressed, recipients)
                size = repository.store.put(
                    prefix + DATA + suffix,
                    hashed(progress.counted("upload", compressed), stored),
                )
            finally:
                dump.kill()
                counter.join()
            if count_error:
                if isinstance(count_error[0], DumpFailed):
                    raise count_error[0]
                raise DumpFailed(f"counting rows failed: {first_line(count_error[0])}")
            if size != stored.size:
                raise OperationFailed(f"{prefix}{DATA}: stored {size} bytes, sent {stored.size}")
            roles = json.dumps(snapshot.roles, indent=2).encode()
            if recipients:
                roles = crypto.encrypt_bytes(roles, recipients)
            repository.store.put_bytes(prefix + ROLES + suffix, roles)
            roles_digest = Digest()
            roles_digest.update(roles)
            manifest = Manifest(
                id=backup_id,
                kind=kind,
                engine="postgres",
                system=system,
                database=database,
                server_version=snapshot.server_version,
                tool_version=tool_version("pg_dump"),
                started=started,
                finished=datetime.now(UTC),
                consistent_point=snapshot.consistent_point,
                objects=[
                    ObjectEntry(
                        name=DATA + suffix,
                        size=stored.size,
                        sha256=stored.sha256,
                        raw_size=raw.size,
                        format="pg_dump custom",
                        encryption=encryption,
                    ),
                    ObjectEntry(
                        name=ROLES + suffix,
                        size=roles_digest.size,
                        sha256=roles_digest.sha256,
                        encryption=encryption,
                    ),
                ],
                tables=counts,
                details={
                    "partitioned": snapshot.partitioned,
                    "database_settings": snapshot.settings.as_dict(),
                    "role_passwords": role_passwords,
                },
            )
            repository.commit(prefix, manifest)
        except BaseException:
            # What the failure left (storage down?) goes with the next run; the failure is
            # what must surface.
            with contextlib.suppress(Exception):
                repository.abort(prefix)
            raise
    return manifest


@dataclass
class FetchedBackup:
    """A backup downloaded to local disk, every checksum verified."""

    backup: Backup
    workdir: Path
    dump: Path
    roles: dict[str, Any]
    settings: DatabaseSettings | None

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def fetch_backup(
    repository: Repository, backup: Backup, workdir: Path | None = None
) -> FetchedBackup:
    """Download, decrypt and decompress a backup, verifying every object's size and sha256.

    Raises :class:`ChecksumMismatch` (and leaves nothing behind) if any object differs from the
    manifest: this happens before anything touches a database. An encrypted backup is
    decrypted on the fly, with an identity from the repository's keyring, found before
    anything is downloaded (else :class:`~dr_runbooks.errors.IdentityRequired`, naming the
    recipients); the checksum of the stored bytes is checked first, so a damaged object is a
    checksum mismatch, never a decryption error.
    """
    identity = repository.identity_for(backup)
    # DR_WORK_DIR: where a restore unpacks the dump (it needs the dump's uncompressed size).
    directory = owned_workdir(WORKDIR_PREFIX, workdir or work_base())
    try:
        if backup.legacy_key:
            return _fetch_legacy(repository, backup, directory)
        manifest = backup.manifest
        assert manifest is not None
        dump_path = directory / "data.dump"
        roles: dict[str, Any] = {}
        progress.start("download", manifest.size)
        for entry in manifest.objects:
            digest = Digest()
            unpack_error: BaseException | None = None
            content = b""
            with repository.store.open(backup.prefix + entry.name) as handle:
                chunks = hashed(
                    progress.counted("download", read_chunks(handle), restart=False), digest
                )
                if entry.logical_name == DATA:
                    unpack_error = _unpack_to_file(
                        chunks, dump_path, identity if entry.encryption else None, entry.name
                    )
                else:
                    content = b"".join(chunks)
            # The checksum decides first: corrupt bytes also fail to unpack or parse.
            if digest.size != entry.size or digest.sha256 != entry.sha256:
                raise ChecksumMismatch(
                    f"backup {manifest.id}: {entry.name} is corrupt (size {digest.size}, sha256 "
                    f"{digest.sha256[:16]}…; manifest: size {entry.size}, sha256 "
                    f"{entry.sha256[:16]}…)"
                )
            if unpack_error is not None:
                if isinstance(unpack_error, OperationFailed):
                    raise unpack_error
                raise OperationFailed(f"cannot unpack {entry.name}: {unpack_error}")
            if entry.logical_name == ROLES:
                if entry.encryption is not None and identity is not None:
                    content = crypto.decrypt_bytes(content, identity, entry.name)
                roles = json.loads(content) if content else {}
        settings_data = manifest.details.get("database_settings")
        settings = DatabaseSettings.from_dict(settings_data) if settings_data else None
        return FetchedBackup(backup, directory, dump_path, roles, settings)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _unpack_to_file(
    chunks: Iterator[bytes], path: Path, identity: crypto.Identity | None, name: str
) -> BaseException | None:
    """Download and hash on this thread while another decrypts, decompresses and writes, so
    the fetch costs about the slowest of them rather than their sum."""

    def unpack(stored: Iterator[bytes]) -> None:
        plain = crypto.decrypt(stored, identity, name) if identity is not None else stored
        with open(path, "wb") as out:
            for piece in decompress(plain):
                out.write(piece)

    return consume_aside(chunks, unpack, name="dr-unpack")


def _fetch_legacy(repository: Repository, backup: Backup, directory: Path) -> FetchedBackup:
    """A plan-script backup: ``backup_*.sql.gz``, plain SQL; checked as a complete gzip stream."""
    import zlib

    assert backup.legacy_key is not None
    path = directory / "data.sql"
    inflater = zlib.decompressobj(wbits=31)
    with repository.store.open(backup.legacy_key) as handle, open(path, "wb") as out:
        for chunk in progress.counted("download", read_chunks(handle), backup.size):
            try:
                out.write(inflater.decompress(chunk))
            except zlib.error as exc:
                raise ChecksumMismatch(f"{backup.id} is not a valid gzip file: {exc}") from None
        out.write(inflater.flush())
    if not inflater.eof:
        raise ChecksumMismatch(f"{backup.id} is truncated (the gzip stream does not end)")
    return FetchedBackup(backup, directory, path, {}, None)
