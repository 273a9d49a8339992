"""The full cycle against a real MongoDB server: backup → restore → verify → swap.

Runs only when ``DR_TEST_MONGODB_URI`` names a server this test may write to (it creates and
drops databases named ``drlive_*``); a replica set also exercises the oplog capture and replay.
With ``mongodump`` on PATH the tools engine is tested too.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dr_runbooks.mongo.backup import backup_database, server_info
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.mongo.fetch import fetch_backup
from dr_runbooks.mongo.oplog import replay_oplog
from dr_runbooks.mongo.plan import plan_restore
from dr_runbooks.mongo.side import restore_into_side
from dr_runbooks.mongo.swap import swap_database
from dr_runbooks.mongo.verification import verify_backup
from dr_runbooks.mongo.verify import verify_restore
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from tests.mongo.test_archive import EVERY_KIND_OF_INDEX

URI = os.environ.get("DR_TEST_MONGODB_URI")

pytestmark = pytest.mark.skipif(
    not URI, reason="set DR_TEST_MONGODB_URI to a MongoDB server to run the live cycle"
)


@pytest.fixture
def live() -> Iterator[tuple[MongoConnInfo, Any, str]]:
    assert URI is not None
    info = MongoConnInfo.from_uri(URI)
    client = info.client()
    name = f"drlive_{secrets.token_hex(3)}"
    yield info, client, name
    for database in client.list_database_names():
        if database.startswith(name):
            client.drop_database(database)
    client.close()


def _seed(client: Any, name: str) -> None:
    db = client[name]
    db.create_collection("audit", capped=True, size=1 << 20)
    db.create_collection(
        "people", validator={"$jsonSchema": {"required": ["email"]}}, validationLevel="strict"
    )
    db.create_collection("titles", collation={"locale": "fr", "strength": 2})
    db["people"].insert_many([{"_id": n, "email": f"p{n}@x", "vip": n % 2 == 0} for n in range(20)])
    db["audit"].insert_many([{"n": n} for n in range(30)])
    start = datetime.datetime(2024, 5, 1)
    db["orders"].insert_many(
        [
            {
                "customer": f"c{n % 7}",
                "placed": start + datetime.timedelta(minutes=n),
                "sku": f"sku-{n}",
                "status": "open" if n % 2 else "done",
                "total": n * 3,
                "where": {"type": "Point", "coordinates": [2.35, 48.85]},
                "notes": "fragile",
                "title": f"t{n}",
                "attributes": {"colour": "red"},
            }
            for n in range(500)
        ]
    )
    indexes = [dict(i) for i in EVERY_KIND_OF_INDEX if i["name"] != "_id_"]
    for index in indexes:
        index.pop("v", None)
    db.command({"createIndexes": "orders", "indexes": indexes})
    db.command({"create": "vips", "viewOn": "people", "pipeline": [{"$match": {"vip": True}}]})
    if server_info(client).version_tuple >= (5, 0):
        db.create_collection("cpu", timeseries={"timeField": "ts", "metaField": "host"})
        db["cpu"].insert_many([{"ts": start, "host": f"h{n % 3}", "load": n} for n in range(50)])


def _snapshot(client: Any, name: str) -> dict[str, Any]:
    db = client[name]
    state: dict[str, Any] = {}
    for spec in db.list_collections():
        collection = spec["name"]
        if collection.startswith("system."):
            continue
        entry: dict[str, Any] = {"type": spec.get("type"), "options": spec.get("options")}
        if spec.get("type") != "view":
            entry["documents"] = sorted(
                map(repr, db[collection].find({}, {"_id": 0} if collection == "cpu" else None))
            )
            entry["indexes"] = sorted(
                repr({k: v for k, v in i.items() if k not in ("v", "ns")})
                for i in db[collection].list_indexes()
            )
        state[collection] = entry
    return state


@pytest.mark.parametrize("engine", ["native", "tools"])
def test_backup_restore_verify_swap_on_a_real_server(
    live: tuple[MongoConnInfo, Any, str], tmp_path: Path, engine: str
) -> None:
    info, client, name = live
    if engine == "tools" and shutil.which("mongodump") is None:
        pytest.skip("mongodump is not on PATH")
    _seed(client, name)
    before = _snapshot(client, name)
    repository = Repository(LocalStore(tmp_path / "repo"), "live")

    manifest = backup_database(info, name, "live", repository, engine=engine)
    backup = repository.find("mongodb", "live", name)

    checked = verify_backup(info.client_factory(), repository, backup)
    assert checked["outcome"] == "ok", checked["problems"]
    assert not [d for d in client.list_database_names() if "__verify_" in d]

    client[name]["people"].delete_many({})  # the incident
    fetched = fetch_backup(repository, backup)
    try:
        with fetched.open() as dump:
            plan = plan_restore(dump, backup.id, {name: name}, manifest=manifest)
            deferred = dump.oplog is not None
            restore_into_side(client, dump, plan, indexes=not deferred)
            assert verify_restore(client, plan, indexes=not deferred)["problems"] == []
            replay_oplog(client, dump, plan, metadata_indexes=deferred)
            assert verify_restore(client, plan, counts=False)["problems"] == []
    finally:
        fetched.cleanup()
    kept = swap_database(client, name, plan.databases[0].side, "20240501T000000Z")

    assert _snapshot(client, name) == before
    assert kept is not None and client[kept]["people"].count_documents({}) == 0
