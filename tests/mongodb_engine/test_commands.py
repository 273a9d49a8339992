"""What mongomock cannot do — collection options, views, time-series, the oplog — asserted as
the exact commands and reads our code sends through the client-factory seam."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson.son import SON

from dr_runbooks.errors import DumpFailed, RestoreFailed
from dr_runbooks.mongo import ArchiveHeader, ArchivePrelude, ArchiveWriter, open_dump
from dr_runbooks.mongo.backup import backup_database
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.mongo.fetch import fetch_backup
from dr_runbooks.mongo.oplog import replay_oplog
from dr_runbooks.mongo.plan import plan_restore
from dr_runbooks.mongo.side import restore_into_side
from dr_runbooks.mongo.verify import verify_restore
from dr_runbooks.repository import Repository
from tests.mongo.test_archive import buckets
from tests.mongodb_engine.fake import Call, FakeServer
from tests.mongodb_engine.seed import seed_shop

VALIDATOR = {
    "$jsonSchema": {
        "bsonType": "object",
        "required": ["email"],
        "properties": {"email": {"bsonType": "string", "pattern": "@"}},
    }
}
TIMESERIES = {"timeField": "ts", "metaField": "meta", "granularity": "seconds"}

# The commands that create each kind of collection on the source; a restore must send the same.
CREATES: list[SON[str, Any]] = [
    SON([("create", "audit"), ("capped", True), ("size", 1 << 20), ("max", 5000)]),
    SON(
        [
            ("create", "people"),
            ("validator", VALIDATOR),
            ("validationLevel", "strict"),
            ("validationAction", "error"),
        ]
    ),
    SON([("create", "titles"), ("collation", {"locale": "fr", "strength": 2})]),
    SON([("create", "cpu"), ("timeseries", TIMESERIES), ("expireAfterSeconds", 86400)]),
    SON([("create", "loud"), ("viewOn", "people"), ("pipeline", [{"$match": {"vip": True}}])]),
    SON(
        [
            ("create", "loud_fr"),
            ("viewOn", "loud"),
            ("pipeline", [{"$match": {"lang": "fr"}}]),
            ("collation", {"locale": "fr"}),
        ]
    ),
]


def _seed_special(server: FakeServer) -> None:
    client = server.client()
    db = client["shop"]
    for command in CREATES:
        db.command(command)
    db["audit"].insert_many([{"_id": n, "event": f"e{n}"} for n in range(7)])
    db["people"].insert_many([{"_id": n, "email": f"p{n}@x", "vip": n % 2 == 0} for n in range(4)])
    server.mock["shop"]["system.buckets.cpu"].insert_many([bson.decode(b) for b in buckets(3)])
    db.command(
        SON(
            [
                ("createIndexes", "cpu"),
                ("indexes", [{"v": 2, "key": {"meta": 1, "ts": 1}, "name": "meta_1_ts_1"}]),
            ]
        )
    )
    client.close()
    server.calls.clear()


def _restore_all(target: FakeServer, repository: Repository) -> tuple[Any, dict[str, Any]]:
    backup = repository.find("mongodb", "app", "shop")
    fetched = fetch_backup(repository, backup)
    try:
        with fetched.open() as dump:
            plan = plan_restore(dump, "t1", {"shop": "shop"}, manifest=backup.manifest)
            client = target.client()
            restore_into_side(client, dump, plan)
            verified = verify_restore(client, plan)
            replayed = replay_oplog(client, dump, plan)
    finally:
        fetched.cleanup()
    return plan, {"verified": verified, "replayed": replayed}


def test_options_views_and_timeseries_are_recreated_with_the_commands_that_made_them(
    server: FakeServer,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    _seed_special(server)
    manifest = backup_database(conninfo_for(server), "shop", "app", repository, engine="native")
    described = manifest.details["collections"]
    assert {ns: d["type"] for ns, d in described.items()} == {
        "shop.audit": "collection",
        "shop.cpu": "timeseries",
        "shop.loud": "view",
        "shop.loud_fr": "view",
        "shop.people": "collection",
        "shop.titles": "collection",
    }
    assert manifest.tables == {"shop.audit": 7, "shop.cpu": 3, "shop.people": 4, "shop.titles": 0}

    target = FakeServer()
    plan, result = _restore_all(target, repository)

    side = plan.databases[0].side
    creates = [c for db, c in target.commands("create") if db == side]
    # Collections first, in name order; views after them, a view after the view it is on.
    expected = [c for c in CREATES if "viewOn" not in c]
    expected = sorted(expected, key=lambda c: c["create"]) + [c for c in CREATES if "viewOn" in c]
    assert [dict(c) for c in creates] == [dict(c) for c in expected]
    assert [list(c) for c in creates] == [list(c) for c in expected]  # option order kept
    assert target.commands("createIndexes") == [
        (side, SON([("createIndexes", "cpu"), ("indexes", [SON_KEY_META_TS])]))
    ]
    assert target.mock[side]["system.buckets.cpu"].count_documents({}) == 3
    assert result["verified"]["problems"] == []
    assert result["verified"]["counts"] == {
        "shop.audit": 7,
        "shop.cpu": 3,
        "shop.people": 4,
        "shop.titles": 0,
    }


SON_KEY_META_TS = {"key": {"meta": 1, "ts": 1}, "name": "meta_1_ts_1"}


def test_documents_go_in_with_validation_bypassed_and_old_options_are_dropped(
    tmp_path: Any,
) -> None:
    out = io.BytesIO()
    prelude = ArchivePrelude.for_collection(
        "legacy.people",
        {"options": {"autoIndexId": True, "flags": 1, "validator": VALIDATOR}, "indexes": []},
    )
    with ArchiveWriter(out, [prelude], header=ArchiveHeader(server_version="3.6.0")) as writer:
        writer.write_collection("legacy.people", [{"_id": 1, "email": "no at sign"}])
    path = tmp_path / "legacy.archive"
    path.write_bytes(out.getvalue())
    target = FakeServer()
    with open_dump(path) as dump:
        plan = plan_restore(dump, "x")
        restore_into_side(target.client(), dump, plan)
    assert target.commands("create") == [
        ("legacy__restore_x", SON([("create", "people"), ("validator", VALIDATOR)]))
    ]
    assert target.mock["legacy__restore_x"]["people"].count_documents({}) == 1


# -- the oplog ----------------------------------------------------------------------------------


def test_a_replica_set_backup_captures_the_oplog_from_before_the_first_read_to_the_end(
    repository: Repository, conninfo_for: Callable[[FakeServer], MongoConnInfo]
) -> None:
    server = FakeServer(replica_set="rs0")
    seed_shop(server, orders=20)
    for n in range(3):  # history before the backup: not captured
        server.log("i", "shop.orders", {"_id": f"old{n}"})
    start = server.oplog[-1]["ts"]
    written: list[bson.Timestamp] = []

    def concurrent_writes(database: str, collection: str) -> None:
        if collection != "orders" or written:
            return
        server.mock["shop"]["orders"].insert_one({"_id": "late", "sku": "late"})
        written.append(server.log("i", "shop.orders", {"_id": "late", "sku": "late"}))
        server.log("i", "other.things", {"_id": 1})  # another database: not captured
        written.append(
            server.log(
                "c",
                "admin.$cmd",
                {"applyOps": [{"op": "i", "ns": "shop.customers", "o": {"_id": 999}}]},
                lsid={"id": bson.Binary(b"\x01" * 16, 4)},
                txnNumber=bson.Int64(1),
            )
        )

    server.before_read = concurrent_writes

    manifest = backup_database(conninfo_for(server), "shop", "app", repository, engine="native")

    end = written[-1]
    assert manifest.consistency == "oplog"
    assert manifest.consistent_point == datetime.fromtimestamp(end.time, UTC)
    assert manifest.details["oplog"] == {
        "start": {"t": start.time, "i": start.inc},
        "end": {"t": end.time, "i": end.inc},
        "entries": 3,  # the start entry itself, the late insert, the transaction
    }
    oplog_calls = [c for c in server.calls if c.database == "local"]
    newest = {"filter": {}, "projection": {"ts": 1}, "sort": [("$natural", -1)], "limit": 1}
    oldest = {"filter": {}, "projection": {"ts": 1}, "sort": [("$natural", 1)], "limit": 1}
    assert oplog_calls == [
        Call("local", "find", newest),
        Call("local", "find", newest),
        Call(
            "local",
            "find_raw_batches",
            {
                "filter": {
                    "ts": {"$gte": start, "$lte": end},
                    "$or": [{"ns": {"$regex": "^shop\\."}}, {"ns": "admin.$cmd"}],
                },
                "sort": [("$natural", 1)],
            },
        ),
        Call("local", "find", oldest),
    ]
    # The start is noted before any collection is listed or read.
    kinds = [(c.kind, c.database) for c in server.calls]
    assert kinds.index(("find", "local")) < kinds.index(("listCollections", "shop"))

    # The restore replays it: the late insert and the committed transaction, into the side db.
    target = FakeServer()
    plan, result = _restore_all(target, repository)
    side = plan.databases[0].side
    assert result["verified"]["problems"] == []
    assert result["replayed"]["applied"] == 3
    applied = [c["applyOps"][0] for _, c in target.commands("applyOps")]
    assert [(a["op"], a["ns"], dict(a["o"])) for a in applied] == [
        ("i", f"{side}.orders", {"_id": "old2"}),
        ("i", f"{side}.orders", {"_id": "late", "sku": "late"}),
        ("i", f"{side}.customers", {"_id": 999}),
    ]
    assert target.mock[side]["customers"].count_documents({"_id": 999}) == 1


def test_an_oplog_that_rolled_over_during_the_backup_fails_it_and_leaves_nothing(
    repository: Repository, conninfo_for: Callable[[FakeServer], MongoConnInfo]
) -> None:
    server = FakeServer(replica_set="rs0")
    seed_shop(server, orders=5)
    server.log("n", "", {"msg": "start"})

    def truncate(database: str, collection: str) -> None:
        server.oplog.clear()  # the capped oplog overwrote everything since the start
        server.log("i", "shop.orders", {"_id": "x"})

    server.before_read = truncate

    with pytest.raises(DumpFailed, match="oplog rolled over during the backup"):
        backup_database(conninfo_for(server), "shop", "app", repository, engine="native")
    assert repository.backups("mongodb") == []
    assert list(repository.store.list()) == []


def _oplog_archive(tmp_path: Any, entries: list[dict[str, Any]]) -> Any:
    out = io.BytesIO()
    preludes = [
        ArchivePrelude.for_collection("shop.orders", {"options": {}, "indexes": []}),
        ArchivePrelude.oplog(),
    ]
    with ArchiveWriter(out, preludes) as writer:
        writer.write_collection("shop.orders", [{"_id": 1}])
        writer.write_oplog(entries)
    path = tmp_path / "with-oplog.archive"
    path.write_bytes(out.getvalue())
    return path


UI = bson.Binary(b"\x07" * 16, 4)
LSID = {"id": bson.Binary(b"\x02" * 16, 4), "uid": bson.Binary(b"\x03" * 32, 0)}


def _entry(n: int, op: str, ns: str, o: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "ts": bson.Timestamp(1_700_000_000, n),
        "t": 1,
        "v": 2,
        "op": op,
        "ns": ns,
        "o": o,
        **extra,
    }


def test_oplog_replay_sends_exactly_these_commands(tmp_path: Any) -> None:
    entries = [
        _entry(1, "n", "", {"msg": "periodic noop"}),
        _entry(2, "i", "shop.orders", {"_id": 2}, ui=UI, wall=datetime(2024, 5, 1)),
        _entry(3, "u", "shop.orders", {"$v": 2, "diff": {"u": {"x": 1}}}, o2={"_id": 2}, ui=UI),
        _entry(4, "c", "shop.$cmd", {"create": "fresh", "capped": True, "size": 4096}, ui=UI),
        _entry(5, "c", "shop.$cmd", {"startIndexBuild": "orders", "indexes": []}),
        _entry(
            6,
            "c",
            "shop.$cmd",
            {
                "commitIndexBuild": "orders",
                "indexBuildUUID": UI,
                "indexes": [{"v": 2, "key": {"sku": 1}, "name": "sku_1", "sparse": True}],
            },
        ),
        _entry(
            7, "c", "shop.$cmd", {"createIndexes": "fresh", "v": 2, "key": {"a": 0}, "name": "a_0"}
        ),
        _entry(8, "i", "other.things", {"_id": 1}),
        _entry(9, "c", "config.$cmd", {"create": "cache"}),
        _entry(
            10,
            "c",
            "admin.$cmd",
            {
                "applyOps": [{"op": "i", "ns": "shop.orders", "o": {"_id": 3}, "ui": UI}],
                "partialTxn": True,
            },
            lsid=LSID,
            txnNumber=bson.Int64(5),
        ),
        _entry(
            11,
            "c",
            "admin.$cmd",
            {
                "applyOps": [{"op": "d", "ns": "shop.orders", "o": {"_id": 2}, "ui": UI}],
                "prepare": True,
            },
            lsid={"id": bson.Binary(b"\x09" * 16, 4)},
            txnNumber=bson.Int64(1),
        ),
        _entry(
            12,
            "c",
            "admin.$cmd",
            {"applyOps": [{"op": "i", "ns": "shop.orders", "o": {"_id": 4}, "ui": UI}], "count": 2},
            lsid=LSID,
            txnNumber=bson.Int64(5),
        ),
        _entry(
            13,
            "c",
            "admin.$cmd",
            {"abortTransaction": 1},
            lsid={"id": bson.Binary(b"\x09" * 16, 4)},
            txnNumber=bson.Int64(1),
        ),
        _entry(
            14,
            "c",
            "shop.$cmd",
            {"renameCollection": "shop.fresh", "to": "shop.renamed", "stayTemp": False},
        ),
        _entry(
            15, "c", "shop.$cmd", {"collMod": "orders", "noPadding": True, "validationLevel": "off"}
        ),
    ]
    target = FakeServer()
    with open_dump(_oplog_archive(tmp_path, entries)) as dump:
        plan = plan_restore(dump, "r", {"shop": "shop"})
        client = target.client()
        restore_into_side(client, dump, plan)
        target.calls.clear()
        result = replay_oplog(client, dump, plan)

    side = "shop__restore_r"
    ts = {n: bson.Timestamp(1_700_000_000, n) for n in range(16)}

    def applied(n: int, op: str, ns: str, o: Any, **extra: Any) -> tuple[str, SON[str, Any]]:
        entry: SON[str, Any] = SON(
            [("ts", ts[n]), ("t", 1), ("v", 2), ("op", op), ("ns", ns), ("o", o), *extra.items()]
        )
        return "admin", SON([("applyOps", [entry]), ("bypassDocumentValidation", True)])

    def nested(op: str, ns: str, o: Any) -> tuple[str, SON[str, Any]]:
        return "admin", SON(
            [
                ("applyOps", [SON([("op", op), ("ns", ns), ("o", o)])]),
                ("bypassDocumentValidation", True),
            ]
        )

    assert target.commands() == [
        applied(2, "i", f"{side}.orders", {"_id": 2}),
        applied(3, "u", f"{side}.orders", {"$v": 2, "diff": {"u": {"x": 1}}}, o2={"_id": 2}),
        applied(4, "c", f"{side}.$cmd", {"create": "fresh", "capped": True, "size": 4096}),
        nested("i", f"{side}.orders", {"_id": 3}),
        nested("i", f"{side}.orders", {"_id": 4}),
        applied(
            14,
            "c",
            f"{side}.$cmd",
            {"renameCollection": f"{side}.fresh", "to": f"{side}.renamed", "stayTemp": False},
        ),
        applied(15, "c", f"{side}.$cmd", {"collMod": "orders", "validationLevel": "off"}),
        # Index builds come last, on the collection's name at the end of the oplog.
        (
            side,
            SON(
                [
                    ("createIndexes", "orders"),
                    ("indexes", [{"key": {"sku": 1}, "name": "sku_1", "sparse": True}]),
                ]
            ),
        ),
        (
            side,
            SON([("createIndexes", "renamed"), ("indexes", [{"key": {"a": 1}, "name": "a_0"}])]),
        ),
    ]
    assert result["applied"] == 7 and result["indexes"] == 2
    assert result["skipped"] == {
        "no-op": 1,
        "startIndexBuild": 1,
        "other database (other)": 1,
        "other database (config)": 1,
        "aborted transaction": 1,
    }
    assert result["pending_transactions"] == 0
    # The key order of every applied entry is the oplog's (the command name stays first).
    for _, command in target.commands("applyOps"):
        assert "ui" not in command["applyOps"][0] and "wall" not in command["applyOps"][0]


def test_an_oplog_command_that_cannot_be_replayed_is_refused(tmp_path: Any) -> None:
    entries = [_entry(1, "c", "shop.$cmd", {"upgradeDowngradeViewlessTimeseries": "cpu"})]
    with open_dump(_oplog_archive(tmp_path, entries)) as dump:
        plan = plan_restore(dump, "r")
        client = FakeServer().client()
        restore_into_side(client, dump, plan)
        with pytest.raises(RestoreFailed, match="upgradeDowngradeViewlessTimeseries"):
            replay_oplog(client, dump, plan)
