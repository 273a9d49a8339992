"""What a MongoDB dump holds, whatever its format.

mongodump writes the same things in every format: per collection a *metadata* document
(collection options, index specs, UUID, type) as Extended JSON, the collection's documents as
raw BSON, and optionally the oplog entries recorded while the dump ran (``--oplog``). The
archive, directory and tar readers all present them as a :class:`Dump`: a list of
:class:`DumpCollection` plus ways to stream raw documents.

Special namespaces, named the way mongo-tools names them:

- the oplog is ``Namespace("", "oplog")`` (``.oplog``), as in the archive format;
- a time-series collection ``X`` keeps its documents (buckets) in ``system.buckets.X``; its
  :attr:`DumpCollection.data_namespace` says where (``X`` itself from server 8.3, which has
  "viewless" time-series collections);
- ``admin.system.users`` / ``admin.system.roles`` (and the ``$admin.system.users`` files of a
  ``--dumpDbUsersAndRoles`` dump) are users and roles: a restore must not insert them as plain
  documents, so they are marked with :attr:`DumpCollection.special`.
"""

from __future__ import annotations

import datetime
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import bson
from bson import json_util
from bson.codec_options import CodecOptions, DatetimeConversion

from dr_runbooks.errors import InvalidArchive

__all__ = [
    "OPLOG_NAMESPACE",
    "TIMESERIES_BUCKETS_PREFIX",
    "CollectionMetadata",
    "Dump",
    "DumpCollection",
    "Namespace",
    "Special",
    "check_timeseries_bucket",
    "parse_metadata",
    "special_kind",
]

TIMESERIES_BUCKETS_PREFIX = "system.buckets."

#: ``users``/``roles``: the auth collections; ``version``: ``admin.system.version`` (the auth
#: schema and feature compatibility version); ``oplog``: the entries of ``mongodump --oplog``.
Special = Literal["users", "roles", "version", "oplog"]


@dataclass(frozen=True, order=True)
class Namespace:
    """A database and collection name; ``str()`` gives ``db.collection``."""

    db: str
    collection: str

    @classmethod
    def parse(cls, text: str) -> Namespace:
        db, dot, collection = text.partition(".")
        if not dot or not collection:
            raise ValueError(f"not a namespace (db.collection): {text!r}")
        return cls(db, collection)

    def __str__(self) -> str:
        return f"{self.db}.{self.collection}"


OPLOG_NAMESPACE = Namespace("", "oplog")


def special_kind(namespace: Namespace) -> Special | None:
    """Whether ``namespace`` needs special handling on restore, and which."""
    if namespace == OPLOG_NAMESPACE:
        return "oplog"
    name = namespace.collection
    # A dump of one database with --dumpDbUsersAndRoles names them $admin.system.users.
    if name in ("system.users", "$admin.system.users"):
        return "users"
    if name in ("system.roles", "$admin.system.roles"):
        return "roles"
    if namespace.db == "admin" and name == "system.version":
        return "version"
    return None


@dataclass(frozen=True)
class CollectionMetadata:
    """A collection's ``metadata.json``: options, index specs, UUID and type.

    ``json`` is the text as found, so it can be written back unchanged.
    """

    options: dict[str, Any]
    indexes: list[dict[str, Any]]
    uuid: str | None
    collection_name: str | None
    type: str
    json: str = field(repr=False)

    @property
    def time_field(self) -> str | None:
        timeseries = self.options.get("timeseries")
        if isinstance(timeseries, Mapping) and isinstance(timeseries.get("timeField"), str):
            return str(timeseries["timeField"])
        return None


def parse_metadata(text: str | bytes, where: str) -> CollectionMetadata | None:
    """Parse a ``metadata.json`` document (canonical or relaxed Extended JSON).

    Empty text means "no metadata", as mongorestore treats an empty file. Anything that is not
    an object with a list of index documents is refused with :class:`InvalidArchive`.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArchive(f"{where}: metadata is not UTF-8: {exc}") from exc
    if not text.strip():
        return None
    try:
        document = json_util.loads(text)
    except (ValueError, TypeError, bson.errors.BSONError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidArchive(f"{where}: invalid metadata JSON: {first_line}") from exc
    if not isinstance(document, dict):
        raise InvalidArchive(f"{where}: metadata is not a JSON object")
    options = document.get("options") or {}
    indexes = document.get("indexes") or []
    if not isinstance(options, dict):
        raise InvalidArchive(f"{where}: metadata 'options' is not an object")
    if not isinstance(indexes, list) or not all(isinstance(i, dict) for i in indexes):
        raise InvalidArchive(f"{where}: metadata 'indexes' is not a list of objects")
    for index in indexes:
        if not isinstance(index.get("key"), dict) or not isinstance(index.get("name"), str):
            raise InvalidArchive(f"{where}: an index spec lacks a 'key' object or a 'name'")
    uuid = document.get("uuid")
    collection_name = document.get("collectionName")
    declared_type = document.get("type")
    if isinstance(declared_type, str) and declared_type:
        kind = declared_type
    elif "viewOn" in options:
        kind = "view"
    elif "timeseries" in options:
        kind = "timeseries"
    else:
        kind = "collection"
    metadata = CollectionMetadata(
        options=options,
        indexes=indexes,
        uuid=uuid if isinstance(uuid, str) and uuid else None,
        collection_name=collection_name if isinstance(collection_name, str) else None,
        type=kind,
        json=text,
    )
    if kind == "timeseries" and metadata.time_field is None:
        raise InvalidArchive(f"{where}: time-series metadata without options.timeseries.timeField")
    return metadata


@dataclass(frozen=True)
class DumpCollection:
    """One collection of a dump (or its oplog), as every dump format describes it."""

    namespace: Namespace
    #: ``collection``, ``view`` or ``timeseries`` (the oplog is a ``collection``).
    type: str
    metadata: CollectionMetadata | None
    #: Where the documents live: ``system.buckets.X`` for a time-series ``X`` before 8.3.
    data_namespace: Namespace
    special: Special | None = None
    #: The uncompressed BSON size when the format records it up front, else None.
    size: int | None = None
    #: Where the data comes from, for messages: a path inside the dump, or the archive.
    location: str = ""

    @property
    def options(self) -> dict[str, Any]:
        return self.metadata.options if self.metadata else {}

    @property
    def indexes(self) -> list[dict[str, Any]]:
        return self.metadata.indexes if self.metadata else []

    @property
    def uuid(self) -> str | None:
        return self.metadata.uuid if self.metadata else None


_BUCKET_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS
)
_NUMBER = (int, float, bson.Int64, bson.Decimal128)


def check_timeseries_bucket(document: bytes, time_field: str, where: str) -> None:
    """Refuse a ``system.buckets`` document the server's bucket validator would reject.

    mongorestore leaves this check to the server, which refuses such buckets one by one even
    with ``bypassDocumentValidation`` (mongo-tools' ``ts_dump_invalid_buckets`` test). We check
    what makes a document a bucket — ``_id`` ObjectId, ``control`` with a numeric ``version``
    and ``min``/``max`` objects holding the time field as a date, a ``data`` object, nothing
    else at the top level but ``meta`` — but not the server's ``additionalProperties: false``
    inside ``control``, so fields a newer server adds there do not make us refuse a good dump.
    """
    try:
        bucket = bson.decode(document, codec_options=_BUCKET_OPTIONS)
    except (bson.errors.BSONError, ValueError, OverflowError) as exc:
        raise InvalidArchive(f"{where}: corrupt time-series bucket: {exc}") from exc

    def refuse(reason: str) -> InvalidArchive:
        return InvalidArchive(f"{where}: not a valid time-series bucket ({reason})")

    extra = set(bucket) - {"_id", "control", "data", "meta"}
    if extra:
        raise refuse(f"unexpected top-level fields {sorted(extra)}")
    if not isinstance(bucket.get("_id"), bson.ObjectId):
        raise refuse("_id is not an ObjectId")
    control = bucket.get("control")
    if not isinstance(control, dict):
        raise refuse("no control object")
    if not isinstance(bucket.get("data"), dict):
        raise refuse("no data object")
    if isinstance(control.get("version"), bool) or not isinstance(control.get("version"), _NUMBER):
        raise refuse("control.version is not a number")
    for bound in ("min", "max"):
        value = control.get(bound)
        if not isinstance(value, dict):
            raise refuse(f"control.{bound} is not an object")
        if not isinstance(value.get(time_field), bson.DatetimeMS | datetime.datetime):
            raise refuse(f"control.{bound}.{time_field} is not a date")
    if "closed" in control and not isinstance(control["closed"], bool):
        raise refuse("control.closed is not a boolean")
    if "count" in control:
        count = control["count"]
        if isinstance(count, bson.Decimal128):
            count = count.to_decimal()
        if isinstance(count, bool) or not isinstance(count, int | float) or count < 1:
            raise refuse("control.count is not a number of at least 1")


class Dump(ABC):
    """A mongodump output opened for reading: its collections and their raw documents.

    Documents are raw BSON ``bytes`` (insert them with ``bson.RawBSONDocument``), streamed one
    at a time; nothing holds a whole collection. Readers check framing always, per-namespace
    CRCs where the format has them (archives) and time-series buckets; ``validate=True`` also
    decodes every document (``bsondump --objcheck``). Problems raise :class:`InvalidArchive`
    when reached, so a consumer may already have seen earlier documents: a restore that
    streams must treat that as a failed restore.
    """

    #: ``archive``, ``archive+gzip``, ``archive+zstd``, ``directory``, ``tar``, ``tar+gzip``...
    kind: str
    location: str
    server_version: str | None
    tool_version: str | None
    collections: tuple[DumpCollection, ...]
    oplog: DumpCollection | None

    def collection(self, namespace: Namespace | str) -> DumpCollection:
        wanted = Namespace.parse(namespace) if isinstance(namespace, str) else namespace
        if self.oplog is not None and wanted == self.oplog.namespace:
            return self.oplog
        for collection in self.collections:
            if collection.namespace == wanted:
                return collection
        raise KeyError(f"{self.location} has no collection {wanted}")

    @abstractmethod
    def iter_documents(self, *, validate: bool = False) -> Iterator[tuple[DumpCollection, bytes]]:
        """Every document of every collection, then of the oplog, in the dump's storage order.

        This is the one pass that works for every source, streams included.
        """

    def documents(self, namespace: Namespace | str, *, validate: bool = False) -> Iterator[bytes]:
        """The documents of one collection (or of the oplog)."""
        wanted = self.collection(namespace)
        for collection, document in self.iter_documents(validate=validate):
            if collection is wanted:
                yield document

    def oplog_entries(self, *, validate: bool = False) -> Iterator[bytes]:
        """The oplog entries of ``mongodump --oplog``; nothing if the dump has none."""
        if self.oplog is None:
            return iter(())
        return self.documents(self.oplog.namespace, validate=validate)

    def count_documents(self, *, validate: bool = False) -> dict[Namespace, int]:
        """Read everything once (checking it) and count documents per namespace."""
        counts = {collection.namespace: 0 for collection in self.collections}
        if self.oplog is not None:
            counts[self.oplog.namespace] = 0
        for collection, _ in self.iter_documents(validate=validate):
            counts[collection.namespace] += 1
        return counts

    def close(self) -> None:  # noqa: B027 - a no-op unless the dump holds open files
        """Release files this dump opened; a stream passed in by the caller stays open."""

    def __enter__(self) -> Dump:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def to_json_value(value: Any) -> Any:
    """A BSON value as plain JSON data (relaxed Extended JSON for the special types)."""
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))
