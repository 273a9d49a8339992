"""The target server: what it looks like (the assess step), its catalog, dropping databases."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from dr_runbooks.errors import (
    DRError,
    OperationFailed,
)
from dr_runbooks.text import first_line

from .connection import ClientFactory, connection_error

__all__ = [
    "SYSTEM_COLLECTION",
    "ServerStatus",
    "assess",
    "catalog",
    "drop_database",
    "drop_leftovers",
    "drop_quietly",
]


#: Server-owned collections: views come from their metadata, buckets with their time-series
#: collection, users/roles are the cluster's (not restored).
SYSTEM_COLLECTION = re.compile(r"^system\.(?!js$)")


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
        count = len(catalog(client, database)) if exists else 0
        return ServerStatus(True, info.version, info.replica_set, exists, count)
    except (PyMongoError, DRError) as exc:
        return ServerStatus(False, error=first_line(exc))
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def catalog(client: Any, database: str) -> dict[str, dict[str, Any]]:
    """The user objects of a database by name: ``{name: listCollections entry}``."""
    return {
        str(spec["name"]): dict(spec)
        for spec in client[database].list_collections()
        if not SYSTEM_COLLECTION.match(str(spec["name"]))
    }


def drop_database(client: Any, name: str) -> None:
    from pymongo.errors import PyMongoError

    try:
        client.drop_database(name)
    except PyMongoError as exc:
        raise _translated(exc, f"cannot drop {name}") from None


def drop_quietly(client: Any, names: list[str]) -> None:
    """Drop side databases after a failure: the failure is what matters; a leftover is
    reported by the next attempt."""
    for name in names:
        with contextlib.suppress(Exception):
            client.drop_database(name)


def drop_leftovers(client: Any, mark: str = "__verify_") -> list[str]:
    """Drop the temporary databases (``<db>__verify_<token>``) a crashed test restore left."""
    from pymongo.errors import PyMongoError

    try:
        leftovers = sorted(name for name in client.list_database_names() if mark in name)
    except PyMongoError as exc:
        raise _translated(exc, "cannot list the databases") from None
    for name in leftovers:
        drop_database(client, name)
    return leftovers


def _translated(exc: BaseException, context: str) -> DRError:
    return connection_error(exc, context) or OperationFailed(f"{context}: {first_line(exc)}")
