"""An incremental backup of a storage account's containers into a backup repository.

::

    manifest = backup_files(BlobAccount(service), FileCatalog(repository, "files-app"),
                            ["uploads", "invoices"])

For every blob listed, in order of preference:

1. the previous backup holds it with the same ETag: its entry is carried over, nothing read;
2. the previous backup holds content with the same MD5 and size (a copy, a rename, a
   metadata change): the new entry points at that content, nothing read;
3. otherwise it is read, pinned to the listed ETag, into a local spool while its sha256 and
   MD5 are computed (the MD5 checked against Azure's, when Azure has one), and stored under
   its sha256 unless the repository already holds that content.

A blob replaced during its read is listed again and read again, up to ``attempts`` times; one
that keeps changing keeps the previous backup's version and is named in the manifest's
``unstable``; either way a backup never holds half of one version. Blobs of the previous
backup that are gone from the source are named in ``deleted``; nothing is ever deleted from
the repository by a backup. Content is streamed through this machine (the repository may be
a local directory or another cloud), with memory bounded by :data:`SPOOL_IN_MEMORY` per blob.

The blobs to read are read and stored ``parallel`` at a time (:data:`DEFAULT_PARALLEL`): a
container of many small blobs is bound by the round trips, not by bandwidth. Two blobs with
the same content store it once (one of them waits for the other); the manifest lists the
blobs in the order the account listed them, whatever order the reads finished in.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from dr_runbooks.errors import BadInput, ChecksumMismatch
from dr_runbooks.files.catalog import (
    BlobEntry,
    ContainerRecord,
    FileCatalog,
    FileManifest,
    StoredContent,
    new_backup_id,
)
from dr_runbooks.files.source import BlobAccount, BlobChanged, SourceBlob
from dr_runbooks.streams import read_chunks

__all__ = ["DEFAULT_PARALLEL", "SPOOL_IN_MEMORY", "backup_files", "spooled"]

#: A blob up to this size is spooled in memory; a larger one on local disk (``DR_WORK_DIR``
#: is not needed: the system's temporary directory holds one blob at a time).
SPOOL_IN_MEMORY = 8 * 1024 * 1024
DEFAULT_ATTEMPTS = 3
#: Blobs read and stored at once (see bench/files_backup.py for what it buys).
DEFAULT_PARALLEL = 8


@dataclass
class _Spooled:
    file: IO[bytes]
    size: int
    sha256: str
    md5: str


def spooled(chunks: Any) -> _Spooled:
    """Copy ``chunks`` into a temporary file (in memory while small), hashing them."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
    try:
        for chunk in chunks:
            spool.write(chunk)
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return _Spooled(spool, size, sha.hexdigest(), md5.hexdigest())


def backup_files(
    account: BlobAccount,
    catalog: FileCatalog,
    containers: Sequence[str],
    *,
    backup_id: str | None = None,
    kind: str = "files",
    attempts: int = DEFAULT_ATTEMPTS,
    parallel: int = DEFAULT_PARALLEL,
    details: dict[str, Any] | None = None,
    now: Callable[[], datetime] | None = None,
) -> FileManifest:
    """Back up ``containers`` of ``account`` into ``catalog``; return the committed manifest.

    ``kind`` ``files`` is the scheduled backup, the base of the next one; ``pre-restore`` is
    what an in-place restore keeps of the blobs it is about to overwrite (``details`` says
    which restore).
    """
    if not containers:
        raise BadInput(f"no containers to back up for {catalog.system}")
    if len(set(containers)) != len(containers):
        raise BadInput(f"a container is named twice: {', '.join(containers)}")
    if parallel < 1:
        raise BadInput(f"parallel must be at least 1, not {parallel}")
    clock = now or (lambda: datetime.now(UTC))
    started = clock()
    backup_id = backup_id or new_backup_id(started)
    with catalog.locked(f"file backup {backup_id}"):
        leftovers = catalog.remove_leftovers()
        previous = catalog.latest(kind="files")
        base = previous.manifest if previous is not None else None
        stored_keys = set(catalog.content_objects())
        content = _Content(catalog, stored_keys)
        prefix = catalog.begin(backup_id, started)
        try:
            records = {}
            with ThreadPoolExecutor(parallel, thread_name_prefix="dr-files") as pool:
                for container in containers:
                    records[container] = _backup_container(
                        account, catalog, container, base, content, attempts, pool
                    )
            manifest = FileManifest(
                id=backup_id,
                kind=kind,
                system=catalog.system,
                account=account.location,
                previous=base.id if base is not None else None,
                started=started,
                finished=clock(),
                containers=records,
                content=content.stored,
                leftovers_removed=leftovers,
                details=details or {},
            )
            catalog.commit(prefix, manifest)
        except BaseException:
            # The failure is what must surface; what it left goes with the next run.
            with contextlib.suppress(Exception):
                catalog.abort(prefix)
            raise
    return manifest


class _Content:
    """The content objects this backup references, by sha256, shared by the reading threads:
    content already stored is reused, and content being stored by one thread is waited for
    by another that found the same bytes (so an encrypted object is written once, and the
    manifest describes the object that was kept)."""

    def __init__(self, catalog: FileCatalog, stored_keys: set[str]) -> None:
        self.catalog = catalog
        self.stored: dict[str, StoredContent] = {}
        self._keys = stored_keys
        self._lock = threading.Lock()
        self._storing: dict[str, threading.Lock] = {}

    def reusable(self, sha256: str, known: dict[str, StoredContent]) -> StoredContent | None:
        """Content this backup or the previous one holds and the repository still has."""
        stored = self.stored.get(sha256) or known.get(sha256)
        return stored if stored is not None and stored.key in self._keys else None

    @contextlib.contextmanager
    def storing(self, sha256: str) -> Iterator[None]:
        """Held while one thread stores ``sha256``'s content; another waits for it."""
        with self._lock:
            lock = self._storing.setdefault(sha256, threading.Lock())
        with lock:
            yield

    def store(
        self, sha256: str, chunks: Iterator[bytes], known: dict[str, StoredContent]
    ) -> StoredContent:
        """Store ``sha256``'s content unless it is already stored; return where it is."""
        with self.storing(sha256):
            stored = self.reusable(sha256, known)
            if stored is None:
                stored = self.catalog.put_content(sha256, chunks)
                self._keys.add(stored.key)
            self.stored[sha256] = stored
            return stored

    def use(self, sha256: str, stored: StoredContent) -> None:
        self.stored[sha256] = stored


def _backup_container(
    account: BlobAccount,
    catalog: FileCatalog,
    container: str,
    base: FileManifest | None,
    content: _Content,
    attempts: int,
    pool: ThreadPoolExecutor,
) -> ContainerRecord:
    known = base.content if base is not None else {}
    before = base.containers.get(container) if base is not None else None
    by_name = {b.name: b for b in before.blobs} if before is not None else {}
    by_md5 = {
        (b.content_md5, b.size): b
        for record in (base.containers.values() if base is not None else [])
        for b in record.blobs
        if b.content_md5
    }

    # In the account's order: an entry carried over, or the read that makes one.
    slots: list[BlobEntry | Future[BlobEntry | None]] = []
    names: list[str] = []
    reused = 0
    for listed in account.list_blobs(container):
        old = by_name.get(listed.name)
        if (
            old is not None
            and old.etag == listed.etag
            and (stored := content.reusable(old.sha256, known))
        ):
            content.use(old.sha256, stored)
            slots.append(old)
            reused += 1
        elif (
            listed.content_md5
            and (same := by_md5.get((listed.content_md5, listed.size))) is not None
            and (stored := content.reusable(same.sha256, known))
        ):
            content.use(same.sha256, stored)
            slots.append(_entry(listed, same.sha256))
            reused += 1
        else:
            slots.append(pool.submit(_copy_with_retries, account, listed, attempts, content, known))
        names.append(listed.name)

    entries: list[BlobEntry] = []
    unstable: list[str] = []
    copied = 0
    try:
        for name, slot in zip(names, slots, strict=True):
            if isinstance(slot, BlobEntry):
                entries.append(slot)
                continue
            entry = slot.result()
            if entry is None:  # deleted meanwhile
                continue
            if entry is _UNSTABLE:
                unstable.append(name)
                old = by_name.get(name)
                if old is not None and (stored := content.reusable(old.sha256, known)):
                    content.use(old.sha256, stored)
                    entries.append(old)
                continue
            entries.append(entry)
            copied += 1
    except BaseException:
        for slot in slots:
            if not isinstance(slot, BlobEntry):
                slot.cancel()
        raise
    present = {e.name for e in entries} | set(unstable)
    deleted = sorted(name for name in by_name if name not in present)
    return ContainerRecord(
        blobs=entries, deleted=deleted, unstable=unstable, copied=copied, reused=reused
    )


_UNSTABLE = BlobEntry(name="", size=0, sha256="", etag="", last_modified=datetime.min)


def _copy_with_retries(
    account: BlobAccount,
    listed: SourceBlob,
    attempts: int,
    content: _Content,
    known: dict[str, StoredContent],
) -> BlobEntry | None:
    """Read one blob whole and store its content; None when it was deleted meanwhile,
    :data:`_UNSTABLE` when it kept changing."""
    blob: SourceBlob | None = listed
    for _attempt in range(max(1, attempts)):
        assert blob is not None
        try:
            copy = spooled(account.read(blob))
        except BlobChanged:
            blob = account.properties(blob.container, blob.name)
            if blob is None:
                return None
            continue
        with copy.file:
            if copy.size != blob.size:
                raise ChecksumMismatch(
                    f"{blob.container}/{blob.name}: read {copy.size} bytes of "
                    f"ETag {blob.etag}, listed with {blob.size}"
                )
            if blob.content_md5 and copy.md5 != blob.content_md5:
                raise ChecksumMismatch(
                    f"{blob.container}/{blob.name}: the bytes read have MD5 {copy.md5}, "
                    f"Azure records {blob.content_md5}"
                )
            content.store(copy.sha256, read_chunks(copy.file), known)
        return _entry(blob, copy.sha256)
    return _UNSTABLE


def _entry(blob: SourceBlob, sha256: str) -> BlobEntry:
    return BlobEntry(
        name=blob.name,
        size=blob.size,
        sha256=sha256,
        content_md5=blob.content_md5,
        etag=blob.etag,
        last_modified=blob.last_modified,
        content_type=blob.content_type,
        metadata=blob.metadata,
    )
