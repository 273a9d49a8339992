"""Getting a dump to restore: a backup downloaded with its checksum verified, or mongodump
output given as a path."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dr_runbooks import crypto, progress
from dr_runbooks.errors import (
    BadInput,
    ChecksumMismatch,
)
from dr_runbooks.processes import MONGODB_WORKDIR_PREFIX, owned_workdir
from dr_runbooks.repository import Backup, Manifest, Repository
from dr_runbooks.streams import Digest, consume_aside, hashed, read_chunks

from .backup import DATA
from .model import Dump
from .source import open_dump

__all__ = ["WORKDIR_PREFIX", "FetchedDump", "fetch_backup", "open_path"]

#: A restore's work directories (the downloaded archive): ``<tmp>/dr-mongo-restore-*``.
WORKDIR_PREFIX = MONGODB_WORKDIR_PREFIX


@dataclass
class FetchedDump:
    """A dump on local disk: a backup downloaded (checksums verified) or a path given."""

    path: Path
    backup: Backup | None = None
    workdir: Path | None = None

    @property
    def manifest(self) -> Manifest | None:
        return self.backup.manifest if self.backup else None

    @property
    def label(self) -> str:
        return self.backup.id if self.backup else self.path.name

    def open(self) -> Dump:
        return open_dump(self.path)

    def cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def fetch_backup(
    repository: Repository, backup: Backup, workdir: Path | None = None
) -> FetchedDump:
    """Download a backup, verifying its size and sha256 against the manifest.

    The archive stays zstd-compressed on disk (``open_dump`` reads it as it is); an encrypted
    one is decrypted on the way, with an identity from the repository's keyring found before
    anything is downloaded (else :class:`~dr_runbooks.errors.IdentityRequired`). Raises
    :class:`ChecksumMismatch`, leaving nothing behind, if it differs from the manifest (checked
    on the stored bytes, before any decryption error is reported): this happens before any
    server is touched. A legacy ``backup_*.tar.gz`` has no manifest; it is checked when
    :func:`plan_restore` reads it.
    """
    identity = repository.identity_for(backup)
    directory = owned_workdir(WORKDIR_PREFIX, workdir)
    try:
        if backup.legacy_key:
            path = directory / backup.id
            with repository.store.open(backup.legacy_key) as handle, path.open("wb") as out:
                for chunk in progress.counted("download", read_chunks(handle), backup.size):
                    out.write(chunk)
            return FetchedDump(path, backup, directory)
        manifest = backup.manifest
        assert manifest is not None
        entry = manifest.object(DATA)
        path = directory / DATA
        digest = Digest()
        failure: BaseException | None = None
        with repository.store.open(backup.prefix + entry.name) as handle, path.open("wb") as out:
            chunks = hashed(progress.counted("download", read_chunks(handle), entry.size), digest)
            if entry.encryption is not None and identity is not None:
                key = identity

                def write(stored: Iterator[bytes]) -> None:
                    for piece in crypto.decrypt(stored, key, entry.name):
                        out.write(piece)

                failure = consume_aside(chunks, write, name="dr-decrypt")
            else:
                for chunk in chunks:
                    out.write(chunk)
        if digest.size != entry.size or digest.sha256 != entry.sha256:
            raise ChecksumMismatch(
                f"backup {manifest.id}: {entry.name} is corrupt (size {digest.size}, sha256 "
                f"{digest.sha256[:16]}…; manifest: size {entry.size}, sha256 "
                f"{entry.sha256[:16]}…)"
            )
        if failure is not None:
            raise failure
        return FetchedDump(path, backup, directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def open_path(path: str | Path) -> FetchedDump:
    """mongodump output on disk (archive, directory, tar), to restore without a repository."""
    location = Path(path).expanduser()
    if not location.exists():
        raise BadInput(f"no such file or directory: {location}")
    return FetchedDump(location)
