"""Deciding what a restore does before anything is written (step 1 of a restore)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.son import SON

from dr_runbooks.errors import (
    BadInput,
)
from dr_runbooks.repository import Manifest

from .connection import SYSTEM_DATABASES
from .indexes import IndexPlan, normalize_indexes
from .model import Dump
from .server import SYSTEM_COLLECTION

__all__ = [
    "ORDERED",
    "CollectionPlan",
    "DatabasePlan",
    "RestorePlan",
    "create_options",
    "plan_restore",
    "side_name",
    "source_database",
]


_MAX_DB_NAME = 63
# Options a current server refuses in ``create`` although old dumps carry them.
_DROPPED_CREATE_OPTIONS = ("autoIndexId", "recordIdsReplicated", "flags")
#: Decoding oplog entries keeps their field order (``applyOps`` depends on it).
ORDERED: CodecOptions[Any] = CodecOptions(
    document_class=SON, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


def side_name(database: str, label: str, token: str) -> str:
    """``<db>__<label>_<token>`` as a valid database name (at most 63 bytes, no dots)."""
    clean = re.sub(r'[/\\. "$*<>:|?]', "_", token)
    name = f"{database}__{label}_{clean}"
    while len(name.encode()) > _MAX_DB_NAME:
        name = name[:-1]
    return name


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
            oplog_databases.update(_oplog_database(bson.decode(document, ORDERED)))
        else:
            counts[str(collection.namespace)] += 1
    return counts, oplog_databases, oplog_entries


def create_options(options: Mapping[str, Any]) -> dict[str, Any]:
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
            if collection.special is not None or SYSTEM_COLLECTION.match(name):
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
                    options=create_options(collection.options),
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


def source_database(dump: Dump, database: str, label: str, manifest: Manifest | None) -> str:
    """The database of the dump to restore into ``database``: the backup's own, else the one
    named like the target, else the only user database the dump holds (a legacy dump of a
    renamed database)."""
    if manifest is not None:
        return manifest.database
    names = sorted({c.namespace.db for c in dump.collections} - SYSTEM_DATABASES)
    if database in names or not names:
        return database
    if len(names) == 1:
        return names[0]
    raise BadInput(f"{label} holds databases {', '.join(names)}: say which one to restore")
