"""A multi-collection database with every kind of index, put into a fake server through the
same commands a real server would get (then the record of them is cleared)."""

from __future__ import annotations

import datetime
from typing import Any

import bson
from bson.son import SON

from tests.mongo.test_archive import EVERY_KIND_OF_INDEX
from tests.mongodb_engine.fake import FakeServer

START = datetime.datetime(2024, 5, 1, 12, 0, 0)


def order(n: int) -> dict[str, Any]:
    return {
        "_id": bson.ObjectId(f"{n:024x}"),
        "customer": f"c{n % 17}",
        "placed": START + datetime.timedelta(minutes=n, milliseconds=n % 1000),
        "sku": f"sku-{n:05d}",
        "status": "open" if n % 3 else "shipped",
        "total": bson.Decimal128(f"{n}.50"),
        "where": {"type": "Point", "coordinates": [2.35 + n / 1000, 48.85]},
        "notes": "fragile " * (n % 4),
        "title": f"Commande {n}",
        "attributes": {"colour": ["red", "blue"][n % 2], "size": n % 5},
        "count": bson.Int64(n * 1_000_000_000),
    }


def customer(n: int) -> dict[str, Any]:
    return {"_id": n, "email": f"c{n}@example.com", "name": f"Customer {n}", "vip": n % 7 == 0}


def seed_shop(server: FakeServer, database: str = "shop", orders: int = 300) -> None:
    client = server.client()
    db = client[database]
    db.command(SON([("create", "orders")]))
    db["orders"].insert_many([order(n) for n in range(orders)])
    db.command(
        SON(
            [
                ("createIndexes", "orders"),
                ("indexes", [dict(i, v=2) for i in EVERY_KIND_OF_INDEX if i["name"] != "_id_"]),
            ]
        )
    )
    db.command(SON([("create", "customers")]))
    db["customers"].insert_many([customer(n) for n in range(50)])
    db.command(
        SON(
            [
                ("createIndexes", "customers"),
                ("indexes", [{"v": 2, "key": {"email": 1}, "name": "email_1", "unique": True}]),
            ]
        )
    )
    db.command(SON([("create", "empty")]))
    client.close()
    server.calls.clear()


def documents(server: FakeServer, database: str, collection: str) -> list[dict[str, Any]]:
    """What the server holds, in _id order, as BSON would carry it."""
    found = server.mock[database][collection].find({}, sort=[("_id", 1)])
    return [bson.decode(bson.encode(d)) for d in found]


def index_specs(server: FakeServer, database: str, collection: str) -> list[dict[str, Any]]:
    """Index specs as the server lists them, without the version it chose."""
    specs = server.client()[database][collection].list_indexes()
    return sorted(({k: v for k, v in s.items() if k != "v"} for s in specs), key=str)
