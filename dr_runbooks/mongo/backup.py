"""One MongoDB database backed up into a repository, as a mongodump archive.

The backup writes, in order: the in-progress marker, ``data.archive.zst`` (the mongodump archive
format, zstd-compressed on the fly, sha256 computed as it streams), then the manifest. If
anything fails, the partial objects are removed and no manifest is written, so the attempt never
shows up as a backup. Decompressed, ``data.archive.zst`` is what ``mongorestore --archive``
reads. Into a repository with ``encrypt_to`` it is encrypted with age after compression, as it
streams, and stored as ``data.archive.zst.age`` (``age -d … | zstd -d | mongorestore --archive``).

Two engines write the same thing:

- ``native``: pymongo through the connection's client factory. Collections, views and
  time-series collections are listed with their options, UUID and index specs (the prelude),
  then each collection's documents are streamed as raw BSON batches (``find_raw_batches``) into
  :class:`~dr_runbooks.mongo.ArchiveWriter`: one server batch in memory at a time.
- ``tools``: ``mongodump --archive`` with credentials in a 0600 ``--config`` file. Its output
  is read as it streams (which checks every namespace's CRC), and rewritten through the same
  writer, keeping only the database being backed up.

Consistency. On a replica set the newest oplog entry is noted *before* the collections are
read; after the last document, the oplog from that entry to the newest one then is captured
into the archive's oplog namespace, as ``mongodump --oplog`` does, so a restore that replays it
ends at one consistent point: the end of the backup. The oplog is read once more afterwards:
if its oldest entry is newer than the start, it rolled over while we read and the backup is
refused. On a standalone server there is no oplog: every collection is consistent in itself,
read at some moment during the backup, and the manifest says so (``consistency:
"per-collection"``, consistent point = the start). ``mongodump --oplog`` only dumps whole
instances, so the tools engine on a replica set dumps everything and keeps the one database
(and the oplog entries that touch it).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import bson
from bson.raw_bson import RawBSONDocument

from dr_runbooks import crypto, progress
from dr_runbooks.errors import DRError, DumpFailed, InvalidArchive, OperationFailed
from dr_runbooks.processes import die_with_parent
from dr_runbooks.redaction import redact
from dr_runbooks.repository import (
    Manifest,
    ObjectEncryption,
    ObjectEntry,
    Repository,
    new_backup_id,
)
from dr_runbooks.streams import Digest, compress, hashed
from dr_runbooks.text import first_line

from .archive import ArchiveHeader, ArchivePrelude, ArchiveReader, ArchiveWriter
from .connection import MongoConnInfo, check_database_name, connection_error
from .model import OPLOG_NAMESPACE, TIMESERIES_BUCKETS_PREFIX, Namespace, to_json_value

__all__ = [
    "DATA",
    "Engine",
    "ServerInfo",
    "backup_database",
    "choose_engine",
    "list_user_databases",
    "server_info",
]

DATA = "data.archive.zst"
NATIVE_TOOL = "dr-runbooks native engine"
Engine = Literal["auto", "native", "tools"]

# A segment of the archive is flushed to the compressor at about this size.
_SEGMENT_BYTES = 4 << 20
_BATCH_DOCUMENTS = 1000
# Collections the server manages itself: views come from listCollections, buckets with their
# time-series collection, and the profiler's data is not application data.
_SKIPPED_SYSTEM = re.compile(r"^system\.(?!js$)")


@dataclass(frozen=True)
class ServerInfo:
    """What the backup needs to know about the server before it starts."""

    version: str
    replica_set: str | None

    @property
    def version_tuple(self) -> tuple[int, ...]:
        match = re.match(r"(\d+)\.(\d+)", self.version)
        return (int(match.group(1)), int(match.group(2))) if match else ()


def _failed(exc: BaseException, what: str) -> DRError:
    """A server error as ours: unreachable (transient) or refused (bad input) when that is what
    it says, else a failed dump."""
    return connection_error(exc, what) or DumpFailed(f"{what}: {first_line(exc)}")


def server_info(client: Any) -> ServerInfo:
    """Version and replica set name (``hello``; ``setName`` is absent on a standalone)."""
    from pymongo.errors import PyMongoError

    try:
        hello = client.admin.command("hello")
        build = client.admin.command("buildInfo")
    except PyMongoError as exc:
        raise _failed(exc, "cannot ask the server who it is") from None
    set_name = hello.get("setName")
    return ServerInfo(str(build.get("version", "")), str(set_name) if set_name else None)


def list_user_databases(client: Any) -> list[str]:
    """Every database except admin, local and config."""
    from pymongo.errors import PyMongoError

    from .connection import SYSTEM_DATABASES

    try:
        names = client.list_database_names()
    except PyMongoError as exc:
        raise _failed(exc, "cannot list databases") from None
    return sorted(name for name in names if name not in SYSTEM_DATABASES)


def choose_engine(engine: Engine | str) -> Literal["native", "tools"]:
    """``auto`` prefers the MongoDB tools when ``mongodump`` is on PATH."""
    if engine == "native":
        return "native"
    if engine == "tools":
        if shutil.which("mongodump") is None:
            raise DumpFailed("engine=tools but mongodump is not on PATH")
        return "tools"
    if engine != "auto":
        raise DumpFailed(f"unknown engine {engine!r} (auto, native or tools)")
    return "tools" if shutil.which("mongodump") else "native"


# -- what the archive holds ----------------------------------------------------------------------


def _uuid_hex(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "hex") and callable(value.hex):
        text = value.hex()
        return text if isinstance(text, str) else None
    return str(getattr(value, "hex", value))


def list_collections(client: Any, database: str, server: ServerInfo) -> list[ArchivePrelude]:
    """The prelude of a database's archive: per collection, view and time-series collection
    the metadata mongodump writes (options, index specs, UUID, name, type)."""
    from pymongo.errors import PyMongoError

    db = client[database]
    preludes = []
    try:
        specs = sorted(db.list_collections(), key=lambda spec: str(spec["name"]))
        for spec in specs:
            name = str(spec["name"])
            if _SKIPPED_SYSTEM.match(name):
                continue
            kind = str(spec.get("type") or "collection")
            if kind == "timeseries" and server.version_tuple >= (8, 3):
                raise DumpFailed(
                    f"{database}.{name} is a time-series collection on MongoDB "
                    f"{server.version}, whose buckets the native engine cannot read yet: "
                    "use engine=tools"
                )
            indexes = [] if kind == "view" else [dict(i) for i in db[name].list_indexes()]
            metadata = {
                "options": dict(spec.get("options") or {}),
                "indexes": indexes,
                "uuid": _uuid_hex((spec.get("info") or {}).get("uuid")),
                "collectionName": name,
                "type": kind,
            }
            if metadata["uuid"] is None:
                del metadata["uuid"]
            preludes.append(ArchivePrelude.for_collection(Namespace(database, name), metadata))
    except PyMongoError as exc:
        raise _failed(exc, f"cannot list the collections of {database}") from None
    return preludes


def _data_name(prelude: ArchivePrelude) -> str:
    name = prelude.namespace.collection
    return TIMESERIES_BUCKETS_PREFIX + name if prelude.kind == "timeseries" else name


def _split_batch(batch: bytes) -> Iterator[memoryview]:
    """The documents of a raw batch: BSON documents back to back, each length-prefixed."""
    view = memoryview(batch)
    position = 0
    while position < len(view):
        size = int.from_bytes(view[position : position + 4], "little")
        if size < 5 or position + size > len(view):
            raise DumpFailed(f"the server sent a malformed batch (document of {size} bytes)")
        yield view[position : position + size]
        position += size


def _drain(spool: io.BytesIO) -> bytes:
    """What the archive writer wrote since the last drain. Drained after every segment, the
    spool holds at most one segment (a server batch, or ``_SEGMENT_BYTES`` of documents)."""
    data = spool.getvalue()
    spool.seek(0)
    spool.truncate()
    return data


@dataclass
class _Written:
    """What the archive turned out to hold, filled in as it is written."""

    preludes: list[ArchivePrelude] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    server_version: str = ""
    tool_version: str = ""
    oplog: dict[str, Any] | None = None
    consistent_point: datetime | None = None


# -- the native engine ---------------------------------------------------------------------------


def _oplog_edge(client: Any, newest: bool) -> bson.Timestamp:
    from pymongo.errors import PyMongoError

    try:
        cursor = client.local["oplog.rs"].find(
            {}, {"ts": 1}, sort=[("$natural", -1 if newest else 1)], limit=1
        )
        entry = next(iter(cursor), None)
    except PyMongoError as exc:
        raise _failed(exc, "cannot read local.oplog.rs") from None
    if entry is None or not isinstance(entry.get("ts"), bson.Timestamp):
        raise DumpFailed("the server says it is a replica set member but its oplog is empty")
    return entry["ts"]


def _oplog_filter(database: str, start: bson.Timestamp, end: bson.Timestamp) -> dict[str, Any]:
    """The entries a restore of ``database`` replays: its own namespaces and ``admin.$cmd``
    (where transactions and applyOps are logged, with the database's operations inside)."""
    return {
        "ts": {"$gte": start, "$lte": end},
        "$or": [{"ns": {"$regex": f"^{re.escape(database)}\\."}}, {"ns": "admin.$cmd"}],
    }


def _native_archive(
    client: Any,
    database: str,
    server: ServerInfo,
    preludes: list[ArchivePrelude],
    start: bson.Timestamp | None,
    written: _Written,
) -> Iterator[bytes]:
    from pymongo.errors import PyMongoError

    spool = io.BytesIO()
    all_preludes = [*preludes, *([ArchivePrelude.oplog()] if start is not None else [])]
    header = ArchiveHeader(server_version=server.version, tool_version=NATIVE_TOOL)
    writer = ArchiveWriter(spool, all_preludes, header=header)
    written.preludes, written.server_version = preludes, server.version
    written.tool_version = NATIVE_TOOL
    yield _drain(spool)
    db = client[database]
    for prelude in preludes:
        if prelude.kind == "view":
            continue
        name = _data_name(prelude)
        try:
            for batch in db[name].find_raw_batches({}, batch_size=_BATCH_DOCUMENTS):
                writer.write_segment(prelude.namespace, _split_batch(batch))
                yield _drain(spool)
        except PyMongoError as exc:
            raise _failed(exc, f"reading {database}.{name} failed") from None
        written.counts[str(prelude.namespace)] = writer.end_namespace(prelude.namespace).documents
        yield _drain(spool)
    if start is not None:
        end = _oplog_edge(client, newest=True)
        entries = 0
        try:
            batches = client.local["oplog.rs"].find_raw_batches(
                _oplog_filter(database, start, end),
                sort=[("$natural", 1)],
                batch_size=_BATCH_DOCUMENTS,
            )
            for batch in batches:
                entries += writer.write_segment(OPLOG_NAMESPACE, _split_batch(batch))
                yield _drain(spool)
        except PyMongoError as exc:
            raise _failed(exc, "reading local.oplog.rs failed") from None
        oldest = _oplog_edge(client, newest=False)
        if oldest > start:
            raise DumpFailed(
                f"the oplog rolled over during the backup (its oldest entry {oldest} is newer "
                f"than the backup's start {start}); entries are lost: enlarge the oplog or "
                "back up at a quieter time"
            )
        writer.end_namespace(OPLOG_NAMESPACE)
        written.oplog = {
            "start": {"t": start.time, "i": start.inc},
            "end": {"t": end.time, "i": end.inc},
            "entries": entries,
        }
        written.consistent_point = datetime.fromtimestamp(end.time, UTC)
    writer.close()
    yield _drain(spool)


# -- the tools engine ----------------------------------------------------------------------------


def _keep_oplog_entry(document: bytes, database: str) -> bool:
    namespace = RawBSONDocument(document).get("ns", "")
    return isinstance(namespace, str) and (
        namespace.startswith(database + ".") or namespace == "admin.$cmd"
    )


def _tools_archive(
    conninfo: MongoConnInfo, database: str, server: ServerInfo, written: _Written
) -> Iterator[bytes]:
    from .connection import tools_config_file

    mongodump = shutil.which("mongodump")
    if mongodump is None:
        raise DumpFailed("mongodump is not on PATH")
    with tools_config_file(conninfo) as config, tempfile.TemporaryFile() as stderr:
        argv = [mongodump, f"--config={config}", "--archive"]
        argv += ["--oplog"] if server.replica_set else [f"--db={database}"]
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, preexec_fn=die_with_parent
        )
        assert process.stdout is not None
        error: BaseException | None = None
        killed = False
        try:
            yield from _rewrite_archive(process.stdout, database, written)
        except BaseException as exc:  # mongodump's own failure, if any, is the better message
            error = exc
        finally:
            process.stdout.close()
            if isinstance(error, GeneratorExit):  # the consumer stopped: nothing to report
                process.kill()
                killed = True
            try:
                # A mongodump that failed exits on its own, with the message worth reporting.
                status = process.wait(timeout=None if error is None else 10)
            except subprocess.TimeoutExpired:
                process.kill()
                killed = True
                status = process.wait()
        if status != 0 and not killed:
            stderr.seek(0)
            lines = [line.strip() for line in stderr.read().decode("utf-8", "replace").splitlines()]
            message = next((line for line in reversed(lines) if line), "no message")
            raise DumpFailed(f"mongodump exited {status}: {redact(message)}")
        if error is not None:
            raise error


def _rewrite_archive(stream: Any, database: str, written: _Written) -> Iterator[bytes]:
    """Read a mongodump archive as it streams and write the part about ``database`` again:
    its collections, and the oplog entries that touch it."""
    try:
        reader = ArchiveReader(stream, where="mongodump output")
    except InvalidArchive as exc:
        raise DumpFailed(f"mongodump wrote something that is not an archive: {exc}") from None
    kept = [p for p in reader.preludes if p.namespace.db == database]
    has_oplog = any(p.namespace == OPLOG_NAMESPACE for p in reader.preludes)
    owners: dict[Namespace, ArchivePrelude] = {}
    for prelude in kept:
        owners[prelude.namespace] = prelude
        owners[Namespace(database, _data_name(prelude))] = prelude
    spool = io.BytesIO()
    preludes = [*kept, *([ArchivePrelude.oplog()] if has_oplog else [])]
    writer = ArchiveWriter(spool, preludes, header=reader.header)
    written.preludes = kept
    written.server_version = reader.header.server_version
    written.tool_version = f"mongodump {reader.header.tool_version}".strip()
    yield _drain(spool)
    counts = {str(p.namespace): 0 for p in kept if p.kind != "view"}
    pending: list[bytes] = []
    pending_namespace: Namespace | None = None
    pending_size = 0
    oplog_entries = 0
    first_ts = last_ts = None

    def flush() -> None:
        nonlocal pending, pending_size
        if pending_namespace is not None and pending:
            writer.write_segment(pending_namespace, pending)
        pending, pending_size = [], 0

    for namespace, document in reader.documents():
        if namespace == OPLOG_NAMESPACE:
            if not _keep_oplog_entry(document, database):
                continue
            ts = RawBSONDocument(document).get("ts")
            first_ts = first_ts or ts
            last_ts = ts or last_ts
            oplog_entries += 1
        elif namespace not in owners:
            continue
        else:
            counts[str(owners[namespace].namespace)] += 1
        if namespace != pending_namespace or pending_size >= _SEGMENT_BYTES:
            flush()
            pending_namespace = namespace
            yield _drain(spool)
        pending.append(document)
        pending_size += len(document)
    flush()
    for prelude in preludes:
        if prelude.kind != "view":
            writer.end_namespace(prelude.namespace)
    writer.close()
    yield _drain(spool)
    written.counts = counts
    if has_oplog:
        written.oplog = {
            "start": {"t": first_ts.time, "i": first_ts.inc} if first_ts else None,
            "end": {"t": last_ts.time, "i": last_ts.inc} if last_ts else None,
            "entries": oplog_entries,
        }
        if last_ts is not None:
            written.consistent_point = datetime.fromtimestamp(last_ts.time, UTC)


# -- the backup ------------------------------------------------------------------------------------


def _details(written: _Written, engine: str, server: ServerInfo) -> dict[str, Any]:
    collections = {}
    for prelude in written.preludes:
        metadata = prelude.metadata
        collections[str(prelude.namespace)] = {
            "type": prelude.kind,
            "options": to_json_value(metadata.options if metadata else {}),
            "indexes": to_json_value(metadata.indexes if metadata else []),
            "uuid": metadata.uuid if metadata else None,
        }
    return {
        "engine": engine,
        "replica_set": server.replica_set,
        "collections": collections,
        "oplog": written.oplog,
        "format": "mongodump archive (mongorestore --archive reads it once decompressed)",
    }


def backup_database(
    conninfo: MongoConnInfo,
    database: str,
    system: str,
    repository: Repository,
    *,
    engine: Engine | str = "auto",
    kind: str = "full",
    compression_level: int = 3,
    backup_id: str | None = None,
) -> Manifest:
    """Back ``database`` up into ``repository`` and commit it; return the manifest.

    ``conninfo`` supplies the client (through its factory) and, for the tools engine, the URI
    that goes into mongodump's 0600 config file.
    """
    from pymongo.errors import PyMongoError

    check_database_name(database)
    chosen = choose_engine(engine)
    started = datetime.now(UTC)
    backup_id = backup_id or new_backup_id(started)
    client: Any = None
    try:
        client = conninfo.client()
        server = server_info(client)
        # mongodump --oplog notes its own start; the native engine notes it here, first.
        native = chosen == "native"
        start = _oplog_edge(client, newest=True) if native and server.replica_set else None
        if native and database not in client.list_database_names():
            raise DumpFailed(f"database {database} does not exist on {conninfo.describe()}")
        preludes = list_collections(client, database, server) if chosen == "native" else []
        prefix = repository.begin("mongodb", system, database, backup_id)
        try:
            written = _Written()
            if chosen == "native":
                archive = _native_archive(client, database, server, preludes, start, written)
            else:
                archive = _tools_archive(conninfo, database, server, written)
            raw, stored = Digest(), Digest()
            chunks = progress.counted("dump", hashed(archive, raw))
            packed = compress(chunks, level=compression_level)
            recipients = repository.encrypt_to
            if recipients:
                packed = crypto.encrypt(packed, recipients)
            name = DATA + crypto.SUFFIX if recipients else DATA
            size = repository.store.put(prefix + name, hashed(packed, stored))
            if size != stored.size:
                raise OperationFailed(f"{prefix}{DATA}: stored {size} bytes, sent {stored.size}")
            per_collection = server.replica_set is None or written.oplog is None
            finished = datetime.now(UTC)
            manifest = Manifest(
                id=backup_id,
                kind=kind,
                engine="mongodb",
                system=system,
                database=database,
                server_version=written.server_version or server.version,
                tool_version=written.tool_version,
                started=started,
                finished=finished,
                consistent_point=(
                    started if per_collection else written.consistent_point or finished
                ),
                consistency="per-collection" if per_collection else "oplog",
                objects=[
                    ObjectEntry(
                        name=name,
                        size=stored.size,
                        sha256=stored.sha256,
                        raw_size=raw.size,
                        format="mongodump archive",
                        encryption=ObjectEncryption(recipients=list(recipients))
                        if recipients
                        else None,
                    )
                ],
                tables=written.counts,
                details=_details(written, chosen, server),
            )
            repository.commit(prefix, manifest)
        except BaseException:
            # What the failure left (storage down?) goes with the next run; the failure is
            # what must surface.
            with contextlib.suppress(Exception):
                repository.abort(prefix)
            raise
    except PyMongoError as exc:
        raise _failed(exc, f"backup of {database} on {conninfo.describe()} failed") from None
    finally:
        if client is not None:
            client.close()
    return manifest
