"""Replaying the oplog a backup captured onto the side databases (step 4 of a restore)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
from bson.son import SON

from dr_runbooks.errors import (
    RestoreFailed,
)
from dr_runbooks.text import first_line

from .indexes import create_indexes_command, normalize_indexes
from .model import Dump
from .plan import ORDERED, RestorePlan
from .side import build_indexes

__all__ = ["replay_oplog"]


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
                replay.handle(bson.decode(raw, ORDERED))
        if metadata_indexes:
            replay.indexes += build_indexes(client, plan)
        replay.build_deferred()
    except PyMongoError as exc:
        raise RestoreFailed(
            f"replaying the oplog failed after {replay.applied} entries: {first_line(exc)}"
        ) from None
    return {
        "applied": replay.applied,
        "indexes": replay.indexes,
        "skipped": replay.skipped,
        # Transactions that had not committed when the backup ended are not part of it.
        "pending_transactions": len(replay._transactions),
    }
