"""A directory on this machine as a store (the contract is in :mod:`dr_runbooks.storage.base`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from dr_runbooks.errors import ObjectNotFound, RepositoryNotFound
from dr_runbooks.storage.base import LOCKS, Lease, ObjectInfo, Store, check_key

__all__ = ["LocalStore"]

_PARTIAL_MARK = ".partial-"


class LocalStore(Store):
    """A store in a local directory; each key is a relative file path.

    ``put`` writes to a hidden sibling file and renames it into place, so an object appears
    whole (``os.replace`` is atomic within one file system) and a crash leaves only a hidden
    ``.<name>.partial-*`` file that listing skips. It returns once the file, the rename and any
    folder it created are on disk (the directories are synced too): ``dr wal push`` exits 0 on
    that, and PostgreSQL then deletes its own copy of the segment.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)

    def _require(self) -> None:
        if not self.root.is_dir():
            raise RepositoryNotFound(f"repository directory does not exist: {self.root}")

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def exists(self) -> bool:
        return self.root.is_dir()

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        self._require()
        target = self._path(key)
        created = _make_folders(target.parent)
        partial = target.with_name(f".{target.name}{_PARTIAL_MARK}{secrets.token_hex(4)}")
        size = 0
        try:
            with open(partial, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        # The rename is in the folder's entries, each new folder in its parent's.
        for directory in [target.parent, *(folder.parent for folder in created)]:
            _sync_directory(directory)
        return size

    def open(self, key: str) -> BinaryIO:
        self._require()
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def stat(self, key: str) -> ObjectInfo:
        self._require()
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not path.is_file():
            raise ObjectNotFound(key)
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._require()
        # Walk only the deepest directory the prefix names, not the whole repository.
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root / LOCKS.rstrip("/"):
                continue  # lock files are not objects
            for name in filenames:
                if name.startswith(".") and _PARTIAL_MARK in name:
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete(self, keys: Iterable[str]) -> None:
        self._require()
        touched: set[Path] = set()
        for key in keys:
            path = self._path(key)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            touched.add(path.parent)
        for directory in sorted(touched, key=lambda p: len(p.parts), reverse=True):
            self._prune(directory)

    def try_lock(self, name: str, holder: bytes) -> Lease | None:
        self._require()
        path = self._lock_path(name)
        _make_folders(path.parent)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, holder, 0)
        os.fsync(descriptor)
        return _FileLease(descriptor)

    def lock_holder(self, name: str) -> bytes | None:
        self._require()
        path = self._lock_path(name)
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return os.pread(descriptor, 1 << 16, 0)  # held: what its holder wrote
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            return None
        finally:
            os.close(descriptor)

    def _lock_path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid lock name {name!r}")
        return self.root / LOCKS / f"{name}.lock"

    def delete_partials(self, prefix: str) -> None:
        """Remove hidden partial files a crashed ``put`` left under ``prefix``'s folder."""
        folder = self.root / prefix.rstrip("/")
        if folder.is_dir():
            for path in folder.rglob(f".*{_PARTIAL_MARK}*"):
                path.unlink(missing_ok=True)
            self._prune(folder)

    def _prune(self, directory: Path) -> None:
        """Remove empty directories from ``directory`` up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _make_folders(path: Path) -> list[Path]:
    """``mkdir -p``; return the folders it created, deepest first.

    A new folder takes the permissions of the nearest folder that already exists (not the
    umask's): a repository shared by two OS users, the database server's (``dr wal push``) and
    the runbooks' (base backups, dumps), is made group-writable or setgid at its root once, and
    every folder either of them creates below stays writable by the other."""
    missing = []
    for folder in [path, *path.parents]:
        if folder.is_dir():
            mode = stat.S_IMODE(folder.stat().st_mode)
            break
        missing.append(folder)
    else:
        mode = 0o755
    path.mkdir(parents=True, exist_ok=True)
    for folder in reversed(missing):
        with contextlib.suppress(OSError):  # created by another user meanwhile: theirs
            folder.chmod(mode)
    return missing


def _sync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _FileLease(Lease):
    """An exclusive ``flock`` on a lock file: the kernel drops it when the process dies."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    def alive(self) -> bool:
        return self._descriptor is not None

    def release(self) -> None:
        if self._descriptor is not None:
            descriptor, self._descriptor = self._descriptor, None
            with contextlib.suppress(OSError):
                fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)
