"""A MongoDB server for tests, behind the one seam our code talks through: the client factory.

Documents live in mongomock (inserts, counts, duplicate keys and unique indexes are its own).
What mongomock lacks — ``listCollections`` with options and UUIDs, raw batches, the commands
(``hello``, ``create`` with options, ``createIndexes`` with every index option,
``renameCollection`` across databases, ``applyOps``) and an oplog it can compare timestamps
in — this server adds, and it records every command and every oplog read in :attr:`calls`, so
tests assert the exact commands our code sends. Each test builds its own server.
"""

from __future__ import annotations

import itertools
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
import mongomock
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure


@dataclass
class Call:
    """One thing our code asked the server: a command, or a read of the oplog."""

    database: str
    kind: str  # "command", "listCollections", "find" or "find_raw_batches" (of the oplog)
    body: Any


@dataclass
class _Entry:
    type: str = "collection"
    options: dict[str, Any] = field(default_factory=dict)
    uuid: bson.Binary = field(
        default_factory=lambda: bson.Binary(uuidlib.uuid4().bytes, bson.binary.UUID_SUBTYPE)
    )
    indexes: list[dict[str, Any]] = field(default_factory=list)


def _ts_key(value: Any) -> tuple[int, int]:
    return (value.time, value.inc) if isinstance(value, bson.Timestamp) else (-1, -1)


class FakeServer:
    """One fake server: ``replica_set`` makes it answer ``hello`` with a set name and keep an
    oplog (:attr:`oplog`, entries as dicts, which tests append to)."""

    def __init__(self, *, replica_set: str | None = None, version: str = "7.0.14") -> None:
        self.mock = mongomock.MongoClient()
        self.replica_set = replica_set
        self.version = version
        self.calls: list[Call] = []
        self.catalog: dict[tuple[str, str], _Entry] = {}
        self.oplog: list[dict[str, Any]] = []
        self.clients_opened = 0
        self.clients_closed = 0
        #: Raised by every command while set (a server that refuses us).
        self.refuse: Exception | None = None
        #: Called with the collection name before each raw-batch read (to simulate writes).
        self.before_read: Callable[[str, str], None] | None = None
        self._clock = itertools.count(1)

    def client(self) -> FakeClient:
        self.clients_opened += 1
        return FakeClient(self)

    # -- helpers for tests ----------------------------------------------------------------------

    def commands(self, name: str | None = None) -> list[tuple[str, Any]]:
        """``(database, command)`` for every command our code sent (``name``: only those)."""
        return [
            (c.database, c.body)
            for c in self.calls
            if c.kind == "command" and (name is None or next(iter(c.body)) == name)
        ]

    def log(self, op: str, ns: str, o: Mapping[str, Any], **extra: Any) -> bson.Timestamp:
        """Append an oplog entry (what a write on a replica set would log)."""
        ts = bson.Timestamp(1_700_000_000, next(self._clock))
        self.oplog.append({"ts": ts, "t": 1, "v": 2, "op": op, "ns": ns, "o": dict(o), **extra})
        return ts

    def entry(self, database: str, name: str) -> _Entry:
        key = (database, name)
        if key not in self.catalog:
            self.catalog[key] = _Entry()
        return self.catalog[key]

    def exists(self, database: str, name: str) -> bool:
        return (database, name) in self.catalog or name in self.mock[
            database
        ].list_collection_names()

    def collections(self, database: str) -> list[str]:
        names = {n for (d, n) in self.catalog if d == database}
        names |= set(self.mock[database].list_collection_names())
        return sorted(names)


class FakeClient:
    """What pymongo's ``MongoClient`` offers our code, over a :class:`FakeServer`."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.closed = False

    def __getitem__(self, name: str) -> FakeDatabase:
        return FakeDatabase(self.server, name)

    def __getattr__(self, name: str) -> FakeDatabase:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def list_database_names(self) -> list[str]:
        names = {d for (d, _) in self.server.catalog}
        names |= set(self.server.mock.list_database_names())
        if self.server.replica_set:
            names.add("local")
        return sorted(n for n in names if self.server.collections(n) or n == "local")

    def drop_database(self, name: str) -> None:
        self.server.calls.append(Call(name, "command", SON([("dropDatabase", 1)])))
        for key in [k for k in self.server.catalog if k[0] == name]:
            del self.server.catalog[key]
        self.server.mock.drop_database(name)

    def close(self) -> None:
        self.closed = True
        self.server.clients_closed += 1


class FakeDatabase:
    def __init__(self, server: FakeServer, name: str) -> None:
        self.server = server
        self.name = name

    def __getitem__(self, name: str) -> FakeCollection:
        return FakeCollection(self.server, self.name, name)

    def __getattr__(self, name: str) -> FakeCollection:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def list_collections(self) -> Iterator[dict[str, Any]]:
        self.server.calls.append(Call(self.name, "listCollections", None))
        for name in self.server.collections(self.name):
            entry = self.server.entry(self.name, name)
            yield {
                "name": name,
                "type": entry.type,
                "options": dict(entry.options),
                "info": {"readOnly": False, "uuid": entry.uuid},
            }

    def list_collection_names(self) -> list[str]:
        return self.server.collections(self.name)

    def drop_collection(self, name: str) -> None:
        self.server.calls.append(Call(self.name, "command", SON([("drop", name)])))
        self.server.catalog.pop((self.name, name), None)
        self.server.mock[self.name].drop_collection(name)

    def command(self, command: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(command, str):
            command = SON([(command, 1), *kwargs.items()])
        name = next(iter(command))
        self.server.calls.append(Call(self.name, "command", command))
        if self.server.refuse is not None:
            raise self.server.refuse
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is None:
            raise OperationFailure(f"no such command: '{name}'", code=59)
        result: dict[str, Any] = handler(command)
        return {"ok": 1.0, **result}

    # -- commands ---------------------------------------------------------------------------------

    def _cmd_hello(self, command: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {"isWritablePrimary": True, "maxWireVersion": 21}
        if self.server.replica_set:
            answer["setName"] = self.server.replica_set
        return answer

    def _cmd_buildInfo(self, command: Mapping[str, Any]) -> dict[str, Any]:
        return {"version": self.server.version}

    def _cmd_create(self, command: Mapping[str, Any]) -> dict[str, Any]:
        name = command["create"]
        if self.server.exists(self.name, name):
            raise OperationFailure(f"Collection {self.name}.{name} already exists.", code=48)
        options = {k: v for k, v in command.items() if k != "create"}
        entry = self.server.entry(self.name, name)
        entry.options = options
        if "viewOn" in options:
            entry.type = "view"
        elif "timeseries" in options:
            entry.type = "timeseries"
            self.server.entry(self.name, "system.buckets." + name)
            self.server.mock[self.name].create_collection("system.buckets." + name)
        if entry.type != "view":
            self.server.mock[self.name].create_collection(name)
        return {}

    def _cmd_createIndexes(self, command: Mapping[str, Any]) -> dict[str, Any]:
        name = command["createIndexes"]
        if not self.server.exists(self.name, name):
            self._cmd_create({"create": name})
        entry = self.server.entry(self.name, name)
        for spec in command["indexes"]:
            existing = [i for i in entry.indexes if i["name"] == spec["name"]]
            if existing and existing[0] != dict(spec):
                raise OperationFailure(
                    f"An existing index has the same name ({spec['name']}) as the requested "
                    "index but different options",
                    code=86,
                )
            if existing:
                continue
            if spec.get("unique"):  # mongomock enforces uniqueness on what it holds
                try:
                    self.server.mock[self.name][name].create_index(
                        list(spec["key"].items()), name=spec["name"], unique=True
                    )
                except DuplicateKeyError as exc:
                    raise OperationFailure(f"E11000 duplicate key: {exc}", code=11000) from None
            entry.indexes.append(dict(spec))
        return {"numIndexesAfter": len(entry.indexes) + 1}

    def _cmd_renameCollection(self, command: Mapping[str, Any]) -> dict[str, Any]:
        assert self.name == "admin", "renameCollection runs on admin"
        source_db, _, source = command["renameCollection"].partition(".")
        target_db, _, target = command["to"].partition(".")
        if not self.server.exists(source_db, source):
            raise OperationFailure(
                f"Source collection {command['renameCollection']} does not exist"
            )
        if self.server.exists(target_db, target):
            if not command.get("dropTarget"):
                raise OperationFailure(f"target namespace {command['to']} exists", code=48)
            FakeDatabase(self.server, target_db).drop_collection(target)
            self.server.calls.pop()  # the drop is part of this command, not a call of ours
        documents = list(self.server.mock[source_db][source].find())
        self.server.mock[target_db].create_collection(target)
        if documents:
            self.server.mock[target_db][target].insert_many(documents)
        entry = self.server.catalog.pop((source_db, source), None) or _Entry()
        self.server.catalog[(target_db, target)] = entry
        self.server.mock[source_db].drop_collection(source)
        return {}

    def _cmd_applyOps(self, command: Mapping[str, Any]) -> dict[str, Any]:
        # Applies creates, and inserts and deletes by _id; everything else is only recorded.
        for op in command["applyOps"]:
            database, _, name = op["ns"].partition(".")
            if op["op"] == "c" and next(iter(op["o"])) == "create":
                if not self.server.exists(database, op["o"]["create"]):
                    FakeDatabase(self.server, database)._cmd_create(op["o"])
                continue
            if op["op"] not in ("i", "d"):
                continue
            collection = self.server.mock[database][name]
            if op["op"] == "i":
                collection.replace_one({"_id": op["o"]["_id"]}, dict(op["o"]), upsert=True)
            elif op["op"] == "d":
                collection.delete_one({"_id": op["o"]["_id"]})
        return {"applied": len(command["applyOps"])}


class FakeCollection:
    def __init__(self, server: FakeServer, database: str, name: str) -> None:
        self.server = server
        self.database_name = database
        self.name = name

    @property
    def _mock(self) -> Any:
        return self.server.mock[self.database_name][self.name]

    @property
    def _is_oplog(self) -> bool:
        return (self.database_name, self.name) == ("local", "oplog.rs")

    def _oplog_matching(
        self, filter: Mapping[str, Any], sort: list[tuple[str, int]] | None
    ) -> list[dict[str, Any]]:
        entries = list(self.server.oplog)
        bounds = filter.get("ts", {})
        if "$gte" in bounds:
            entries = [e for e in entries if _ts_key(e["ts"]) >= _ts_key(bounds["$gte"])]
        if "$lte" in bounds:
            entries = [e for e in entries if _ts_key(e["ts"]) <= _ts_key(bounds["$lte"])]
        if "$or" in filter:
            prefixes = [c["ns"]["$regex"] for c in filter["$or"] if isinstance(c["ns"], dict)]
            exact = [c["ns"] for c in filter["$or"] if isinstance(c["ns"], str)]
            import re

            entries = [
                e
                for e in entries
                if e["ns"] in exact or any(re.match(p, e["ns"]) for p in prefixes)
            ]
        if sort and sort[0][1] == -1:
            entries.reverse()
        return entries

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
    ) -> Iterator[dict[str, Any]]:
        filter = filter or {}
        if self._is_oplog:
            self.server.calls.append(
                Call(
                    "local",
                    "find",
                    {"filter": filter, "projection": projection, "sort": sort, "limit": limit},
                )
            )
            entries = self._oplog_matching(filter, sort)
            return iter(entries[:limit] if limit else entries)
        return iter(self._mock.find(filter, projection, sort=sort, limit=limit))

    def find_raw_batches(
        self,
        filter: Mapping[str, Any] | None = None,
        sort: list[tuple[str, int]] | None = None,
        batch_size: int = 0,
    ) -> Iterator[bytes]:
        filter = filter or {}
        if self._is_oplog:
            self.server.calls.append(
                Call("local", "find_raw_batches", {"filter": filter, "sort": sort})
            )
            documents: list[Any] = self._oplog_matching(filter, sort)
        else:
            if self.server.before_read is not None:
                self.server.before_read(self.database_name, self.name)
            documents = list(self._mock.find(filter))
        size = batch_size or 101
        for start in range(0, len(documents), size):
            yield b"".join(bson.encode(d) for d in documents[start : start + size])

    def insert_many(
        self, documents: list[Any], ordered: bool = True, bypass_document_validation: bool = False
    ) -> Any:
        decoded = [
            bson.decode(d.raw) if isinstance(d, RawBSONDocument) else dict(d) for d in documents
        ]
        if not self.server.exists(self.database_name, self.name):
            self.server.mock[self.database_name].create_collection(self.name)
        try:
            return self._mock.insert_many(decoded, ordered=ordered)
        except BulkWriteError:
            raise
        except DuplicateKeyError as exc:
            raise BulkWriteError(
                {"writeErrors": [{"index": 0, "code": 11000, "errmsg": str(exc)}]}
            ) from None

    def count_documents(self, filter: Mapping[str, Any]) -> int:
        return int(self._mock.count_documents(filter))

    def list_indexes(self) -> Iterator[dict[str, Any]]:
        entry = self.server.catalog.get((self.database_name, self.name))
        if entry is not None and entry.type in ("view",):
            return iter(())
        if entry is not None and entry.type == "timeseries":
            return iter([dict(i) for i in entry.indexes])
        specs = [SON([("v", 2), ("key", SON([("_id", 1)])), ("name", "_id_")])]
        specs += [SON([("v", 2), *i.items()]) for i in (entry.indexes if entry else [])]
        return iter(specs)

    def drop(self) -> None:
        FakeDatabase(self.server, self.database_name).drop_collection(self.name)
