"""Checking the side databases against the plan: counts and index names (step 3)."""

from __future__ import annotations

from typing import Any

from dr_runbooks.text import first_line

from .plan import RestorePlan
from .server import catalog

__all__ = ["verify_restore"]


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
            objects = catalog(client, database.side)
            db = client[database.side]
            for collection in database.collections:
                where = f"{database.source}.{collection.name}"
                if collection.name not in objects:
                    problems.append(f"{where}: missing after the restore")
                    continue
                kind = str(objects[collection.name].get("type") or "collection")
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
        problems.append(f"cannot read the restored data: {first_line(exc)}")
    return {
        "problems": problems,
        "collections": sum(len(d.collections) for d in plan.databases),
        "documents": sum(found.values()),
        "counts": found,
    }
