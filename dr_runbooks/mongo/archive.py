"""The mongodump archive format (``mongodump --archive``): a streaming reader and writer.

Layout, per mongo-tools ``common/archive/spec.md`` and the archives real mongodump wrote::

    magic       int32 0x8199e26d, little-endian (bytes 6d e2 99 81)
    header      BSON {concurrent_collections: int32, version: "0.1",
                      server_version: str, tool_version: str}
    preludes    one BSON document per namespace {db, collection, metadata: <Extended JSON
                text of the collection's metadata.json>, size: int, type: "collection" |
                "view" | "timeseries"}; the oplog of ``--oplog`` is {db: "", collection:
                "oplog", metadata: ""}
    terminator  0xffffffff
    then, until the end, blocks of either kind, interleaved between namespaces:
    segment     BSON {db, collection, EOF: false, CRC: int64 0} + BSON documents + terminator
    EOF         BSON {db, collection, EOF: true, CRC: int64} + terminator

A namespace's documents may be split over many segments; its EOF block carries the CRC-64
(Go's ``crc64.ECMA``, i.e. CRC-64/XZ, stored as a signed int64) of the concatenated bytes of
all its documents. mongodump writes a segment with no documents followed by the EOF for an
empty collection and for every view (mongorestore needs it to create the view), and puts the
buckets of a time-series collection ``X`` under ``system.buckets.X``, which has no prelude of
its own (from server 8.3, under ``X``). The oplog's data namespace is ``.oplog``.

The reader consumes a stream once, front to back, holding one document at a time; it checks
framing, refuses data for namespaces without a prelude, verifies each namespace's CRC at its
EOF and, at the end, that every namespace was closed (which is how a cut-off archive shows).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, BinaryIO

import bson
from bson import json_util
from bson.raw_bson import RawBSONDocument

from dr_runbooks.errors import InvalidArchive

from ._stream import ByteSource, check_document, crc64, to_int64
from .model import (
    OPLOG_NAMESPACE,
    TIMESERIES_BUCKETS_PREFIX,
    CollectionMetadata,
    Dump,
    DumpCollection,
    Namespace,
    check_timeseries_bucket,
    parse_metadata,
    special_kind,
)

__all__ = [
    "ARCHIVE_MAGIC",
    "ArchiveDump",
    "ArchiveHeader",
    "ArchivePrelude",
    "ArchiveReader",
    "ArchiveWriter",
    "NamespaceStats",
]

ARCHIVE_MAGIC = (0x8199E26D).to_bytes(4, "little")
TERMINATOR = b"\xff\xff\xff\xff"
_TERMINATOR_INT = -1
_INT32_MAX = 2**31 - 1
_PRELUDE_FIELDS = frozenset({"db", "collection", "metadata", "size", "type"})

Document = bytes | bytearray | memoryview | RawBSONDocument | Mapping[str, Any]


@dataclass(frozen=True)
class ArchiveHeader:
    """The archive's header document; unknown fields are kept in ``extra``."""

    concurrent_collections: int = 1
    version: str = "0.1"
    server_version: str = ""
    tool_version: str = "dr-runbooks"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bson(self) -> bytes:
        return bson.encode(
            {
                "concurrent_collections": self.concurrent_collections,
                "version": self.version,
                "server_version": self.server_version,
                "tool_version": self.tool_version,
                **self.extra,
            }
        )


@dataclass(frozen=True)
class ArchivePrelude:
    """One collection-metadata document of the archive's prelude.

    ``metadata_json`` is the collection's ``metadata.json`` text (empty for the oplog); it is
    parsed on construction, so a prelude with broken metadata cannot exist.
    """

    namespace: Namespace
    metadata_json: str = ""
    size: int = 0
    #: As recorded; old mongodump versions wrote no type. See :attr:`kind`.
    type: str = "collection"
    extra: dict[str, Any] = field(default_factory=dict)
    metadata: CollectionMetadata | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "metadata", parse_metadata(self.metadata_json, f"metadata of {self.namespace}")
        )

    @classmethod
    def for_collection(
        cls,
        namespace: Namespace | str,
        metadata: Mapping[str, Any] | None = None,
        *,
        size: int = 0,
    ) -> ArchivePrelude:
        """A prelude for ``namespace``; ``metadata`` ({options, indexes, uuid, type, ...}) is
        written as canonical Extended JSON, as mongodump 4.2+ does."""
        if isinstance(namespace, str):
            namespace = Namespace.parse(namespace)
        text = ""
        kind = "collection"
        if metadata is not None:
            text = json_util.dumps(metadata, json_options=json_util.CANONICAL_JSON_OPTIONS)
            parsed = parse_metadata(text, f"metadata of {namespace}")
            kind = parsed.type if parsed else kind
        return cls(namespace, text, size, kind)

    @classmethod
    def oplog(cls) -> ArchivePrelude:
        return cls(OPLOG_NAMESPACE, "", 0, "")

    @property
    def kind(self) -> str:
        """``collection``, ``view`` or ``timeseries``, from the type field or the metadata."""
        if self.type:
            return self.type
        return self.metadata.type if self.metadata else "collection"

    def to_bson(self) -> bytes:
        size: int = self.size if self.size <= _INT32_MAX else bson.Int64(self.size)
        return bson.encode(
            {
                "db": self.namespace.db,
                "collection": self.namespace.collection,
                "metadata": self.metadata_json,
                "size": size,
                "type": self.type,
                **self.extra,
            }
        )


@dataclass(frozen=True)
class NamespaceStats:
    """What a namespace's data amounted to: documents, bytes and the CRC (signed int64)."""

    documents: int
    bytes: int
    crc: int


def _server_version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else ()


def _data_namespace(prelude: ArchivePrelude, server_version: str) -> Namespace:
    if prelude.kind != "timeseries" or _server_version(server_version) >= (8, 3):
        return prelude.namespace
    return Namespace(prelude.namespace.db, TIMESERIES_BUCKETS_PREFIX + prelude.namespace.collection)


def _data_namespaces(preludes: Iterable[ArchivePrelude]) -> dict[Namespace, ArchivePrelude]:
    """Which prelude each data namespace belongs to.

    A time-series collection's buckets are accepted under both names, since the server version
    in the header is not always a version ("unknown", or empty from a third-party writer).
    """
    owners: dict[Namespace, ArchivePrelude] = {}
    for prelude in preludes:
        owners[prelude.namespace] = prelude
    for prelude in preludes:
        if prelude.kind == "timeseries":
            buckets = Namespace(
                prelude.namespace.db, TIMESERIES_BUCKETS_PREFIX + prelude.namespace.collection
            )
            owners.setdefault(buckets, prelude)
    return owners


class _Terminator:
    """What the reader returns for a terminator, as opposed to a document."""


_END_OF_BLOCK = _Terminator()


class ArchiveReader:
    """Read an archive from a binary stream, front to back, once.

    The magic number, header and preludes are read on construction; :meth:`documents` then
    streams ``(data namespace, raw document)`` pairs in archive order::

        reader = ArchiveReader(stream, where="backup.archive")
        for namespace, raw in reader.documents():
            ...
        reader.stats[namespace].documents

    Every malformation raises :class:`InvalidArchive` with a one-line message naming
    ``where`` and the byte offset in the (decompressed) stream.
    """

    def __init__(self, stream: BinaryIO, *, where: str = "archive") -> None:
        self.where = where
        self._source = ByteSource(stream, where)
        magic = self._source.peek(4)
        if magic != ARCHIVE_MAGIC:
            raise InvalidArchive(
                f"{where}: not a mongodump archive (starts with {magic.hex() or 'nothing'}, "
                f"expected {ARCHIVE_MAGIC.hex()})"
            )
        self._source.read_exact(4, "magic number")
        self.header = self._read_header()
        preludes: list[ArchivePrelude] = []
        while True:
            offset = self._source.offset
            item = self._read_item("collection metadata document", at_top=False)
            if isinstance(item, _Terminator):
                break
            assert item is not None
            prelude = self._parse_prelude(item, offset)
            if any(seen.namespace == prelude.namespace for seen in preludes):
                raise InvalidArchive(f"{where}: two preludes for {prelude.namespace}")
            preludes.append(prelude)
        self.preludes: tuple[ArchivePrelude, ...] = tuple(preludes)
        self._owners = _data_namespaces(self.preludes)
        #: Per data namespace, filled in as each namespace's EOF block is read.
        self.stats: dict[Namespace, NamespaceStats] = {}
        self._started = False

    def _read_item(self, what: str, *, at_top: bool) -> bytes | _Terminator | None:
        """A BSON document or a terminator; None only at a clean end where ``at_top``."""
        head = self._source.peek(4)
        if len(head) == 4 and int.from_bytes(head, "little", signed=True) == _TERMINATOR_INT:
            self._source.read_exact(4, "terminator")
            return _END_OF_BLOCK
        document = self._source.read_document(what)
        if document is None and not at_top:
            raise InvalidArchive(
                f"{self.where}: truncated: the archive ends at byte {self._source.offset} "
                f"where a {what} or terminator should follow"
            )
        return document

    def _decode(self, document: bytes, what: str, offset: int) -> dict[str, Any]:
        try:
            return bson.decode(document)
        except (bson.errors.BSONError, ValueError, OverflowError) as exc:
            raise InvalidArchive(f"{self.where}: corrupt {what} at byte {offset}: {exc}") from exc

    def _read_header(self) -> ArchiveHeader:
        offset = self._source.offset
        document = self._read_item("header", at_top=False)
        if not isinstance(document, bytes):
            raise InvalidArchive(f"{self.where}: a terminator where the header should be")
        fields = self._decode(document, "header", offset)
        known = ("concurrent_collections", "version", "server_version", "tool_version")
        concurrent = fields.get("concurrent_collections", 1)
        strings = [fields.get(name, "") for name in known[1:]]
        if isinstance(concurrent, bool) or not isinstance(concurrent, int):
            raise InvalidArchive(f"{self.where}: header concurrent_collections is not a number")
        if not all(isinstance(value, str) for value in strings):
            raise InvalidArchive(f"{self.where}: header version fields are not strings")
        return ArchiveHeader(
            concurrent_collections=int(concurrent),
            version=strings[0],
            server_version=strings[1],
            tool_version=strings[2],
            extra={k: v for k, v in fields.items() if k not in known},
        )

    def _parse_prelude(self, document: bytes, offset: int) -> ArchivePrelude:
        fields = self._decode(document, "collection metadata document", offset)
        db, collection = fields.get("db"), fields.get("collection")
        metadata = fields.get("metadata", "")
        size = fields.get("size", 0)
        kind = fields.get("type", "")
        if not isinstance(db, str) or not isinstance(collection, str) or not collection:
            raise InvalidArchive(
                f"{self.where}: the collection metadata document at byte {offset} "
                "has no db/collection names"
            )
        if not isinstance(metadata, str) or not isinstance(kind, str):
            raise InvalidArchive(f"{self.where}: metadata of {db}.{collection} is not a string")
        if isinstance(size, bool) or not isinstance(size, int):
            raise InvalidArchive(f"{self.where}: size of {db}.{collection} is not a number")
        namespace = Namespace(db, collection)
        try:
            prelude = ArchivePrelude(
                namespace,
                metadata,
                int(size),
                kind,
                {k: v for k, v in fields.items() if k not in _PRELUDE_FIELDS},
            )
        except InvalidArchive as exc:
            raise InvalidArchive(f"{self.where}: {exc}") from exc
        return prelude

    def _namespace_header(self, document: bytes, offset: int) -> tuple[Namespace, bool, int | None]:
        fields = self._decode(document, "namespace header", offset)
        db, collection = fields.get("db"), fields.get("collection")
        if not isinstance(db, str) or not isinstance(collection, str) or not collection:
            raise InvalidArchive(
                f"{self.where}: namespace header at byte {offset} has no db/collection names"
            )
        eof = fields.get("EOF", False)
        crc = fields.get("CRC")
        if not isinstance(eof, bool) or (crc is not None and not isinstance(crc, int)):
            raise InvalidArchive(f"{self.where}: malformed namespace header at byte {offset}")
        return Namespace(db, collection), eof, crc

    def documents(self, *, validate: bool = False) -> Iterator[tuple[Namespace, bytes]]:
        """Stream ``(data namespace, raw BSON)`` for every document, verifying as it goes.

        With ``validate`` every document is also decoded in full. Time-series buckets are
        always checked (see :func:`check_timeseries_bucket`).
        """
        if self._started:
            raise RuntimeError(f"{self.where}: an archive stream can only be read once")
        self._started = True
        running: dict[Namespace, tuple[int, int, int]] = {}  # crc, documents, bytes
        closed: set[Namespace] = set()
        time_fields = {
            namespace: prelude.metadata.time_field
            for namespace, prelude in self._owners.items()
            if prelude.kind == "timeseries" and prelude.metadata is not None
        }
        while True:
            offset = self._source.offset
            item = self._read_item("namespace header", at_top=True)
            if item is None:
                break
            if isinstance(item, _Terminator):
                raise InvalidArchive(
                    f"{self.where}: two terminators in a row at byte {offset} (headerless block)"
                )
            namespace, eof, stored_crc = self._namespace_header(item, offset)
            if namespace not in self._owners:
                raise InvalidArchive(
                    f"{self.where}: data for {namespace} at byte {offset}, "
                    "which has no collection metadata in the prelude"
                )
            if namespace in closed:
                raise InvalidArchive(
                    f"{self.where}: data for {namespace} at byte {offset} after its EOF block"
                )
            crc, count, size = running.get(namespace, (0, 0, 0))
            if eof:
                if stored_crc is not None and to_int64(crc) != stored_crc:
                    raise InvalidArchive(
                        f"{self.where}: CRC mismatch for {namespace}: its {count} documents "
                        f"give {to_int64(crc)}, the archive says {stored_crc}"
                    )
                closed.add(namespace)
                self.stats[namespace] = NamespaceStats(count, size, to_int64(crc))
                end = self._source.offset
                if self._read_item("terminator", at_top=False) is not _END_OF_BLOCK:
                    raise InvalidArchive(
                        f"{self.where}: documents follow the EOF block of {namespace} at byte {end}"
                    )
                continue
            time_field = time_fields.get(namespace)
            while True:
                offset = self._source.offset
                item = self._read_item(f"document of {namespace}", at_top=False)
                if isinstance(item, _Terminator):
                    break
                assert item is not None
                if validate or time_field is not None:
                    where = f"{self.where}: {namespace} document {count} at byte {offset}"
                    if validate:
                        check_document(item, where)
                    if time_field is not None:
                        check_timeseries_bucket(item, time_field, where)
                crc = crc64(item, crc)
                count += 1
                size += len(item)
                yield namespace, item
            running[namespace] = (crc, count, size)
        unfinished = sorted(
            str(prelude.namespace)
            for prelude in self.preludes
            if not any(self._owners.get(ns) is prelude for ns in closed)
        )
        if unfinished:
            raise InvalidArchive(
                f"{self.where}: truncated: the archive ends at byte {self._source.offset} "
                f"before the end of {', '.join(unfinished)}"
            )


def _raw(document: Document) -> bytes:
    if isinstance(document, RawBSONDocument):
        return bytes(document.raw)
    if isinstance(document, bytes | bytearray | memoryview):
        raw = bytes(document)
        if len(raw) < 5 or int.from_bytes(raw[:4], "little") != len(raw) or raw[-1] != 0:
            raise InvalidArchive("not a BSON document: its length prefix or final NUL is wrong")
        return raw
    return bson.encode(document)


class ArchiveWriter:
    """Write an archive to a binary stream, one namespace after another.

    Every namespace must be declared up front (the prelude precedes all data)::

        with ArchiveWriter(out, [ArchivePrelude.for_collection("shop.orders", metadata),
                                 ArchivePrelude.oplog()],
                           header=ArchiveHeader(server_version="7.0.14")) as writer:
            writer.write_collection("shop.orders", raw_documents)
            writer.write_oplog(entries)

    Documents are raw BSON bytes (or ``RawBSONDocument``, or mappings, which are encoded).
    :meth:`write_segment` and :meth:`end_namespace` allow interleaving namespaces the way a
    concurrent mongodump does. A time-series collection is declared under its own name and
    written by that name; its data goes to ``system.buckets.<name>``. Views have no data: the
    writer closes them with the empty segment mongorestore needs. The stream is not closed.
    """

    def __init__(
        self,
        stream: BinaryIO,
        preludes: Iterable[ArchivePrelude],
        *,
        header: ArchiveHeader | None = None,
    ) -> None:
        self._out = stream
        self.header = header or ArchiveHeader()
        self.preludes = tuple(preludes)
        names = [prelude.namespace for prelude in self.preludes]
        if len(set(names)) != len(names):
            raise ValueError("a namespace is declared twice")
        self._data: dict[Namespace, ArchivePrelude] = {
            _data_namespace(p, self.header.server_version): p for p in self.preludes
        }
        self._aliases = {
            p.namespace: _data_namespace(p, self.header.server_version) for p in self.preludes
        }
        self._running: dict[Namespace, tuple[int, int, int]] = {}
        self.stats: dict[Namespace, NamespaceStats] = {}
        self._out.write(ARCHIVE_MAGIC)
        self._out.write(self.header.to_bson())
        for prelude in self.preludes:
            self._out.write(prelude.to_bson())
        self._out.write(TERMINATOR)

    def _resolve(self, namespace: Namespace | str) -> Namespace:
        if isinstance(namespace, str):
            namespace = OPLOG_NAMESPACE if namespace == ".oplog" else Namespace.parse(namespace)
        data_namespace = self._aliases.get(namespace, namespace)
        if data_namespace not in self._data:
            raise ValueError(f"{namespace} was not declared in the archive's prelude")
        if data_namespace in self.stats:
            raise ValueError(f"{namespace} is already complete")
        return data_namespace

    def _namespace_header(self, namespace: Namespace, *, eof: bool, crc: int) -> bytes:
        return bson.encode(
            {
                "db": namespace.db,
                "collection": namespace.collection,
                "EOF": eof,
                "CRC": bson.Int64(crc),
            }
        )

    def write_segment(self, namespace: Namespace | str, documents: Iterable[Document]) -> int:
        """Write one segment of ``namespace``'s documents; return how many were written."""
        data_namespace = self._resolve(namespace)
        if self._data[data_namespace].kind == "view":
            raise ValueError(f"{namespace} is a view; views have no documents")
        crc, count, size = self._running.get(data_namespace, (0, 0, 0))
        written = 0
        self._out.write(self._namespace_header(data_namespace, eof=False, crc=0))
        try:
            for document in documents:
                raw = _raw(document)
                self._out.write(raw)
                crc = crc64(raw, crc)
                size += len(raw)
                written += 1
        finally:
            # Keep the archive well-formed up to here even if the document source fails.
            self._out.write(TERMINATOR)
            self._running[data_namespace] = (crc, count + written, size)
        return written

    def end_namespace(self, namespace: Namespace | str) -> NamespaceStats:
        """Write ``namespace``'s EOF block with the CRC of all its documents."""
        data_namespace = self._resolve(namespace)
        if data_namespace not in self._running:
            # mongodump writes an empty segment before the EOF of an empty namespace.
            self._out.write(self._namespace_header(data_namespace, eof=False, crc=0))
            self._out.write(TERMINATOR)
        crc, count, size = self._running.pop(data_namespace, (0, 0, 0))
        self._out.write(self._namespace_header(data_namespace, eof=True, crc=to_int64(crc)))
        self._out.write(TERMINATOR)
        stats = NamespaceStats(count, size, to_int64(crc))
        self.stats[data_namespace] = stats
        return stats

    def write_collection(
        self, namespace: Namespace | str, documents: Iterable[Document]
    ) -> NamespaceStats:
        """Write all of ``namespace``'s documents as one segment and close it."""
        self.write_segment(namespace, documents)
        return self.end_namespace(namespace)

    def write_oplog(self, entries: Iterable[Document]) -> NamespaceStats:
        return self.write_collection(OPLOG_NAMESPACE, entries)

    def close(self) -> None:
        """Close the views; refuse to finish with a declared namespace left open."""
        for data_namespace, prelude in self._data.items():
            if prelude.kind == "view" and data_namespace not in self.stats:
                self.end_namespace(data_namespace)
        unfinished = sorted(str(ns) for ns in self._data if ns not in self.stats)
        if unfinished:
            raise ValueError(f"namespaces declared but never completed: {', '.join(unfinished)}")
        self._out.flush()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()


class ArchiveDump(Dump):
    """An archive presented as a :class:`Dump`.

    ``open_stream(stack)`` opens the (decompressed) archive stream and registers what it
    opened on ``stack``. A dump opened from a file can be read any number of times, each pass
    re-reading the file (``documents(ns)`` of one collection scans the whole archive). From a
    stream that cannot be re-opened (``reopenable=False``) only one pass is possible.
    """

    def __init__(
        self,
        open_stream: Callable[[ExitStack], BinaryIO],
        *,
        location: str,
        kind: str = "archive",
        reopenable: bool = True,
    ) -> None:
        self.kind = kind
        self.location = location
        self._open_stream = open_stream
        self._reopenable = reopenable
        self._stack = ExitStack()
        try:
            self._first: ArchiveReader | None = ArchiveReader(
                open_stream(self._stack), where=location
            )
        except BaseException:
            self._stack.close()
            raise
        reader = self._first
        self.server_version = reader.header.server_version or None
        self.tool_version = reader.header.tool_version or None
        self.header = reader.header
        self.preludes = reader.preludes
        self._by_data_namespace: dict[Namespace, DumpCollection] = {}
        collections: list[DumpCollection] = []
        self.oplog = None
        for prelude in reader.preludes:
            data_namespace = _data_namespace(prelude, reader.header.server_version)
            collection = DumpCollection(
                namespace=prelude.namespace,
                type=prelude.kind,
                metadata=prelude.metadata,
                data_namespace=data_namespace,
                special=special_kind(prelude.namespace),
                size=prelude.size or None,
                location=location,
            )
            if prelude.namespace == OPLOG_NAMESPACE:
                self.oplog = collection
            else:
                collections.append(collection)
        self.collections = tuple(collections)
        every = (*self.collections, *([self.oplog] if self.oplog else []))
        for data_namespace, prelude in reader._owners.items():
            self._by_data_namespace[data_namespace] = next(
                c for c in every if c.namespace == prelude.namespace
            )

    def iter_documents(self, *, validate: bool = False) -> Iterator[tuple[DumpCollection, bytes]]:
        with ExitStack() as stack:
            reader = self._first
            if reader is not None:
                self._first = None
                stack.push(self._stack.pop_all())
            elif self._reopenable:
                reader = ArchiveReader(self._open_stream(stack), where=self.location)
            else:
                raise RuntimeError(
                    f"{self.location} was opened from a stream and has been read already; "
                    "open it from a file to read it more than once"
                )
            by_data_namespace = self._by_data_namespace
            for namespace, document in reader.documents(validate=validate):
                yield by_data_namespace[namespace], document

    def close(self) -> None:
        self._first = None
        self._stack.close()
