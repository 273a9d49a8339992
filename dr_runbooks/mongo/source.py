"""Open any MongoDB dump by looking at it: :func:`open_dump` and :func:`inspect_dump`.

What is recognised, by content rather than by file name::

    a directory                           directory dump (``mongodump --out``)
    6d e2 99 81 ...                       archive (``mongodump --archive``)
    1f 8b ... (gzip) / 28 b5 2f fd (zstd)  whose content is an archive: a compressed archive
                                          (``--gzip --archive``, or piped through zstd);
                                          whose content is a tar: a tarred directory dump
    "ustar" at byte 257                   an uncompressed tarred directory dump

Example::

    with open_dump("/backups/mongodb/backup_20240501_020000.tar.gz") as dump:
        for collection in dump.collections:
            print(collection.namespace, collection.type, collection.indexes)
        for collection, raw in dump.iter_documents():
            ...
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO, cast

import bson
import zstandard

from dr_runbooks.errors import InvalidArchive

from ._stream import DECOMPRESSION_ERRORS as _DECOMPRESSION_ERRORS
from .archive import ARCHIVE_MAGIC, ArchiveDump
from .dumpdir import DirectoryDump, TarDump
from .model import Dump, Namespace, to_json_value

__all__ = ["inspect_dump", "open_dump"]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = (0xFD2FB528).to_bytes(4, "little")
_TAR_MAGIC_OFFSET = 257
_SNIFF = 512
_COPY_CHUNK = 1 << 20


class _Prefixed(io.RawIOBase):
    """Replays bytes already read from a stream, then the rest of the stream."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def _decompressing(raw: BinaryIO, compression: str, stack: ExitStack) -> BinaryIO:
    if compression == "gzip":
        return cast(BinaryIO, stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")))
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=False
        )
        return cast(BinaryIO, stack.enter_context(reader))
    return raw


def _read_head(stream: BinaryIO, where: str) -> bytes:
    """Exactly the first ``_SNIFF`` bytes (fewer only if the stream is shorter).

    Reads no further, so a stream can be replayed from these bytes; a damaged compressed
    stream is :class:`InvalidArchive`.
    """
    parts: list[bytes] = []
    size = 0
    while size < _SNIFF:
        try:
            chunk = stream.read(_SNIFF - size)
        except _DECOMPRESSION_ERRORS as exc:
            raise InvalidArchive(f"{where}: cannot decompress: {exc}") from exc
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _content_kind(head: bytes) -> str | None:
    if head[:4] == ARCHIVE_MAGIC:
        return "archive"
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "tar"
    return None


def _compression(head: bytes) -> str:
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head[:4] == ZSTD_MAGIC:
        return "zstd"
    return ""


def _unrecognised(where: str, head: bytes, compression: str) -> InvalidArchive:
    inside = f"{compression} data that holds " if compression else ""
    shown = head[:8].hex(" ") or "nothing (empty)"
    return InvalidArchive(
        f"{where}: {inside}neither a mongodump archive nor a tarred dump (starts with {shown})"
    )


def _open_path(path: Path) -> Dump:
    where = str(path)
    if path.is_dir():
        return DirectoryDump(path)
    if not path.is_file():
        raise InvalidArchive(f"{where}: no such file or directory")
    with path.open("rb") as raw:
        head = raw.read(_SNIFF)
    compression = _compression(head)
    if compression:
        with ExitStack() as stack:
            raw_stream = stack.enter_context(path.open("rb"))
            head = _read_head(_decompressing(raw_stream, compression, stack), where)

    def opener(stack: ExitStack) -> BinaryIO:
        return _decompressing(stack.enter_context(path.open("rb")), compression, stack)

    suffix = f"+{compression}" if compression else ""
    kind = _content_kind(head)
    if kind == "archive":
        return ArchiveDump(opener, location=where, kind=f"archive{suffix}")
    if kind == "tar":
        return TarDump(opener, location=where, kind=f"tar{suffix}")
    raise _unrecognised(where, head, compression)


class _Recorder(io.RawIOBase):
    """Passes reads through, keeping a copy of what was read until :meth:`stop`."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.seen: bytes | None = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._stream.read(len(view))
        view[: len(data)] = data
        if self.seen is not None:
            self.seen += data
        return len(data)

    def stop(self) -> bytes:
        seen, self.seen = self.seen or b"", None
        return seen


def _open_stream(stream: BinaryIO, where: str) -> Dump:
    # Sniffing reads from the stream (through a decompressor, for compressed data), which
    # cannot seek back: what was read is recorded and replayed in front of the rest.
    recorder = _Recorder(stream)
    head = _read_head(cast(BinaryIO, recorder), where)
    compression = _compression(head)
    stack = ExitStack()
    raw = cast(BinaryIO, io.BufferedReader(_Prefixed(head, cast(BinaryIO, recorder))))
    content = _decompressing(raw, compression, stack)
    inner_head = head
    if compression:
        try:
            inner_head = _read_head(content, where)
        except BaseException:
            stack.close()
            raise
        content = cast(BinaryIO, io.BufferedReader(_Prefixed(inner_head, content)))
    seen = recorder.stop()
    kind = _content_kind(inner_head)
    suffix = f"+{compression}" if compression else ""
    if kind == "archive":
        used = [False]

        def opener(outer: ExitStack) -> BinaryIO:
            if used[0]:
                raise RuntimeError(f"{where}: a stream can only be read once")
            used[0] = True
            outer.push(stack.pop_all())
            return content

        return ArchiveDump(opener, location=where, kind=f"archive{suffix}", reopenable=False)
    stack.close()
    if kind == "tar":
        return _SpooledTarDump(_Prefixed(seen, stream), where, f"tar{suffix}", compression)
    raise _unrecognised(where, inner_head, compression)


class _PositionalReader(io.RawIOBase):
    """An independent read position over an open file, so passes do not disturb each other."""

    def __init__(self, fileno: int) -> None:
        self._fileno = fileno
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fileno, len(view), self._offset)
        view[: len(data)] = data
        self._offset += len(data)
        return len(data)


class _SpooledTarDump(TarDump):
    """A tar read from a stream. Reading a tarred dump takes several passes, so the (still
    compressed) stream is first copied to a temporary file, deleted when the dump is closed."""

    def __init__(self, stream: io.RawIOBase, where: str, kind: str, compression: str) -> None:
        self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the dump
        try:
            shutil.copyfileobj(cast(BinaryIO, stream), self._spool, _COPY_CHUNK)
            self._spool.flush()

            def opener(stack: ExitStack) -> BinaryIO:
                reader = io.BufferedReader(_PositionalReader(self._spool.fileno()), _COPY_CHUNK)
                return _decompressing(cast(BinaryIO, reader), compression, stack)

            super().__init__(opener, location=where, kind=kind)
        except BaseException:
            self._spool.close()
            raise

    def close(self) -> None:
        super().close()
        self._spool.close()


def open_dump(source: str | os.PathLike[str] | BinaryIO) -> Dump:
    """Open a dump of any supported kind (see the module docstring) and return a :class:`Dump`.

    A path can be read any number of times. A binary stream (a pipe, a download) is read
    once for an archive; a tar stream is first spooled to a temporary file. Raises
    :class:`InvalidArchive` for anything that is not a dump or is damaged in its prelude
    or layout; damage further in surfaces while documents are read.
    """
    if isinstance(source, str | os.PathLike):
        return _open_path(Path(source))
    return _open_stream(source, getattr(source, "name", None) or "stream")


def _timestamp(value: Any) -> dict[str, int] | None:
    if isinstance(value, bson.Timestamp):
        return {"t": value.time, "i": value.inc}
    return None


def inspect_dump(
    source: str | os.PathLike[str] | BinaryIO | Dump, *, validate: bool = False
) -> dict[str, Any]:
    """A JSON-able summary of a dump, for ``dr backups inspect``.

    Reads the whole dump once (so CRCs, framing and buckets are checked; ``validate`` also
    decodes every document) and returns::

        {"kind", "location", "server_version", "tool_version",
         "collections": [{"namespace", "db", "collection", "type", "special", "documents",
                          "bytes", "indexes": [names], "options", "uuid"}],
         "oplog": {"entries", "bytes", "first_ts", "last_ts"} or None,
         "skipped": [paths skipped as not part of the dump]}
    """
    dump = source if isinstance(source, Dump) else open_dump(source)
    try:
        counts: dict[Namespace, list[int]] = {}
        first_ts = last_ts = None
        for collection, document in dump.iter_documents(validate=validate):
            count = counts.setdefault(collection.namespace, [0, 0])
            count[0] += 1
            count[1] += len(document)
            if collection.special == "oplog":
                ts = _timestamp(bson.decode(document).get("ts"))
                first_ts = first_ts or ts
                last_ts = ts or last_ts
        collections = [
            {
                "namespace": str(c.namespace),
                "db": c.namespace.db,
                "collection": c.namespace.collection,
                "type": c.type,
                "special": c.special,
                "documents": counts.get(c.namespace, [0, 0])[0],
                "bytes": counts.get(c.namespace, [0, 0])[1],
                "indexes": [str(index.get("name")) for index in c.indexes],
                "options": to_json_value(c.options),
                "uuid": c.uuid,
            }
            for c in dump.collections
        ]
        oplog = None
        if dump.oplog is not None:
            entries, size = counts.get(dump.oplog.namespace, [0, 0])
            oplog = {"entries": entries, "bytes": size, "first_ts": first_ts, "last_ts": last_ts}
        return {
            "kind": dump.kind,
            "location": dump.location,
            "server_version": dump.server_version,
            "tool_version": dump.tool_version,
            "collections": collections,
            "oplog": oplog,
            "skipped": list(getattr(dump, "skipped", ())),
        }
    finally:
        if dump is not source:
            dump.close()
