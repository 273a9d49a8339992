"""A tar stream read as it flows past: members picked out of it, or unpacked into a directory.

``pg_basebackup -Ft -D -`` writes one tar of the data directory to stdout, with PostgreSQL's
``backup_manifest`` appended as its last member. The backup streams that tar into the
repository and :class:`TarScanner` keeps a copy of the members it is asked for on the way; a
restore feeds the downloaded, decompressed stream to :class:`TarUnpacker`.

Only what PostgreSQL's tar writer produces is understood: ustar headers (sizes in octal, or
base-256 above 8 GB), regular files, directories and symbolic links, plus pax and GNU long-name
headers for robustness. Member paths are confined to the target directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from dr_runbooks.errors import InvalidArchive

__all__ = ["TarMember", "TarScanner", "TarUnpacker"]

BLOCK = 512


@dataclass(frozen=True)
class TarMember:
    name: str
    type: bytes  # b"0" file, b"5" directory, b"2" symbolic link
    size: int
    mode: int
    linkname: str = ""


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256, for sizes of 8 GB and more
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")


class _Reader:
    """Splits a stream of chunks into tar members; subclasses handle members and data."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._member: TarMember | None = None
        self._remaining = 0  # data bytes left in the current member
        self._padding = 0  # padding bytes left after it
        self._long_name: str | None = None
        self._meta: bytearray | None = None  # a pax or GNU long-name member's content
        self._meta_kind = b""
        self.finished = False

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._remaining:
                take = min(self._remaining, len(view))
                if self._meta is not None:
                    self._meta.extend(view[:take])
                else:
                    self.on_data(view[:take])
                self._remaining -= take
                view = view[take:]
                if not self._remaining:
                    self._end_member()
                continue
            if self._padding:
                take = min(self._padding, len(view))
                self._padding -= take
                view = view[take:]
                continue
            if self.finished:
                return  # the end-of-archive blocks and any trailing zeros
            take = min(BLOCK - len(self._header), len(view))
            self._header.extend(view[:take])
            view = view[take:]
            if len(self._header) == BLOCK:
                header = bytes(self._header)
                self._header.clear()
                self._start_member(header)

    def _start_member(self, header: bytes) -> None:
        if header == bytes(BLOCK):
            self.finished = True
            return
        checksum = _number(header[148:156])
        if checksum != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise InvalidArchive("tar stream is damaged (a header checksum does not match)")
        kind = header[156:157] or b"0"
        size = _number(header[124:136])
        name = _text(header[0:100])
        prefix = _text(header[345:500]) if header[257:262] == b"ustar" else ""
        if prefix:
            name = f"{prefix}/{name}"
        self._remaining, self._padding = size, -size % BLOCK
        if kind in (b"x", b"L", b"g"):
            self._meta, self._meta_kind = bytearray(), kind
            if not size:
                self._end_member()
            return
        if self._long_name is not None:
            name, self._long_name = self._long_name, None
        member = TarMember(
            name=name,
            type=b"0" if kind == b"\0" else kind,
            size=size,
            mode=_number(header[100:108]) & 0o7777,
            linkname=_text(header[157:257]),
        )
        self._member = member
        self.on_member(member)
        if not size:
            self._end_member()

    def _end_member(self) -> None:
        if self._meta is not None:
            meta, kind = bytes(self._meta), self._meta_kind
            self._meta = None
            if kind == b"L":
                self._long_name = meta.rstrip(b"\0").decode("utf-8", errors="surrogateescape")
            elif kind == b"x":
                for record in meta.decode("utf-8", errors="surrogateescape").splitlines():
                    key, _, value = record.partition(" ")[2].partition("=")
                    if key == "path":
                        self._long_name = value
            return
        member, self._member = self._member, None
        if member is not None:
            self.on_member_end(member)

    def on_member(self, member: TarMember) -> None:
        """A member starts."""

    def on_data(self, data: memoryview) -> None:
        """Some of the current member's bytes."""

    def on_member_end(self, member: TarMember) -> None:
        """The current member is complete."""


class TarScanner(_Reader):
    """Passes a tar stream through unchanged, keeping a copy of the members named ``wanted``."""

    def __init__(self, wanted: Iterable[str]) -> None:
        super().__init__()
        self.wanted = set(wanted)
        self.members: dict[str, bytes] = {}
        self._buffer: bytearray | None = None

    def scan(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.feed(chunk)
            yield chunk

    def on_member(self, member: TarMember) -> None:
        self._buffer = bytearray() if member.name in self.wanted else None

    def on_data(self, data: memoryview) -> None:
        if self._buffer is not None:
            self._buffer.extend(data)

    def on_member_end(self, member: TarMember) -> None:
        if self._buffer is not None:
            self.members[member.name] = bytes(self._buffer)
            self._buffer = None


class TarUnpacker(_Reader):
    """Unpacks a tar stream into ``directory`` as it arrives.

    With ``owner`` (uid, gid) every file and directory is given to that user. With
    ``durable``, each file is flushed to disk by a few worker threads as soon as it is
    complete, so the disk writes while the stream is still downloading instead of all at once
    when PostgreSQL starts (it syncs the whole data directory before recovery);
    :meth:`close` waits for them and syncs the directories.
    """

    def __init__(
        self,
        directory: Path,
        owner: tuple[int, int] | None = None,
        durable: bool = True,
        sync_workers: int = 4,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.owner = owner
        self.files = 0
        self.bytes = 0
        self._handle: IO[bytes] | None = None
        self._path: Path | None = None
        self._directories: list[tuple[Path, int]] = []
        self._pool = ThreadPoolExecutor(sync_workers) if durable else None
        self._syncs: list[Future[None]] = []

    def _target(self, name: str) -> Path:
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            raise InvalidArchive(f"refusing tar member outside the data directory: {name!r}")
        return self.directory.joinpath(*parts)

    def _own(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner, follow_symlinks=False)

    def on_member(self, member: TarMember) -> None:
        path = self._target(member.name)
        if member.type == b"5":
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._own(path)
            self._directories.append((path, member.mode or 0o700))
        elif member.type == b"2":
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.symlink(member.linkname, path)
            self._own(path)
        elif member.type == b"0":
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, member.mode or 0o600)
            self._handle = os.fdopen(fd, "wb", buffering=1 << 20)
            self._path = path
            self._own(path)
            self.files += 1
        else:
            raise InvalidArchive(f"unexpected tar member type {member.type!r} for {member.name}")

    def on_data(self, data: memoryview) -> None:
        if self._handle is not None:
            self._handle.write(data)
            self.bytes += len(data)

    def on_member_end(self, member: TarMember) -> None:
        if self._handle is None:
            return
        handle, path = self._handle, self._path
        self._handle = self._path = None
        handle.close()
        if self._pool is not None and path is not None:
            self._syncs.append(self._pool.submit(_sync, path))

    def close(self) -> None:
        """Wait for the flushes, set the directories' modes, and sync the directories."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        for future in self._syncs:
            future.result()
        if self._pool is not None:
            self._pool.shutdown()
        for path, mode in self._directories:
            os.chmod(path, stat.S_IMODE(mode))
        if self._pool is not None:
            for path in {self.directory, *(p for p, _ in self._directories)}:
                _sync(path)

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _sync(path: Path) -> None:
    """fsync through a descriptor of its own: Linux flushes the file's pages, whoever wrote
    them, and the writer's descriptor is already closed (a backup holds thousands of files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unpack(chunks: Iterable[bytes], unpacker: TarUnpacker, check: Callable[[], None]) -> None:
    """Feed ``chunks`` to ``unpacker``; ``check`` runs before the unpacker is closed."""
    try:
        for chunk in chunks:
            unpacker.feed(chunk)
        if not unpacker.finished:
            raise InvalidArchive("tar stream ends before its end-of-archive marker")
        check()
        unpacker.close()
    except BaseException:
        unpacker.abort()
        raise
