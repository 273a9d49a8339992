"""Filling the side databases ``<db>__restore_<id>`` from a dump (step 2 of a restore)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.son import SON

from dr_runbooks import progress
from dr_runbooks.errors import (
    RestoreFailed,
)
from dr_runbooks.redaction import redact
from dr_runbooks.text import first_line

from .indexes import create_indexes_command
from .model import Dump
from .plan import CollectionPlan, RestorePlan
from .server import drop_quietly

__all__ = ["BATCH_DOCUMENTS", "build_indexes", "create_command", "restore_into_side"]


BATCH_DOCUMENTS = 1000
_BATCH_BYTES = 8 << 20
_BUFFERED_BYTES = 32 << 20


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


def create_command(name: str, options: Mapping[str, Any]) -> SON[str, Any]:
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
        if len(batch) >= BATCH_DOCUMENTS or self._sizes[key] >= _BATCH_BYTES:
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

    existing = set(client.list_database_names())
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
                db.command(create_command(collection.name, collection.options))
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
                db.command(create_command(view.name, view.options))
                created.setdefault(database.side, []).append(view.name)
    except BulkWriteError as exc:
        drop_quietly(client, [d.side for d in plan.databases])
        errors = exc.details.get("writeErrors") or [{}]
        message = redact(str(errors[0].get("errmsg", exc)))
        raise RestoreFailed(f"restoring {plan.location} failed: {message}") from None
    except PyMongoError as exc:
        drop_quietly(client, [d.side for d in plan.databases])
        raise RestoreFailed(f"restoring {plan.location} failed: {first_line(exc)}") from None
    except BaseException:
        drop_quietly(client, [d.side for d in plan.databases])
        raise
    return {
        "databases": {d.side: created.get(d.side, []) for d in plan.databases},
        "documents": {f"{db}.{coll}": n for (db, coll), n in inserter.inserted.items()},
    }
