"""Restoring MongoDB dumps without ever leaving a target half-written.

Any :class:`~dr_runbooks.mongo.Dump` can be restored: our own backups (fetched from the
repository with every checksum verified first, :func:`fetch_backup`) and real mongodump output
(an archive, plain or gzip, a directory dump, the plan's legacy ``backup_*.tar.gz``). The steps,
each a function so a runbook can run and report them one by one:

1. :func:`plan_restore` decides what goes where and refuses bad input *before anything is
   written*: for a dump that carries no manifest, it reads the whole dump once (every CRC,
   every time-series bucket, the framing) and counts its documents; every collection's index
   specs are normalised (an index no server can build is refused).
2. :func:`restore_into_side` creates side databases ``<db>__restore_<id>``: collections with
   their options (``create``: capped, validator, collation, time-series...), documents as raw
   BSON in bounded batches (validation bypassed: they were valid on the source), indexes
   (``createIndexes``, after the data, as mongorestore does), then views in dependency order.
   On any failure the side databases are dropped. When an oplog will be replayed, the indexes
   wait for it: documents read at different moments may break a unique index that the replay
   repairs.
3. :func:`verify_restore`: document counts and index names of every collection against the
   manifest (or the counts read in step 1). Counts are checked before the oplog is replayed,
   because the manifest counts what the archive holds, not what the replay makes of it.
4. :func:`replay_oplog` applies the archive's oplog (``mongodump --oplog``, or ours) to the
   side databases, as ``mongorestore --oplogReplay`` does: one ``applyOps`` per entry, with
   namespaces rewritten to the side database and collection UUIDs (``ui``) removed because
   the restored collections have new ones; no-ops and index-build bookkeeping are skipped;
   ``createIndexes``/``commitIndexBuild`` become ``createIndexes`` commands run after the last
   entry (servers since 4.4 refuse them in ``applyOps``); transactions are buffered until
   their commit and dropped when aborted or unfinished. Entries for any other database are
   never applied: only the side databases can be written.
5. :func:`swap_database` replaces the target. MongoDB cannot rename a database, so the swap
   works collection by collection: each current collection is moved to
   ``<db>__pre_restore_<stamp>`` with ``renameCollection`` (which across databases copies the
   data and indexes, then drops the source), then each restored collection is moved into the
   target the same way, and the views are recreated. Time-series collections cannot be renamed
   across databases, so they are copied bucket by bucket. This is not atomic: during the swap
   the application sees some collections restored and others not yet, which is why the runbook
   asks for the application to be stopped first. If a step fails, the message says where
   everything is.

:func:`verify_backup` is the test restore of the daily verification: fetch, restore into a
temporary database, compare, replay the oplog, drop it (also on failure), report.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from bson.son import SON

from dr_runbooks import progress
from dr_runbooks.errors import (
    BadInput,
    ChecksumMismatch,
    DRError,
    OperationFailed,
    RestoreFailed,
)
from dr_runbooks.repository import Backup, Manifest, Repository
from dr_runbooks.secrets import redact
from dr_runbooks.streams import Digest, hashed, read_chunks

from .backup import DATA
from .connection import SYSTEM_DATABASES, ClientFactory
from .indexes import IndexPlan, create_indexes_command, normalize_indexes
from .model import Dump
from .source import open_dump

__all__ = [
    "CollectionPlan",
    "DatabasePlan",
    "FetchedDump",
    "RestorePlan",
    "ServerStatus",
    "assess",
    "drop_database",
    "drop_leftovers",
    "fetch_backup",
    "open_path",
    "plan_restore",
    "replay_oplog",
    "restore_into_side",
    "side_name",
    "swap_database",
    "verify_backup",
    "verify_restore",
]

_BATCH_DOCUMENTS = 1000
_BATCH_BYTES = 8 << 20
_BUFFERED_BYTES = 32 << 20
_MAX_DB_NAME = 63
# Restoring server-owned collections as data would be wrong: views come from their metadata,
# buckets with their time-series collection, users/roles are the cluster's (not restored).
_SYSTEM_COLLECTION = re.compile(r"^system\.(?!js$)")
# Options a current server refuses in ``create`` although old dumps carry them.
_DROPPED_CREATE_OPTIONS = ("autoIndexId", "recordIdsReplicated", "flags")
_ORDERED: CodecOptions[Any] = CodecOptions(
    document_class=SON, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return redact(text)


def side_name(database: str, label: str, token: str) -> str:
    """``<db>__<label>_<token>`` as a valid database name (at most 63 bytes, no dots)."""
    clean = re.sub(r'[/\\. "$*<>:|?]', "_", token)
    name = f"{database}__{label}_{clean}"
    while len(name.encode()) > _MAX_DB_NAME:
        name = name[:-1]
    return name


# -- getting the dump ---------------------------------------------------------------------------


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

    The archive stays zstd-compressed on disk (``open_dump`` reads it as it is). Raises
    :class:`ChecksumMismatch`, leaving nothing behind, if it differs from the manifest: this
    happens before any server is touched. A legacy ``backup_*.tar.gz`` has no manifest; it is
    checked when :func:`plan_restore` reads it.
    """
    directory = Path(tempfile.mkdtemp(prefix="dr-mongo-restore-", dir=workdir))
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
        with repository.store.open(backup.prefix + DATA) as handle, path.open("wb") as out:
            chunks = progress.counted("download", read_chunks(handle), entry.size)
            for chunk in hashed(chunks, digest):
                out.write(chunk)
        if digest.size != entry.size or digest.sha256 != entry.sha256:
            raise ChecksumMismatch(
                f"backup {manifest.id}: {DATA} is corrupt (size {digest.size}, sha256 "
                f"{digest.sha256[:16]}…; manifest: size {entry.size}, sha256 "
                f"{entry.sha256[:16]}…)"
            )
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


# -- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerStatus:
    """Step 1 of Scenario 1: what the target server looks like right now."""

    reachable: bool
    server_version: str | None = None
    replica_set: str | None = None
    database_exists: bool | None = None
    collections: int | None = None
    error: str | None = None


def assess(client_factory: ClientFactory, database: str) -> ServerStatus:
    """Ask the server who it is and whether ``database`` exists; never raises for a server
    that is down (that is what the status says)."""
    from pymongo.errors import PyMongoError

    from .backup import server_info

    client: Any = None
    try:
        client = client_factory()
        info = server_info(client)
        exists = database in client.list_database_names()
        count = len(_catalog(client, database)) if exists else 0
        return ServerStatus(True, info.version, info.replica_set, exists, count)
    except (PyMongoError, DRError) as exc:
        return ServerStatus(False, error=_first_line(exc))
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionPlan:
    """One collection, view or time-series collection to restore."""

    name: str
    type: str
    options: dict[str, Any]
    indexes: IndexPlan
    #: Where the documents go: ``system.buckets.X`` for a time-series ``X``.
    data_name: str
    expected_documents: int | None

    @property
    def expected_indexes(self) -> list[str]:
        return sorted(self.indexes.names)


@dataclass(frozen=True)
class DatabasePlan:
    """One database of the dump, restored into ``side`` and then swapped into ``target``."""

    source: str
    target: str
    side: str
    collections: tuple[CollectionPlan, ...]

    def collection(self, name: str) -> CollectionPlan:
        for plan in self.collections:
            if plan.name == name:
                return plan
        raise KeyError(name)


@dataclass(frozen=True)
class RestorePlan:
    """What a restore will do, decided before anything is written."""

    location: str
    databases: tuple[DatabasePlan, ...]
    #: Namespaces of the dump that are not restored, with the reason.
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    oplog_entries: int | None = None

    @property
    def sides(self) -> dict[str, str]:
        return {plan.source: plan.side for plan in self.databases}

    def database(self, source: str) -> DatabasePlan:
        for plan in self.databases:
            if plan.source == source:
                return plan
        raise KeyError(source)

    def summary(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "databases": [
                {
                    "source": p.source,
                    "target": p.target,
                    "side": p.side,
                    "collections": {
                        c.name: {
                            "type": c.type,
                            "documents": c.expected_documents,
                            "indexes": c.expected_indexes,
                        }
                        for c in p.collections
                    },
                }
                for p in self.databases
            ],
            "skipped": list(self.skipped),
            "notes": list(self.notes),
            "oplog_entries": self.oplog_entries,
        }


def _oplog_database(entry: Mapping[str, Any]) -> Iterator[str]:
    namespace = entry.get("ns")
    if isinstance(namespace, str) and "." in namespace:
        database = namespace.split(".", 1)[0]
        if database != "admin":
            yield database
    inner = entry.get("o")
    if isinstance(inner, Mapping) and isinstance(inner.get("applyOps"), list):
        for nested in inner["applyOps"]:
            if isinstance(nested, Mapping):
                yield from _oplog_database(nested)


def _scan(dump: Dump) -> tuple[dict[str, int], set[str], int | None]:
    """Read the whole dump once: documents per namespace, the databases its oplog touches."""
    counts: dict[str, int] = {str(c.namespace): 0 for c in dump.collections}
    oplog_databases: set[str] = set()
    oplog_entries = 0 if dump.oplog is not None else None
    for collection, document in dump.iter_documents():
        if collection.special == "oplog":
            oplog_entries = (oplog_entries or 0) + 1
            oplog_databases.update(_oplog_database(bson.decode(document, _ORDERED)))
        else:
            counts[str(collection.namespace)] += 1
    return counts, oplog_databases, oplog_entries


def _create_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in _DROPPED_CREATE_OPTIONS}


def plan_restore(
    dump: Dump,
    token: str,
    databases: Mapping[str, str] | None = None,
    manifest: Manifest | None = None,
    label: str = "restore",
) -> RestorePlan:
    """Decide what to restore where, refusing a damaged dump before anything is written.

    ``databases`` maps the dump's database names to the targets they replace (default: every
    database of the dump or its oplog but admin, local and config, each onto itself). Without a
    ``manifest`` the dump is read in full once (checks and counts); with one (our own backups,
    whose checksum was verified) its ``tables`` are the expected counts.
    """
    if manifest is not None:
        counts = dict(manifest.tables)
        oplog_databases = {manifest.database}
        oplog_entries = (manifest.details.get("oplog") or {}).get("entries")
    else:
        counts, oplog_databases, oplog_entries = _scan(dump)
    present = {c.namespace.db for c in dump.collections} | oplog_databases
    user_databases = sorted(present - SYSTEM_DATABASES)
    if databases is None:
        selection = {name: name for name in user_databases}
    else:
        selection = dict(databases)
        for source, target in selection.items():
            if source not in present:
                known = ", ".join(user_databases) or "none"
                raise BadInput(f"{dump.location} holds no database {source!r} (it holds: {known})")
            if target in SYSTEM_DATABASES or source in SYSTEM_DATABASES:
                raise BadInput(f"{source} → {target}: system databases are not restored")
    if not selection:
        held = ", ".join(sorted(present)) or "nothing"
        raise BadInput(f"{dump.location} holds no user database to restore (only {held})")
    skipped: list[str] = []
    notes: list[str] = []
    plans = []
    for source, target in sorted(selection.items()):
        collections = []
        for collection in dump.collections:
            if collection.namespace.db != source:
                continue
            name = collection.namespace.collection
            if collection.special is not None or _SYSTEM_COLLECTION.match(name):
                skipped.append(f"{collection.namespace} ({collection.special or 'system'})")
                continue
            index_plan = normalize_indexes(collection.indexes, namespace=str(collection.namespace))
            notes.extend(index_plan.notes)
            expected = counts.get(str(collection.namespace))
            if collection.type == "view":
                expected = None
            collections.append(
                CollectionPlan(
                    name=name,
                    type=collection.type,
                    options=_create_options(collection.options),
                    indexes=index_plan,
                    data_name=collection.data_namespace.collection,
                    expected_documents=expected,
                )
            )
        plans.append(
            DatabasePlan(
                source=source,
                target=target,
                side=side_name(target, label, token),
                collections=tuple(collections),
            )
        )
    for collection in dump.collections:
        if collection.namespace.db not in selection and collection.special is None:
            skipped.append(f"{collection.namespace} (database not selected)")
    return RestorePlan(
        location=dump.location,
        databases=tuple(plans),
        skipped=tuple(skipped),
        notes=tuple(notes),
        oplog_entries=oplog_entries,
    )


# -- restore into side databases ----------------------------------------------------------------


def _views_in_order(views: list[CollectionPlan]) -> list[CollectionPlan]:
    """Views after the views they are defined on (a view may be on another view)."""
    pending = {view.name: view for view in views}
    ordered: list[CollectionPlan] = []
    while pending:
        ready = [v for v in pending.values() if v.options.get("viewOn") not in pending]
        if not ready:  # a cycle cannot exist on a server; create the rest as they are
            ready = list(pending.values())
        for view in sorted(ready, key=lambda v: v.name):
            ordered.append(view)
            del pending[view.name]
    return ordered


def _create_command(name: str, options: Mapping[str, Any]) -> SON[str, Any]:
    return SON([("create", name), *options.items()])


class _Inserter:
    """Raw documents into collections, in batches bounded by count and bytes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._batches: dict[tuple[str, str], list[RawBSONDocument]] = {}
        self._sizes: dict[tuple[str, str], int] = {}
        self._buffered = 0
        self.inserted: dict[tuple[str, str], int] = {}

    def add(self, database: str, collection: str, document: bytes) -> None:
        key = (database, collection)
        batch = self._batches.setdefault(key, [])
        batch.append(RawBSONDocument(document))
        self._sizes[key] = self._sizes.get(key, 0) + len(document)
        self._buffered += len(document)
        if len(batch) >= _BATCH_DOCUMENTS or self._sizes[key] >= _BATCH_BYTES:
            self._flush(key)
        elif self._buffered >= _BUFFERED_BYTES:
            self.flush_all()

    def _flush(self, key: tuple[str, str]) -> None:
        batch = self._batches.pop(key, [])
        self._buffered -= self._sizes.pop(key, 0)
        if not batch:
            return
        database, collection = key
        # Documents are restored as they were, even those an older validator accepted.
        self._client[database][collection].insert_many(
            batch, ordered=True, bypass_document_validation=True
        )
        self.inserted[key] = self.inserted.get(key, 0) + len(batch)

    def flush_all(self) -> None:
        for key in list(self._batches):
            self._flush(key)


def _existing_databases(client: Any) -> set[str]:
    return set(client.list_database_names())


def build_indexes(client: Any, plan: RestorePlan) -> int:
    """Create the indexes the dump's metadata lists; return how many."""
    built = 0
    for database in plan.databases:
        for collection in database.collections:
            if collection.type != "view" and collection.indexes.indexes:
                client[database.side].command(
                    create_indexes_command(collection.name, collection.indexes)
                )
                built += len(collection.indexes.indexes)
    return built


def restore_into_side(
    client: Any, dump: Dump, plan: RestorePlan, *, indexes: bool = True
) -> dict[str, Any]:
    """Create the side databases of ``plan`` and fill them from ``dump`` (see the module
    docstring, step 2). The side databases must not exist; on failure they are dropped.

    ``indexes=False`` leaves the indexes to :func:`replay_oplog`: documents read at different
    moments of a backup may break a unique index that the oplog's replay then repairs (one
    document deleted before another took its key), so mongorestore builds them after the
    replay, and so do we.
    """
    from pymongo.errors import BulkWriteError, PyMongoError

    existing = _existing_databases(client)
    for database in plan.databases:
        if database.side in existing:
            raise RestoreFailed(
                f"database {database.side} already exists (a previous attempt?); drop it or "
                "restore under another id"
            )
    routes: dict[tuple[str, str], tuple[str, str]] = {}
    created: dict[str, list[str]] = {}
    try:
        for database in plan.databases:
            db = client[database.side]
            for collection in database.collections:
                if collection.type == "view":
                    continue
                db.command(_create_command(collection.name, collection.options))
                routes[(database.source, collection.data_name)] = (
                    database.side,
                    collection.data_name,
                )
                created.setdefault(database.side, []).append(collection.name)
        inserter = _Inserter(client)
        progress.start("restore")
        for source, document in dump.iter_documents():
            route = routes.get((source.namespace.db, source.data_namespace.collection))
            if route is None or source.special is not None:
                continue
            inserter.add(route[0], route[1], document)
            progress.advance("restore", len(document))
        inserter.flush_all()
        if indexes:
            build_indexes(client, plan)
        for database in plan.databases:
            db = client[database.side]
            views = [c for c in database.collections if c.type == "view"]
            for view in _views_in_order(views):
                db.command(_create_command(view.name, view.options))
                created.setdefault(database.side, []).append(view.name)
    except BulkWriteError as exc:
        _drop_quietly(client, [d.side for d in plan.databases])
        errors = exc.details.get("writeErrors") or [{}]
        message = redact(str(errors[0].get("errmsg", exc)))
        raise RestoreFailed(f"restoring {plan.location} failed: {message}") from None
    except PyMongoError as exc:
        _drop_quietly(client, [d.side for d in plan.databases])
        raise RestoreFailed(f"restoring {plan.location} failed: {_first_line(exc)}") from None
    except BaseException:
        _drop_quietly(client, [d.side for d in plan.databases])
        raise
    return {
        "databases": {d.side: created.get(d.side, []) for d in plan.databases},
        "documents": {f"{db}.{coll}": n for (db, coll), n in inserter.inserted.items()},
    }


def _drop_quietly(client: Any, names: list[str]) -> None:
    # The original failure is what matters; a leftover is reported by the next attempt.
    for name in names:
        with contextlib.suppress(Exception):
            client.drop_database(name)


def drop_database(client: Any, name: str) -> None:
    client.drop_database(name)


def drop_leftovers(client: Any, mark: str = "__verify_") -> list[str]:
    """Drop the temporary databases (``<db>__verify_<token>``) a crashed test restore left."""
    leftovers = sorted(name for name in client.list_database_names() if mark in name)
    for name in leftovers:
        client.drop_database(name)
    return leftovers


# -- verification ---------------------------------------------------------------------------------


def _catalog(client: Any, database: str) -> dict[str, dict[str, Any]]:
    """The user objects of a database by name: ``{name: listCollections entry}``."""
    return {
        str(spec["name"]): dict(spec)
        for spec in client[database].list_collections()
        if not _SYSTEM_COLLECTION.match(str(spec["name"]))
    }


def verify_restore(
    client: Any, plan: RestorePlan, *, counts: bool = True, indexes: bool = True
) -> dict[str, Any]:
    """Counts and index names of every restored collection against the plan's expectations
    (``counts``/``indexes`` false: not those; counts before an oplog replay, indexes after).

    Returns ``{"problems": [...], "collections": n, "documents": n, "counts": {...}}``; an
    empty problem list means the side databases hold what the dump holds.
    """
    from pymongo.errors import PyMongoError

    problems: list[str] = []
    found: dict[str, int] = {}
    try:
        for database in plan.databases:
            catalog = _catalog(client, database.side)
            db = client[database.side]
            for collection in database.collections:
                where = f"{database.source}.{collection.name}"
                if collection.name not in catalog:
                    problems.append(f"{where}: missing after the restore")
                    continue
                kind = str(catalog[collection.name].get("type") or "collection")
                if kind != collection.type:
                    problems.append(
                        f"{where}: restored as a {kind}, the dump has a {collection.type}"
                    )
                if collection.type == "view":
                    continue
                actual = int(db[collection.data_name].count_documents({}))
                found[where] = actual
                if (
                    counts
                    and collection.expected_documents is not None
                    and actual != collection.expected_documents
                ):
                    problems.append(
                        f"{where}: {actual} documents restored, "
                        f"{collection.expected_documents} expected"
                    )
                if not indexes:
                    continue
                names = {str(i.get("name")) for i in db[collection.name].list_indexes()}
                missing = [n for n in collection.expected_indexes if n not in names]
                if missing:
                    problems.append(f"{where}: indexes missing: {', '.join(missing)}")
    except PyMongoError as exc:
        problems.append(f"cannot read the restored data: {_first_line(exc)}")
    return {
        "problems": problems,
        "collections": sum(len(d.collections) for d in plan.databases),
        "documents": sum(found.values()),
        "counts": found,
    }


# -- oplog replay ---------------------------------------------------------------------------------

# As mongorestore: no-ops and the bookkeeping of replicated record ids are not replayed; index
# builds are replayed from their commit, not their start.
_IGNORED_OPS = frozenset({"n", "cd", "ci", "cu", "km"})
_IGNORED_COMMANDS = frozenset(
    {"startIndexBuild", "abortIndexBuild", "setMultikeyMetadata", "dbCheck"}
)
_APPLIED_COMMANDS = frozenset(
    {
        "create",
        "drop",
        "dropDatabase",
        "collMod",
        "convertToCapped",
        "emptycapped",
        "dropIndexes",
        "deleteIndexes",
        "dropIndex",
        "deleteIndex",
        "renameCollection",
    }
)
_ENTRY_FIELDS = ("ts", "t", "h", "v", "op", "ns", "o", "o2", "b")


class _OplogReplay:
    def __init__(self, client: Any, sides: Mapping[str, str]) -> None:
        self._client = client
        self._sides = dict(sides)
        self._transactions: dict[bytes, list[Mapping[str, Any]]] = {}
        # Index builds wait for the end of the replay, as the metadata's do (see
        # restore_into_side): per (side database, collection), the specs in oplog order.
        self.deferred: dict[tuple[str, str], list[Any]] = {}
        self.applied = 0
        self.indexes = 0
        self.skipped: dict[str, int] = {}

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _side_namespace(self, namespace: str) -> str | None:
        database, dot, rest = namespace.partition(".")
        side = self._sides.get(database)
        return f"{side}{dot}{rest}" if side is not None else None

    def handle(self, entry: Mapping[str, Any]) -> None:
        op = entry.get("op")
        if op in _IGNORED_OPS:
            self._skip("no-op")
            return
        body = entry.get("o")
        command = next(iter(body), None) if op == "c" and isinstance(body, Mapping) else None
        if command in _IGNORED_COMMANDS:
            self._skip(str(command))
            return
        if (
            op == "c"
            and "lsid" in entry
            and "txnNumber" in entry
            and command in ("applyOps", "commitTransaction", "abortTransaction")
        ):
            self._transaction(entry, str(command))
            return
        if op == "c" and command == "applyOps":
            assert isinstance(body, Mapping)
            for nested in body.get("applyOps") or []:
                self.handle(nested)
            return
        self._apply(entry, command)

    def _transaction(self, entry: Mapping[str, Any], command: str) -> None:
        key = bson.encode({"lsid": entry["lsid"], "txnNumber": entry["txnNumber"]})
        body = entry["o"]
        if command == "abortTransaction":
            self._transactions.pop(key, None)
            self._skip("aborted transaction")
            return
        buffered = self._transactions.setdefault(key, [])
        if command == "applyOps":
            buffered.extend(body.get("applyOps") or [])
            if body.get("partialTxn") or body.get("prepare"):
                return  # applied at its commit; dropped if the oplog ends first
        for nested in self._transactions.pop(key, []):
            self.handle(nested)

    def _apply(self, entry: Mapping[str, Any], command: str | None) -> None:
        namespace = str(entry.get("ns", ""))
        database = namespace.partition(".")[0]
        if database not in self._sides:
            self._skip(f"other database ({database or 'none'})")
            return
        body = entry.get("o") or {}
        side = self._sides[database]
        if entry.get("op") == "i" and namespace.endswith(".system.indexes"):
            target = str(body.get("ns", "")).partition(".")[2]
            spec = {k: v for k, v in body.items() if k != "ns"}
            self.deferred.setdefault((side, target), []).append(spec)
            return
        if command in ("createIndexes", "commitIndexBuild"):
            collection = str(body[command])
            if command == "createIndexes":
                specs = [SON((k, v) for k, v in body.items() if k != "createIndexes")]
            else:
                specs = list(body.get("indexes") or [])
            self.deferred.setdefault((side, collection), []).extend(specs)
            return
        if command in ("dropIndexes", "deleteIndexes", "dropIndex", "deleteIndex") and (
            self._drop_deferred(side, str(body[command]), body.get("index"))
        ):
            self._skip("index dropped before it was built")
            return
        if command == "drop":
            self.deferred.pop((side, str(body["drop"])), None)
        if command == "dropDatabase":
            for pending in [k for k in self.deferred if k[0] == side]:
                del self.deferred[pending]
        if command is not None and command not in _APPLIED_COMMANDS:
            raise RestoreFailed(
                f"the oplog holds a {command!r} command at {entry.get('ts')}, which cannot be "
                "replayed; restore without the oplog"
            )
        rewritten: SON[str, Any] = SON((k, entry[k]) for k in _ENTRY_FIELDS if k in entry)
        rewritten["ns"] = self._side_namespace(namespace)
        if command == "renameCollection":
            body = SON(body)
            for key in ("renameCollection", "to"):
                moved = self._side_namespace(str(body.get(key, "")))
                if moved is None:
                    raise RestoreFailed(
                        f"the oplog renames {body.get('renameCollection')} to {body.get('to')}, "
                        "across the databases being restored; restore without the oplog"
                    )
                body[key] = moved
            body.pop("dropSource", None)
            rewritten["o"] = body
            before, after = (str(body[k]).partition(".") for k in ("renameCollection", "to"))
            if (before[0], before[2]) in self.deferred:
                self.deferred[(after[0], after[2])] = self.deferred.pop((before[0], before[2]))
        elif command in ("collMod", "create"):
            body = SON(body)
            for key in ("noPadding", "usePowerOf2Sizes", "recordIdsReplicated"):
                body.pop(key, None)
            rewritten["o"] = body
        self._client.admin.command(
            SON([("applyOps", [rewritten]), ("bypassDocumentValidation", True)])
        )
        self.applied += 1

    def _drop_deferred(self, side: str, collection: str, index: Any) -> bool:
        """Forget deferred builds an oplog ``dropIndexes`` removes; True if that was all of it
        (the server never saw those indexes, so the drop must not reach it)."""
        specs = self.deferred.get((side, collection), [])
        names = [index] if isinstance(index, str) else index if isinstance(index, list) else None
        if names is None or not specs:
            return False
        if names == ["*"]:
            del self.deferred[(side, collection)]
            return False  # the metadata's indexes may exist already: drop them too
        remaining = [s for s in specs if s.get("name") not in names]
        self.deferred[(side, collection)] = remaining
        return len(specs) - len(remaining) == len(names)

    def build_deferred(self) -> None:
        for (side, collection), specs in self.deferred.items():
            plan = normalize_indexes(specs, namespace=f"{side}.{collection}")
            if plan.indexes:
                self._client[side].command(create_indexes_command(collection, plan))
                self.indexes += len(plan.indexes)
        self.deferred = {}


def replay_oplog(
    client: Any, dump: Dump, plan: RestorePlan, *, metadata_indexes: bool = False
) -> dict[str, Any]:
    """Apply the dump's oplog to the side databases of ``plan`` (module docstring, step 4),
    then build the indexes the oplog created and, with ``metadata_indexes``, those of the
    metadata that :func:`restore_into_side` left for after the replay.

    Returns ``{"applied": n, "indexes": n, "skipped": {reason: n}, "pending_transactions": n}``;
    a dump without an oplog applies nothing.
    """
    from pymongo.errors import PyMongoError

    replay = _OplogReplay(client, plan.sides)
    try:
        if dump.oplog is not None:
            for raw in dump.oplog_entries():
                replay.handle(bson.decode(raw, _ORDERED))
        if metadata_indexes:
            replay.indexes += build_indexes(client, plan)
        replay.build_deferred()
    except PyMongoError as exc:
        raise RestoreFailed(
            f"replaying the oplog failed after {replay.applied} entries: {_first_line(exc)}"
        ) from None
    return {
        "applied": replay.applied,
        "indexes": replay.indexes,
        "skipped": replay.skipped,
        # Transactions that had not committed when the backup ended are not part of it.
        "pending_transactions": len(replay._transactions),
    }


# -- the swap -------------------------------------------------------------------------------------


def _copy_collection(
    client: Any, source: str, target: str, name: str, spec: Mapping[str, Any]
) -> None:
    """Copy a collection that cannot be renamed across databases (time-series)."""
    options = _create_options(spec.get("options") or {})
    client[target].command(_create_command(name, options))
    data = "system.buckets." + name if spec.get("type") == "timeseries" else name
    for batch in client[source][data].find_raw_batches({}, batch_size=_BATCH_DOCUMENTS):
        documents = [RawBSONDocument(bytes(d)) for d in _documents_of(batch)]
        if documents:
            client[target][data].insert_many(
                documents, ordered=True, bypass_document_validation=True
            )
    indexes = [i for i in client[source][name].list_indexes() if i.get("name") != "_id_"]
    plan = normalize_indexes(indexes, namespace=f"{source}.{name}")
    if plan.indexes:
        client[target].command(create_indexes_command(name, plan))
    client[source].drop_collection(name)


def _documents_of(batch: bytes) -> Iterator[memoryview]:
    view = memoryview(batch)
    position = 0
    while position < len(view):
        size = int.from_bytes(view[position : position + 4], "little")
        yield view[position : position + size]
        position += size


def _move(
    client: Any, source: str, target: str, name: str, spec: Mapping[str, Any], replace: bool
) -> None:
    kind = spec.get("type") or "collection"
    if kind == "view":
        if replace:
            client[target].drop_collection(name)
        client[target].command(_create_command(name, spec.get("options") or {}))
        client[source].drop_collection(name)
    elif kind == "timeseries":
        if replace:
            client[target].drop_collection(name)
        _copy_collection(client, source, target, name, spec)
    else:
        client.admin.command(
            SON(
                [
                    ("renameCollection", f"{source}.{name}"),
                    ("to", f"{target}.{name}"),
                    ("dropTarget", replace),
                ]
            )
        )


def _objects_in_order(catalog: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Collections first, then views in dependency order, so every view finds its source."""
    plain = sorted(n for n, s in catalog.items() if s.get("type") != "view")
    views = {n: s for n, s in catalog.items() if s.get("type") == "view"}
    ordered: list[str] = []
    while views:
        ready = sorted(
            n for n, s in views.items() if (s.get("options") or {}).get("viewOn") not in views
        ) or sorted(views)
        for name in ready:
            ordered.append(name)
            del views[name]
    return plain + ordered


def swap_database(
    client: Any, database: str, side: str, stamp: str, keep_old: bool = True
) -> str | None:
    """Replace the collections of ``database`` by those of ``side`` (module docstring, step 5).

    Returns the database that keeps the previous collections (``<db>__pre_restore_<stamp>``),
    or None when there were none or ``keep_old`` is false (then they are dropped). The side
    database is dropped at the end.
    """
    from pymongo.errors import PyMongoError

    old = side_name(database, "pre_restore", stamp)
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        current = _catalog(client, database)
        restored = _catalog(client, side)
        if not restored:
            raise RestoreFailed(f"{side} holds nothing; refusing to empty {database}")
        if keep_old and current and old in _existing_databases(client):
            raise RestoreFailed(f"{old} already exists; refusing to mix two old copies")
        # Views go first (they would outlive their collections), in reverse dependency order.
        for name in reversed(_objects_in_order(current)):
            if keep_old:
                _move(client, database, old, name, current[name], replace=False)
                moved_out.append(name)
            elif name not in restored or current[name].get("type") != "collection":
                client[database].drop_collection(name)
        for name in _objects_in_order(restored):
            _move(client, side, database, name, restored[name], replace=not keep_old)
            moved_in.append(name)
        client.drop_database(side)
    except PyMongoError as exc:
        raise RestoreFailed(
            f"the swap of {database} stopped: {_first_line(exc)}. Moved to {old}: "
            f"{', '.join(moved_out) or 'nothing'}; moved in from {side}: "
            f"{', '.join(moved_in) or 'nothing'}; the rest is still in {side}"
        ) from None
    return old if keep_old and current else None


# -- the daily test restore ---------------------------------------------------------------------


def verify_backup(
    client_factory: ClientFactory,
    repository: Repository,
    backup: Backup,
    *,
    workdir: Path | None = None,
    replay: bool = True,
) -> dict[str, Any]:
    """Test-restore one MongoDB backup and compare it with its manifest; never raises for a
    bad backup.

    Verifies the checksums, restores into a temporary database ``<db>__verify_<token>`` on the
    server ``client_factory`` connects to, compares every collection's document count and
    index names with the manifest (for a legacy backup: with the dump itself), replays the
    oplog when there is one, and drops the temporary database, also on failure. Returns::

        {"outcome": "ok" | "failed", "problems": [...], "collections": n, "documents": n,
         "backup_id", "engine": "mongodb", "database", "oplog": {...} | None, "seconds"}

    Only a server that cannot be reached at all raises (:class:`OperationFailed`): that says
    nothing about the backup.
    """
    from pymongo.errors import ConnectionFailure

    begun = time.monotonic()
    result: dict[str, Any] = {
        "backup_id": backup.id,
        "engine": "mongodb",
        "database": backup.database,
        "outcome": "failed",
        "problems": [],
        "collections": 0,
        "documents": 0,
        "oplog": None,
        "checked_at": datetime.now(UTC).isoformat(),
    }
    fetched: FetchedDump | None = None
    client: Any = None
    plan: RestorePlan | None = None
    try:
        fetched = fetch_backup(repository, backup, workdir)
        with fetched.open() as dump:
            selection = {backup.database: backup.database} if backup.manifest else None
            plan = plan_restore(
                dump,
                secrets.token_hex(3),
                selection,
                manifest=backup.manifest,
                label="verify",
            )
            client = client_factory()
            deferred = replay and dump.oplog is not None
            restore_into_side(client, dump, plan, indexes=not deferred)
            checked = verify_restore(client, plan, indexes=not deferred)
            result["problems"].extend(checked["problems"])
            result["collections"] = checked["collections"]
            result["documents"] = checked["documents"]
            if deferred and not checked["problems"]:
                result["oplog"] = replay_oplog(client, dump, plan, metadata_indexes=True)
                result["problems"].extend(verify_restore(client, plan, counts=False)["problems"])
    except ConnectionFailure as exc:
        raise OperationFailed(
            f"cannot reach the server for the test restore: {_first_line(exc)}"
        ) from None
    except DRError as exc:
        result["problems"].append(_first_line(exc))
    finally:
        if client is not None:
            if plan is not None:
                _drop_quietly(client, [d.side for d in plan.databases])
            with contextlib.suppress(Exception):
                client.close()
        if fetched is not None:
            fetched.cleanup()
    result["outcome"] = "ok" if not result["problems"] else "failed"
    result["seconds"] = round(time.monotonic() - begun, 3)
    return result
