"""Back up a multi-collection database and restore it: documents and indexes come back equal."""

from __future__ import annotations

import io
from collections.abc import Callable

import bson
import pytest
import zstandard

from dr_runbooks.errors import RestoreFailed
from dr_runbooks.mongo.backup import DATA, backup_database
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.mongo.fetch import fetch_backup
from dr_runbooks.mongo.oplog import replay_oplog
from dr_runbooks.mongo.plan import plan_restore
from dr_runbooks.mongo.side import restore_into_side
from dr_runbooks.mongo.swap import swap_database
from dr_runbooks.mongo.verify import verify_restore
from dr_runbooks.repository import Repository
from tests.mongo import oracle
from tests.mongo.test_archive import EVERY_KIND_OF_INDEX
from tests.mongodb_engine.fake import FakeServer
from tests.mongodb_engine.seed import documents, index_specs, seed_shop

COLLECTIONS = ("customers", "empty", "orders")


def _restore(
    target: FakeServer, repository: Repository, stamp: str, keep_old: bool = True
) -> tuple[str, str | None]:
    backup = repository.find("mongodb", "app", "shop")
    fetched = fetch_backup(repository, backup)
    client = target.client()
    try:
        with fetched.open() as dump:
            plan = plan_restore(dump, backup.id, {"shop": "shop"}, manifest=backup.manifest)
            restore_into_side(client, dump, plan)
            checked = verify_restore(client, plan)
            assert checked["problems"] == []
            assert replay_oplog(client, dump, plan)["applied"] == 0
        side = plan.databases[0].side
        return side, swap_database(client, "shop", side, stamp, keep_old=keep_old)
    finally:
        fetched.cleanup()


def test_backup_then_restore_on_a_new_server_gives_equal_documents_and_indexes(
    server: FakeServer,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    seed_shop(server)

    manifest = backup_database(conninfo_for(server), "shop", "app", repository, engine="native")

    assert manifest.tables == {"shop.customers": 50, "shop.empty": 0, "shop.orders": 300}
    assert manifest.consistency == "per-collection"
    assert manifest.consistent_point == manifest.started
    described = manifest.details["collections"]["shop.orders"]
    assert sorted(i["name"] for i in described["indexes"]) == sorted(
        i["name"] for i in EVERY_KIND_OF_INDEX
    )
    assert described["uuid"] and len(described["uuid"]) == 32
    assert server.clients_opened == server.clients_closed

    rebuilt = FakeServer()
    side, kept = _restore(rebuilt, repository, "20240501T000000Z")

    assert side.startswith("shop__restore_") and kept is None
    assert "shop__restore_" not in " ".join(rebuilt.client().list_database_names())
    for name in COLLECTIONS:
        assert documents(rebuilt, "shop", name) == documents(server, "shop", name), name
        assert index_specs(rebuilt, "shop", name) == index_specs(server, "shop", name), name
    partial = [s for s in index_specs(rebuilt, "shop", "orders") if s["name"] == "open_orders"]
    assert partial[0]["partialFilterExpression"] == {
        "status": {"$eq": "open"},
        "total": {"$gt": 10},
    }


def test_the_stored_object_is_a_mongodump_archive_with_the_documents_in_it(
    server: FakeServer,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    seed_shop(server, orders=40)
    backup_database(conninfo_for(server), "shop", "app", repository, engine="native")
    backup = repository.find("mongodb", "app", "shop")
    assert repository.verify_objects(backup) == []

    compressed = repository.store.read_bytes(backup.prefix + DATA)
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed)).read()
    parsed = oracle.parse_archive(data)  # strictly along the spec, without our reader

    assert parsed.header["tool_version"] == "dr-runbooks native engine"
    assert [f"{p['db']}.{p['collection']}" for p in parsed.preludes] == [
        "shop.customers",
        "shop.empty",
        "shop.orders",
    ]
    orders = parsed.documents("shop.orders")
    assert [bson.decode(d)["sku"] for d in orders] == [f"sku-{n:05d}" for n in range(40)]
    assert parsed.eof_crc("shop.orders") == oracle.crc64_xz_bitwise(b"".join(orders))


def test_restoring_over_a_damaged_database_keeps_the_old_collections_aside(
    server: FakeServer,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    seed_shop(server, orders=30)
    backup_database(conninfo_for(server), "shop", "app", repository, engine="native")
    # The incident: documents lost, a stray collection created.
    server.mock["shop"]["orders"].delete_many({"status": "open"})
    server.client()["shop"].command({"create": "scratch"})
    before_restore = documents(server, "shop", "orders")

    side, kept = _restore(server, repository, "20240502T101500Z")

    assert kept == "shop__pre_restore_20240502T101500Z"
    assert len(documents(server, "shop", "orders")) == 30
    assert documents(server, kept, "orders") == before_restore
    assert sorted(server.collections("shop")) == list(COLLECTIONS)
    assert "scratch" in server.collections(kept)
    assert side not in server.client().list_database_names()
    renames = [c for _, c in server.commands("renameCollection")]
    assert {"renameCollection": "shop.orders", "to": f"{kept}.orders", "dropTarget": False} in [
        dict(r) for r in renames
    ]
    assert {"renameCollection": f"{side}.orders", "to": "shop.orders", "dropTarget": False} in [
        dict(r) for r in renames
    ]


def test_restoring_without_keeping_the_old_collections_replaces_them(
    server: FakeServer,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    seed_shop(server, orders=10)
    backup_database(conninfo_for(server), "shop", "app", repository, engine="native")
    server.mock["shop"]["orders"].delete_many({})
    server.client()["shop"].command({"create": "scratch"})

    _, kept = _restore(server, repository, "20240502T101500Z", keep_old=False)

    assert kept is None
    assert len(documents(server, "shop", "orders")) == 10
    assert sorted(server.collections("shop")) == list(COLLECTIONS)
    assert not [d for d in server.client().list_database_names() if "pre_restore" in d]


def test_a_side_database_left_by_an_earlier_attempt_is_not_overwritten(
    server: FakeServer,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    seed_shop(server, orders=5)
    backup_database(conninfo_for(server), "shop", "app", repository, engine="native")
    backup = repository.find("mongodb", "app", "shop")
    fetched = fetch_backup(repository, backup)
    with fetched.open() as dump:
        plan = plan_restore(dump, backup.id, {"shop": "shop"}, manifest=backup.manifest)
        server.client()[plan.databases[0].side].command({"create": "leftover"})
        with pytest.raises(RestoreFailed, match="already exists"):
            restore_into_side(server.client(), dump, plan)
    fetched.cleanup()
    assert server.collections(plan.databases[0].side) == ["leftover"]
