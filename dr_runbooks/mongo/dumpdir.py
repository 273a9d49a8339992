"""Directory dumps (``mongodump --out DIR``) and the plan's legacy tarred directory dumps.

A directory dump, as mongodump writes it and mongorestore reads it::

    DIR/prelude.json[.gz]            {"ServerVersion": ..., "ToolVersion": ...} (tools 100.10+;
                                     mongorestore also looks in a database directory)
    DIR/oplog.bson[.gz]              the oplog entries of --oplog
    DIR/<db>/<coll>.bson[.gz]        the documents, concatenated raw BSON (".bin": legacy)
    DIR/<db>/<coll>.metadata.json[.gz]  options, indexes, uuid, type as Extended JSON
    DIR/<db>/system.indexes.bson     2.x/3.x: the index specs as documents {v, key, name, ns}

Collection names are escaped in file names with Go's ``url.PathEscape`` (``cafés`` is
``caf%C3%A9s``); a name too long for a file name is cut to 238 characters ending in
``%24<hash>`` and the real name is the metadata's ``collectionName``. A view is a metadata
file with no ``.bson``; a time-series collection ``X`` is ``X.metadata.json`` (type
``timeseries``) plus ``system.buckets.X.bson``. Like mongorestore we skip, and list in
:attr:`DirectoryDump.skipped`, files that are not part of a dump (other top-level files,
sub-directories of a database, unknown suffixes), ignore ``system.indexes.bson`` in a database
that has ``.metadata.json`` files, and refuse an invalid database name, a truncated name with
no ``collectionName``, buckets without their collection's metadata, and a directory with no
trace of mongodump at all (no metadata, ``system.indexes``, prelude or oplog file).

The legacy ``backup_YYYYMMDD_HHMMSS.tar.gz`` is such a directory, tarred with whatever path
prefix ``tar`` was given; the dump root is found inside it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

import bson
from bson import json_util

from dr_runbooks.errors import InvalidArchive

from ._stream import iter_bson_stream
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

__all__ = ["DirectoryDump", "TarDump"]

Parts = tuple[str, ...]

_DATA_SUFFIXES = (".bson.gz", ".bson", ".bin")
_METADATA_SUFFIXES = (".metadata.json.gz", ".metadata.json")
_PRELUDE_NAMES = ("prelude.json", "prelude.json.gz")
_OPLOG_NAMES = ("oplog.bson", "oplog.bson.gz")
_INVALID_DB_CHARACTERS = frozenset('/\\. "$*<>:|?')
_MAX_DB_NAME_BYTES = 63
# mongodump cuts escaped names longer than this and appends "%24" + a hash (TOOLS-1163).
_TRUNCATED_NAME_LENGTH = 238
# Metadata, preludes and system.indexes are read whole; a bigger one is not one of those.
_MAX_SMALL_FILE = 16 * 1024 * 1024


def _suffix_stem(name: str, suffixes: tuple[str, ...]) -> str | None:
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _gunzip_if(parts: Parts, data: bytes, where: str) -> bytes:
    if not parts[-1].endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InvalidArchive(f"{where}: cannot decompress: {exc}") from exc


def _unescape(stem: str, where: str) -> str:
    """Go's ``url.PathUnescape``: ``%XX`` escapes only (``+`` stays), malformed is an error."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", stem):
        raise InvalidArchive(f"{where}: malformed %-escape in the file name")
    try:
        return urllib.parse.unquote(stem, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidArchive(f"{where}: the escaped name is not UTF-8: {exc}") from exc


def _collection_name(stem: str, metadata: CollectionMetadata | None, where: str) -> str:
    if "%24" in stem and len(stem) == _TRUNCATED_NAME_LENGTH:
        if metadata is None or not metadata.collection_name:
            raise InvalidArchive(
                f"{where}: a truncated collection name needs the collectionName of its "
                ".metadata.json, which is missing"
            )
        return metadata.collection_name
    return _unescape(stem, where)


def _check_db_name(name: str, where: str) -> None:
    bad = sorted(_INVALID_DB_CHARACTERS.intersection(name))
    if bad or not name or len(name.encode()) > _MAX_DB_NAME_BYTES:
        reason = f"contains {''.join(bad)!r}" if bad else "has a bad length"
        raise InvalidArchive(f"{where}: invalid database name {name!r} ({reason})")


def _parse_prelude_json(data: bytes, where: str) -> tuple[str | None, str | None]:
    try:
        prelude = json.loads(data)
    except ValueError as exc:
        raise InvalidArchive(f"{where}: invalid prelude JSON: {exc}") from exc
    if not isinstance(prelude, dict):
        raise InvalidArchive(f"{where}: prelude is not a JSON object")
    server, tool = prelude.get("ServerVersion"), prelude.get("ToolVersion")
    return (server if isinstance(server, str) and server else None), (
        tool if isinstance(tool, str) and tool else None
    )


@dataclass
class _Layout:
    """What the file names and metadata of a dump tree say, before any data is read."""

    collections: list[tuple[DumpCollection, Parts | None]] = field(default_factory=list)
    oplog: tuple[DumpCollection, Parts] | None = None
    server_version: str | None = None
    tool_version: str | None = None
    skipped: list[str] = field(default_factory=list)


def _index_specs_from_system_indexes(
    documents: Iterator[bytes], where: str
) -> dict[str, list[dict[str, Any]]]:
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for number, raw in enumerate(documents):
        spec = bson.decode(raw)
        namespace = spec.get("ns")
        if not isinstance(namespace, str) or "." not in namespace:
            raise InvalidArchive(f"{where}: index spec {number} has no 'ns'")
        if not isinstance(spec.get("key"), dict) or not isinstance(spec.get("name"), str):
            raise InvalidArchive(f"{where}: index spec {number} lacks a 'key' or a 'name'")
        # mongorestore keys these by collection only (the directory may be a renamed db).
        by_collection.setdefault(namespace.partition(".")[2], []).append(spec)
    return by_collection


def _analyse(
    files: Mapping[Parts, int],
    databases: set[str],
    read_small: Callable[[Parts], bytes],
    open_data: Callable[[Parts], Iterator[bytes]],
    where: str,
) -> _Layout:
    """Turn a dump tree's file list into collections; see the module docstring for the rules.

    ``files`` maps paths relative to the dump root to their size (-1 if unknown).
    """
    layout = _Layout()
    found_mongodump_file = False
    db_preludes: list[Parts] = []
    for parts in sorted(files):
        path = "/".join(parts)
        if len(parts) == 1:
            name = parts[0]
            if name in _OPLOG_NAMES:
                found_mongodump_file = True
                collection = DumpCollection(
                    namespace=OPLOG_NAMESPACE,
                    type="collection",
                    metadata=None,
                    data_namespace=OPLOG_NAMESPACE,
                    special="oplog",
                    size=files[parts] if name.endswith(".bson") and files[parts] >= 0 else None,
                    location=path,
                )
                if layout.oplog is not None:
                    raise InvalidArchive(f"{where}: both oplog.bson and oplog.bson.gz")
                layout.oplog = (collection, parts)
            elif name in _PRELUDE_NAMES:
                found_mongodump_file = True
                data = _gunzip_if(parts, read_small(parts), f"{where}/{path}")
                layout.server_version, layout.tool_version = _parse_prelude_json(
                    data, f"{where}/{path}"
                )
            else:
                layout.skipped.append(f"{path}: a top-level file that is not the oplog")
        elif len(parts) > 2:
            layout.skipped.append(f"{path}: inside a sub-directory of a database directory")

    for db in sorted(databases):
        _check_db_name(db, f"{where}/{db}")
        metadata_files: dict[str, Parts] = {}
        data_files: dict[str, Parts] = {}
        system_indexes: Parts | None = None
        for parts in sorted(p for p in files if len(p) == 2 and p[0] == db):
            name, path = parts[1], "/".join(parts)
            if name in _PRELUDE_NAMES:
                db_preludes.append(parts)
                continue
            metadata_stem = _suffix_stem(name, _METADATA_SUFFIXES)
            data_stem = _suffix_stem(name, _DATA_SUFFIXES)
            if metadata_stem is not None:
                target, stem = metadata_files, metadata_stem
            elif data_stem is not None:
                if data_stem == "system.indexes":
                    system_indexes = parts
                    continue
                target, stem = data_files, data_stem
            else:
                layout.skipped.append(f"{path}: not a .bson or .metadata.json file")
                continue
            if stem in target:
                raise InvalidArchive(
                    f"{where}: both {'/'.join(target[stem])} and {path} for one collection"
                )
            target[stem] = parts
        found_mongodump_file |= bool(metadata_files) or system_indexes is not None

        metadata: dict[str, CollectionMetadata | None] = {
            stem: parse_metadata(
                _gunzip_if(parts, read_small(parts), f"{where}/{'/'.join(parts)}"),
                f"{where}/{'/'.join(parts)}",
            )
            for stem, parts in metadata_files.items()
        }

        metadata_by_name = {
            _collection_name(stem, metadata.get(stem), f"{where}/{'/'.join(parts)}"): (
                metadata[stem],
                parts,
            )
            for stem, parts in metadata_files.items()
        }
        data_by_name = {
            _collection_name(stem, metadata.get(stem), f"{where}/{'/'.join(parts)}"): parts
            for stem, parts in data_files.items()
        }

        if system_indexes is not None and metadata_files:
            layout.skipped.append(
                f"{'/'.join(system_indexes)}: ignored because the database has .metadata.json "
                "files (as mongorestore does)"
            )
        elif system_indexes is not None:
            specs = _index_specs_from_system_indexes(
                open_data(system_indexes), f"{where}/{'/'.join(system_indexes)}"
            )
            for name in data_by_name:
                indexes = specs.get(name, [])
                text = json_util.dumps(
                    {"options": {}, "indexes": indexes},
                    json_options=json_util.CANONICAL_JSON_OPTIONS,
                )
                metadata_by_name[name] = (
                    CollectionMetadata({}, indexes, None, None, "collection", text),
                    system_indexes,
                )

        data_namespaces: dict[str, Namespace] = {}
        for name, (meta, _) in metadata_by_name.items():
            if meta is not None and meta.type == "timeseries":
                buckets = TIMESERIES_BUCKETS_PREFIX + name
                if buckets in data_by_name:
                    data_by_name[name] = data_by_name.pop(buckets)
                    data_namespaces[name] = Namespace(db, buckets)
        for name, parts in data_by_name.items():
            if name.startswith(TIMESERIES_BUCKETS_PREFIX) and name not in metadata_by_name:
                raise InvalidArchive(
                    f"{where}/{'/'.join(parts)}: time-series buckets without the time-series "
                    f"metadata of {db}.{name.removeprefix(TIMESERIES_BUCKETS_PREFIX)}"
                )

        for name in sorted(set(metadata_by_name) | set(data_by_name)):
            meta = metadata_by_name.get(name, (None, ()))[0]
            data_parts = data_by_name.get(name)
            namespace = Namespace(db, name)
            size: int | None = None
            if data_parts and not data_parts[-1].endswith(".gz") and files[data_parts] >= 0:
                size = files[data_parts]
            collection = DumpCollection(
                namespace=namespace,
                type=meta.type if meta else "collection",
                metadata=meta,
                data_namespace=data_namespaces.get(name, namespace),
                special=special_kind(namespace),
                size=size,
                location="/".join(data_parts or metadata_by_name[name][1]),
            )
            layout.collections.append((collection, data_parts))

    if layout.server_version is None and db_preludes:
        parts = db_preludes[0]
        found_mongodump_file = True
        layout.server_version, layout.tool_version = _parse_prelude_json(
            _gunzip_if(parts, read_small(parts), f"{where}/{'/'.join(parts)}"),
            f"{where}/{'/'.join(parts)}",
        )
    if not found_mongodump_file:
        raise InvalidArchive(
            f"{where}: not a mongodump directory (no .metadata.json, system.indexes.bson, "
            "prelude.json or oplog.bson in it)"
        )
    return layout


class _TreeDump(Dump):
    """What directory and tar dumps share: a layout, and BSON files to stream."""

    skipped: tuple[str, ...]

    def _init_layout(self, layout: _Layout) -> None:
        self.server_version = layout.server_version
        self.tool_version = layout.tool_version
        self.collections = tuple(collection for collection, _ in layout.collections)
        self.oplog = layout.oplog[0] if layout.oplog else None
        self.skipped = tuple(layout.skipped)
        self._data_files: dict[Parts, DumpCollection] = {
            parts: collection for collection, parts in layout.collections if parts is not None
        }
        if layout.oplog is not None:
            self._data_files[layout.oplog[1]] = layout.oplog[0]

    def _stream(
        self, collection: DumpCollection, parts: Parts, handle: IO[bytes], validate: bool
    ) -> Iterator[bytes]:
        time_field = None
        if collection.type == "timeseries" and collection.metadata is not None:
            time_field = collection.metadata.time_field
        where = f"{self.location}/{'/'.join(parts)}"
        return _bson_file(handle, parts, where, validate=validate, time_field=time_field)


def _bson_file(
    handle: IO[bytes] | _BytesHandle,
    parts: Parts,
    where: str,
    *,
    validate: bool,
    time_field: str | None = None,
) -> Iterator[bytes]:
    """The documents of one ``.bson[.gz]`` file; buckets checked when ``time_field`` is set."""
    stream = cast(BinaryIO, handle)
    if parts[-1].endswith(".gz"):
        stream = cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
    for number, document in enumerate(iter_bson_stream(stream, where, validate=validate)):
        if time_field is not None:
            check_timeseries_bucket(document, time_field, f"{where}: document {number}")
        yield document


def _scan_directory(root: Path) -> tuple[dict[Parts, int], set[str], list[str]]:
    files: dict[Parts, int] = {}
    databases: set[str] = set()
    skipped: list[str] = []
    # Symbolic links are followed, as mongorestore follows them (dumps assembled from links).
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            databases.add(entry.name)
            for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if inner.is_dir():
                    skipped.append(f"{entry.name}/{inner.name}/: a sub-directory of a database")
                elif inner.is_file():
                    files[(entry.name, inner.name)] = inner.stat().st_size
        elif entry.is_file():
            files[(entry.name,)] = entry.stat().st_size
    return files, databases, skipped


class DirectoryDump(_TreeDump):
    """A ``mongodump --out`` directory. Collections are read in namespace order, then the oplog."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.kind = "directory"
        self.location = str(self.root)
        if not self.root.is_dir():
            raise InvalidArchive(f"{self.root}: not a directory")
        files, databases, skipped = _scan_directory(self.root)

        def read_small(parts: Parts) -> bytes:
            path = self.root.joinpath(*parts)
            if path.stat().st_size > _MAX_SMALL_FILE:
                raise InvalidArchive(f"{path}: too large for a metadata file")
            return path.read_bytes()

        def open_data(parts: Parts) -> Iterator[bytes]:
            with self.root.joinpath(*parts).open("rb") as handle:
                where = f"{self.location}/{'/'.join(parts)}"
                yield from _bson_file(handle, parts, where, validate=True)

        layout = _analyse(files, databases, read_small, open_data, self.location)
        layout.skipped[:0] = skipped
        self._init_layout(layout)

    def _read(self, collection: DumpCollection, parts: Parts, validate: bool) -> Iterator[bytes]:
        with self.root.joinpath(*parts).open("rb") as handle:
            yield from self._stream(collection, parts, handle, validate)

    def iter_documents(self, *, validate: bool = False) -> Iterator[tuple[DumpCollection, bytes]]:
        ordered = sorted(self._data_files.items(), key=lambda item: item[1].special == "oplog")
        for parts, collection in ordered:
            for document in self._read(collection, parts, validate):
                yield collection, document

    def documents(self, namespace: Namespace | str, *, validate: bool = False) -> Iterator[bytes]:
        wanted = self.collection(namespace)
        for parts, collection in self._data_files.items():
            if collection is wanted:
                yield from self._read(collection, parts, validate)


def _member_parts(name: str) -> Parts | None:
    """A tar member's path as parts, or None if it could not be part of a dump tree."""
    path = PurePosixPath(name.lstrip("/"))
    parts = tuple(part for part in path.parts if part not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts


_TAR_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
)


class TarDump(_TreeDump):
    """A tarred directory dump (the plan's ``backup_YYYYMMDD_HHMMSS.tar.gz``).

    The tar is read in streaming mode (``r|``) and never extracted: the first pass reads the
    member list and the small files (metadata, prelude, system.indexes), each later pass
    streams the ``.bson`` members in tar order. A restore host then needs no scratch space for
    an uncompressed copy of the dump, nothing is written where a member name points (``..``
    or absolute names cannot escape anywhere), and memory stays flat; the price is that every
    pass decompresses the tar again. ``open_stream(stack)`` must return the decompressed tar
    bytes and be callable once per pass.
    """

    def __init__(
        self,
        open_stream: Callable[[ExitStack], BinaryIO],
        *,
        location: str,
        kind: str = "tar",
    ) -> None:
        self.kind = kind
        self.location = location
        self._open_stream = open_stream
        members: dict[Parts, int] = {}
        directories: set[Parts] = set()
        small: dict[Parts, bytes] = {}
        skipped: list[str] = []
        for member, handle in self._members():
            parts = _member_parts(member.name)
            if parts is None:
                skipped.append(f"{member.name}: not a path inside the dump")
            elif member.isdir():
                directories.add(parts)
            elif not member.isfile():
                skipped.append(f"{member.name}: not a regular file (links are not followed)")
            else:
                members[parts] = member.size
                if _is_small_kind(parts[-1]):
                    if member.size > _MAX_SMALL_FILE:
                        raise InvalidArchive(f"{location}: {member.name} is too large")
                    small[parts] = self._read_member(handle(), member.name)
        self._root = _find_root(members, location)
        files = {
            parts[len(self._root) :]: size
            for parts, size in members.items()
            if parts[: len(self._root)] == self._root and len(parts) > len(self._root)
        }
        databases = {parts[0] for parts in files if len(parts) >= 2}
        databases |= {
            parts[len(self._root)]
            for parts in directories
            if parts[: len(self._root)] == self._root and len(parts) == len(self._root) + 1
        }

        def read_small(parts: Parts) -> bytes:
            return small[self._root + parts]

        def open_data(parts: Parts) -> Iterator[bytes]:
            handle = _BytesHandle(small[self._root + parts])
            return _bson_file(handle, parts, f"{location}/{'/'.join(parts)}", validate=True)

        layout = _analyse(files, databases, read_small, open_data, location)
        layout.skipped[:0] = skipped
        self._init_layout(layout)

    def _read_member(self, handle: IO[bytes] | None, name: str) -> bytes:
        if handle is None:
            raise InvalidArchive(f"{self.location}: cannot read member {name}")
        try:
            return handle.read()
        except _TAR_ERRORS as exc:
            raise InvalidArchive(f"{self.location}: damaged tar at {name}: {exc}") from exc

    def _members(self) -> Iterator[tuple[tarfile.TarInfo, Callable[[], IO[bytes] | None]]]:
        """Each member with a way to read it, in one streaming pass; damage is InvalidArchive."""
        with ExitStack() as stack:
            try:
                tar = stack.enter_context(tarfile.open(fileobj=self._open_stream(stack), mode="r|"))
                iterator = iter(tar)
                while True:
                    try:
                        member = next(iterator)
                    except StopIteration:
                        return

                    def extract(member: tarfile.TarInfo = member) -> IO[bytes] | None:
                        return tar.extractfile(member)

                    yield member, extract
            except _TAR_ERRORS as exc:
                raise InvalidArchive(f"{self.location}: not a readable tar: {exc}") from exc

    def _iter(
        self, wanted: DumpCollection | None, validate: bool
    ) -> Iterator[tuple[DumpCollection, bytes]]:
        for member, handle in self._members():
            parts = _member_parts(member.name)
            if parts is None or parts[: len(self._root)] != self._root or not member.isfile():
                continue
            relative = parts[len(self._root) :]
            collection = self._data_files.get(relative)
            if collection is None or (wanted is not None and collection is not wanted):
                continue
            raw = handle()
            if raw is None:
                raise InvalidArchive(f"{self.location}: cannot read member {member.name}")
            try:
                for document in self._stream(collection, relative, raw, validate):
                    yield collection, document
            except _TAR_ERRORS as exc:
                raise InvalidArchive(
                    f"{self.location}: damaged tar at {member.name}: {exc}"
                ) from exc
            if wanted is not None:
                return

    def iter_documents(self, *, validate: bool = False) -> Iterator[tuple[DumpCollection, bytes]]:
        """Every document, in the order the members sit in the tar."""
        return self._iter(None, validate)

    def documents(self, namespace: Namespace | str, *, validate: bool = False) -> Iterator[bytes]:
        wanted = self.collection(namespace)
        if wanted not in self._data_files.values():
            return
        for _, document in self._iter(wanted, validate):
            yield document


class _BytesHandle:
    """Just enough of a file for ``iter_bson_stream`` over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk


def _is_small_kind(name: str) -> bool:
    return (
        name in _PRELUDE_NAMES
        or _suffix_stem(name, _METADATA_SUFFIXES) is not None
        or _suffix_stem(name, _DATA_SUFFIXES) == "system.indexes"
    )


def _find_root(members: Mapping[Parts, int], location: str) -> Parts:
    """The directory inside the tar that is the dump (``tar -czf x.tar.gz /backups/mongodb/b``
    stores ``backups/mongodb/b/...``): the shallowest directory a mongodump file points to."""
    candidates: set[Parts] = set()
    for parts in members:
        name = parts[-1]
        if name in _OPLOG_NAMES or name in _PRELUDE_NAMES:
            # A top-level file of the dump (a database's own prelude.json points one level
            # deeper, and the shallowest candidate wins).
            candidates.add(parts[:-1])
        elif _is_small_kind(name) and len(parts) >= 2:
            candidates.add(parts[:-2])  # <db>/<coll>.metadata.json or <db>/system.indexes.bson
    if not candidates:
        raise InvalidArchive(f"{location}: the tar holds no mongodump directory")
    root = min(candidates, key=len)
    for other in candidates:
        if other[: len(root)] != root:
            raise InvalidArchive(
                f"{location}: the tar holds more than one dump "
                f"({'/'.join(root) or '.'} and {'/'.join(other)})"
            )
    return root
