"""Replacing the target database with the restored one, collection by collection (step 5)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.son import SON

from dr_runbooks.errors import (
    RestoreFailed,
)
from dr_runbooks.text import first_line

from .indexes import create_indexes_command, normalize_indexes
from .plan import create_options, side_name
from .server import catalog
from .side import BATCH_DOCUMENTS, create_command

__all__ = ["swap_database"]


def _copy_collection(
    client: Any, source: str, target: str, name: str, spec: Mapping[str, Any]
) -> None:
    """Copy a collection that cannot be renamed across databases (time-series)."""
    options = create_options(spec.get("options") or {})
    client[target].command(create_command(name, options))
    data = "system.buckets." + name if spec.get("type") == "timeseries" else name
    for batch in client[source][data].find_raw_batches({}, batch_size=BATCH_DOCUMENTS):
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
        client[target].command(create_command(name, spec.get("options") or {}))
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
        current = catalog(client, database)
        restored = catalog(client, side)
        if not restored:
            raise RestoreFailed(f"{side} holds nothing; refusing to empty {database}")
        if keep_old and current and old in client.list_database_names():
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
            f"the swap of {database} stopped: {first_line(exc)}. Moved to {old}: "
            f"{', '.join(moved_out) or 'nothing'}; moved in from {side}: "
            f"{', '.join(moved_in) or 'nothing'}; the rest is still in {side}"
        ) from None
    return old if keep_old and current else None
