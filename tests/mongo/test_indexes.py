"""What a restore sends to createIndexes, from the index specs real dumps recorded."""

from __future__ import annotations

import bson
import pytest

from dr_runbooks.errors import InvalidArchive, RestoreFailed
from dr_runbooks.mongo import (
    DirectoryDump,
    UnrestorableIndex,
    create_indexes_command,
    normalize_indexes,
    parse_metadata,
)
from tests.mongo.test_archive import EVERY_KIND_OF_INDEX
from tests.shared_data import shared_data

TESTDATA = ("mongodb-mongo-tools", "mongorestore", "testdata")


def indexes_of(*parts: str) -> list[dict[str, object]]:
    metadata = parse_metadata(shared_data(*TESTDATA, *parts).read_text(), "/".join(parts))
    assert metadata is not None
    return metadata.indexes


def test_duplicate_legacy_keys_become_one_index_like_mongorestore() -> None:
    # Upstream TestFixDuplicatedLegacyIndexes: of foo_ (""), foo_1.0 and foo_1 exactly one
    # {foo: 1} index is created; foo_2 keeps its value 2.
    specs = indexes_of("duplicate_index_key", "indextest", "duplicate_index_key.metadata.json")
    assert [spec["key"] for spec in specs] == [
        {"_id": 1},
        {"foo": ""},
        {"foo": 1.0},
        {"foo": 1},
        {"foo": 2},
    ]
    plan = normalize_indexes(specs, namespace="indextest.duplicate_index_key")
    assert plan.indexes == [
        {"key": {"foo": 1}, "name": "foo_"},
        {"key": {"foo": 2}, "name": "foo_2"},
    ]
    assert plan.id_index == {"key": {"_id": 1}, "name": "_id_"}
    assert plan.notes == [
        "indextest.duplicate_index_key: index 'foo_': legacy key value '' for 'foo' converted to 1",
        "indextest.duplicate_index_key: index 'foo_1.0' dropped: same key as index 'foo_'",
        "indextest.duplicate_index_key: index 'foo_1' dropped: same key as index 'foo_'",
    ]


def test_pre_34_key_values_and_options_are_converted() -> None:
    specs = indexes_of("indextestdump", "indextest", "test_collection.metadata.json")
    plan = normalize_indexes(specs, namespace="indextest.test_collection")
    (index,) = plan.indexes
    # true, Decimal128("0") and "" all meant ascending before 3.4; 1.0 is fine as it is.
    assert index == {"key": {"a": 1.0, "b": 1, "c": 1, "d": 1}, "name": "a_1_b_true"}
    assert list(index["key"]) == ["a", "b", "c", "d"]
    assert any("unknown option 'safe' dropped" in note for note in plan.notes)


def test_negative_decimal_keys_are_kept_descending() -> None:
    specs = indexes_of("indexmetadata", "indextest", "test_coll_no_index_ns.metadata.json")
    (index,) = normalize_indexes(specs, namespace="indextest.x").indexes
    assert index["key"] == {
        "a": 1.0,
        "b": 1.0,
        "c": bson.Decimal128("-1"),
        "d": bson.Decimal128("-1"),
    }


def test_every_kind_of_index_survives_unchanged_but_ns_and_v() -> None:
    specs = [{**spec, "ns": "shop.orders"} for spec in EVERY_KIND_OF_INDEX]
    plan = normalize_indexes(specs, namespace="shop.orders")
    expected = [
        {k: v for k, v in spec.items() if k not in ("v", "ns")} for spec in EVERY_KIND_OF_INDEX[1:]
    ]
    assert plan.indexes == expected
    assert plan.notes == []
    assert [list(i) for i in plan.indexes] == [list(i) for i in expected]


def test_ttl_hashed_and_2d_fixtures() -> None:
    ttl = normalize_indexes(
        indexes_of("coll_with_ttl_index", "test", "foo.metadata.json"), namespace="test.foo"
    )
    assert ttl.indexes == [{"key": {"f": 1.0}, "name": "f_1", "expireAfterSeconds": 1000}]
    hashed = normalize_indexes(indexes_of("hashedIndexes.metadata.json"), namespace="t.h")
    assert [i["key"] for i in hashed.indexes] == [{"a.a": 1}, {"a.b": "hashed"}, {"b": "hashed"}]
    dump = DirectoryDump(
        shared_data(
            "mongodb-mongo-tools",
            "test",
            "qa-tests",
            "jstests",
            "restore",
            "testdata",
            "dump_extended_json_options",
        )
    )
    changelog = dump.collection("test.changelog")
    assert changelog.options == {"size": 10000000, "capped": True}
    (geo,) = normalize_indexes(changelog.indexes, namespace="test.changelog").indexes
    assert geo == {"key": {"pos": "2d"}, "name": "position_2d", "min": 0, "max": 1000, "bits": 32}


def test_same_key_with_another_collation_is_not_a_duplicate() -> None:
    specs = [
        {"key": {"title": 1}, "name": "title_plain"},
        {"key": {"title": 1}, "name": "title_fr", "collation": {"locale": "fr"}},
        {"key": {"title": 1.0}, "name": "title_again"},
    ]
    plan = normalize_indexes(specs, namespace="a.b")
    assert plan.names == ["title_plain", "title_fr"]


def test_geohaystack_indexes_cannot_be_restored() -> None:
    specs = indexes_of("coll_with_geohaystack_index", "geohaystack_test", "foo.metadata.json")
    with pytest.raises(UnrestorableIndex, match="found a geoHaystack index 'f_1'") as refused:
        normalize_indexes(specs, namespace="geohaystack_test.foo")
    assert isinstance(refused.value, RestoreFailed)


def test_a_spec_without_a_key_is_malformed() -> None:
    with pytest.raises(InvalidArchive, match="has no name or no key"):
        normalize_indexes([{"name": "x"}], namespace="a.b")


def test_create_indexes_command() -> None:
    plan = normalize_indexes(EVERY_KIND_OF_INDEX, namespace="shop.orders")
    command = create_indexes_command("orders", plan)
    assert list(command) == ["createIndexes", "indexes"]
    assert command["createIndexes"] == "orders"
    assert "_id_" not in [i["name"] for i in command["indexes"]]
    assert len(command["indexes"]) == len(EVERY_KIND_OF_INDEX) - 1
