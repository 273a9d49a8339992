"""Directory dumps and tarred directory dumps, against the real mongodump fixtures."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any, Literal

import bson
import pytest
import zstandard
from bson import json_util

from dr_runbooks.errors import InvalidArchive
from dr_runbooks.mongo import DirectoryDump, Namespace, normalize_indexes, open_dump
from dr_runbooks.mongo._stream import iter_bson_stream
from tests.mongo import oracle
from tests.mongo.test_archive import OneWayStream
from tests.shared_data import shared_data

TESTDATA = "mongodb-mongo-tools/mongorestore/testdata"
QA = "mongodb-mongo-tools/test/qa-tests/jstests/restore/testdata"

BROKEN_DIRECTORIES = {
    f"{TESTDATA}/timeseries_tests/ts_dump_invalid_buckets": (
        r"system\.buckets\.foo_ts\.bson: document 0: not a valid time-series bucket"
    ),
}

# Corrupt on purpose upstream (bsondump's TestBsondumpBadFiles); the first three are broken in
# their framing, the last two only inside a correctly framed document.
CORRUPT_FRAMING = {"invalid_field_name.bson", "partial_file.bson", "random_bytes.bson"}
CORRUPT_CONTENT = {"bad_cstring.bson", "bad_type.bson"}


def fixture(relative: str) -> Path:
    if relative == oracle.MISSING:
        shared_data(oracle.MONGO_TOOLS)
    return shared_data(*relative.split("/"))


@pytest.mark.parametrize("relative", oracle.discover_directory_dumps())
def test_every_directory_dump_fixture_matches_its_files(relative: str) -> None:
    root = fixture(relative)
    dump = DirectoryDump(root)
    if relative in BROKEN_DIRECTORIES:
        with pytest.raises(InvalidArchive, match=BROKEN_DIRECTORIES[relative]):
            dump.count_documents()
        return
    counts = dump.count_documents(validate=True)
    with_data = [
        c
        for c in (*dump.collections, *([dump.oplog] if dump.oplog else []))
        if c.location.endswith((".bson", ".bson.gz", ".bin"))
    ]
    # Every document file of the tree belongs to exactly one collection (or is the oplog)...
    assert sorted(c.location for c in with_data) == sorted(oracle.data_files_of(root))
    # ...and our count of it is what bson.decode_file_iter finds in it.
    for collection in with_data:
        assert counts[collection.namespace] == oracle.count_bson_file(root / collection.location)
    for collection in dump.collections:
        assert list(dump.documents(collection.namespace)) == [
            d for c, d in dump.iter_documents() if c is collection
        ]


def _facts(relative: str) -> dict[str, Any]:
    with open_dump(fixture(relative)) as dump:
        return {
            "server_version": dump.server_version,
            "counts": {str(ns): n for ns, n in dump.count_documents().items()},
            "types": {str(c.namespace): c.type for c in dump.collections if c.type != "collection"},
            "special": {str(c.namespace): c.special for c in dump.collections if c.special},
            "skipped": list(getattr(dump, "skipped", ())),
            "indexes": {str(c.namespace): [i["name"] for i in c.indexes] for c in dump.collections},
        }


def test_junk_in_a_dump_tree_is_skipped_deliberately() -> None:
    facts = _facts(f"{TESTDATA}/testdirs")
    # c2 and the legacy .bin have no metadata, c3's metadata file is empty: all still count.
    assert facts["counts"] == {
        "db1.c1": 100,
        "db1.c2": 0,
        "db1.c3": 0,
        "db1.c4": 10,
        "db2.c1": 0,
        ".oplog": 0,
    }
    assert facts["skipped"] == [
        "db1/baddir/: a sub-directory of a database",
        "badfile.txt: a top-level file that is not the oplog",
        "db2/c2.txt: not a .bson or .metadata.json file",
    ]
    dump = DirectoryDump(fixture(f"{TESTDATA}/testdirs"))
    assert dump.collection("db1.c3").metadata is None
    assert dump.collection("db1.c1").indexes[0]["name"] == "_id_"


def test_escaped_and_truncated_collection_names() -> None:
    assert _facts(f"{TESTDATA}/specialcharacter")["counts"] == {"db1.cafés": 1}
    long_name = (
        "aVery"
        + "Very" * 43
        + "LongCollectionNameConsistingOfExactlyTwoHundredAndFortySevenCharacters"
    )
    assert len(long_name) == 247
    facts = _facts(f"{TESTDATA}/longcollectionname")
    assert facts["counts"] == {f"db1.{long_name}": 1}
    assert facts["skipped"][0].endswith("a top-level file that is not the oplog")


def test_timeseries_users_roles_and_views() -> None:
    facts = _facts(f"{TESTDATA}/timeseries_tests/ts_dump")
    assert facts["types"] == {"timeseries_test.foo_ts": "timeseries"}
    assert facts["counts"]["timeseries_test.foo_ts"] == 10
    dump = DirectoryDump(fixture(f"{TESTDATA}/timeseries_tests/ts_dump"))
    foo_ts = dump.collection("timeseries_test.foo_ts")
    assert foo_ts.data_namespace == Namespace("timeseries_test", "system.buckets.foo_ts")
    assert foo_ts.metadata is not None and foo_ts.metadata.time_field == "ts"

    users = _facts(f"{TESTDATA}/usersdump")
    assert users["special"] == {
        "admin.system.roles": "roles",
        "admin.system.users": "users",
        "admin.system.version": "version",
    }


def test_a_view_is_metadata_without_documents(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "big.metadata.json").write_text(
        '{"options":{"viewOn":"orders","pipeline":[{"$match":{"total":{"$gt":100}}}]},'
        '"indexes":[],"type":"view"}'
    )
    dump = DirectoryDump(tmp_path)
    view = dump.collection("shop.big")
    assert view.type == "view"
    assert view.options["pipeline"] == [{"$match": {"total": {"$gt": 100}}}]
    assert list(dump.documents("shop.big")) == []


def test_preludes_in_the_root_in_a_database_and_gzipped() -> None:
    assert _facts(f"{TESTDATA}/prelude_test/prelude_top_level")["server_version"] == "7.0.16"
    assert _facts(f"{TESTDATA}/prelude_test/prelude_db_target")["server_version"] == "7.0.16"
    gz = _facts(f"{TESTDATA}/prelude_test/prelude_gzip")
    assert gz["server_version"] == "7.0.16"
    assert gz["counts"] == {"test.foo": 1}
    assert _facts(f"{TESTDATA}/prelude_test/server_version_unknown")["server_version"] == "unknown"


def test_legacy_dumps_with_system_indexes() -> None:
    facts = _facts(f"{QA}/dump_with_oplog")
    assert facts["counts"] == {"test.data": 10, ".oplog": 5}
    # A database with metadata files: system.indexes.bson is redundant and ignored.
    assert facts["skipped"] == [
        "test/system.indexes.bson: ignored because the database has .metadata.json files "
        "(as mongorestore does)"
    ]


def test_system_indexes_become_the_index_specs_when_there_is_no_metadata(tmp_path: Path) -> None:
    source = fixture(f"{QA}/dump_with_oplog")
    (tmp_path / "test").mkdir()
    shutil.copy(source / "test" / "data.bson", tmp_path / "test" / "data.bson")
    shutil.copy(source / "test" / "system.indexes.bson", tmp_path / "test" / "system.indexes.bson")
    dump = DirectoryDump(tmp_path)
    (collection,) = dump.collections
    assert collection.namespace == Namespace("test", "data")
    assert collection.indexes == [{"v": 1, "key": {"_id": 1}, "name": "_id_", "ns": "test.data"}]
    assert normalize_indexes(collection.indexes, namespace="test.data").id_index == {
        "key": {"_id": 1},
        "name": "_id_",
    }
    assert dump.count_documents() == {Namespace("test", "data"): 10}


def test_a_partial_index_keeps_its_filter_in_order() -> None:
    dump = DirectoryDump(fixture(f"{QA}/dump_ordered_partial_index"))
    (collection,) = dump.collections
    assert collection.location == "test/foo.metadata.json"  # metadata only, no documents
    spec = collection.indexes[1]
    assert list(spec["partialFilterExpression"]) == [f"a{n}" for n in range(10)]
    assert dump.count_documents() == {Namespace("test", "foo"): 0}


@pytest.mark.parametrize("relative", oracle.discover_loose_bson_files())
def test_every_loose_bson_file_fed_as_a_collection(relative: str, tmp_path: Path) -> None:
    source = fixture(relative)
    (tmp_path / "db").mkdir()
    if source.name.startswith("system.buckets."):
        shutil.copy(source, tmp_path / "db" / source.name)
        (tmp_path / "db" / "other.metadata.json").write_text('{"indexes": []}')
        # mongorestore refuses buckets without their time-series metadata; so do we.
        with pytest.raises(InvalidArchive, match="time-series buckets without"):
            DirectoryDump(tmp_path)
        return
    shutil.copy(source, tmp_path / "db" / "loose.bson")
    metadata = source.with_name(source.name.removesuffix(".bson") + ".metadata.json")
    if metadata.exists():
        shutil.copy(metadata, tmp_path / "db" / "loose.metadata.json")
    else:
        (tmp_path / "db" / "loose.metadata.json").write_text('{"indexes": []}')
    dump = DirectoryDump(tmp_path)
    if source.name in CORRUPT_FRAMING:
        with pytest.raises(InvalidArchive, match=r"db/loose\.bson: (truncated|bad BSON length)"):
            dump.count_documents()
    if source.name in CORRUPT_FRAMING | CORRUPT_CONTENT:
        with pytest.raises(
            InvalidArchive, match=r"db/loose\.bson.*corrupt BSON|truncated|bad BSON"
        ):
            dump.count_documents(validate=True)
        return
    counts = dump.count_documents(validate=True)
    assert counts == {Namespace("db", "loose"): oracle.count_bson_file(source)}


def test_corrupt_content_passes_framing_only_checks() -> None:
    # Honest about the limits: without validate=True only the framing is checked, as
    # mongorestore (and bsondump without --objcheck) do. Both files are sample.bson's four
    # documents with a byte changed inside one of them.
    for name in sorted(CORRUPT_CONTENT):
        data = fixture(f"mongodb-mongo-tools/bsondump/testdata/{name}").read_bytes()
        assert len(list(iter_bson_stream(io.BytesIO(data), name))) == 4
        with pytest.raises(InvalidArchive, match="corrupt BSON document"):
            list(iter_bson_stream(io.BytesIO(data), name, validate=True))


def _json_documents(text: str) -> list[dict[str, object]]:
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while position < len(text.rstrip()):
        while text[position].isspace():
            position += 1
        value, position = decoder.raw_decode(text, position)
        for document in value if isinstance(value, list) else [value]:
            documents.append(json_util.loads(json.dumps(document)))
    return documents


@pytest.mark.parametrize("relative", oracle.discover_oplog_entry_files())
def test_oplog_entries_read_as_their_json_twins_say(relative: str, tmp_path: Path) -> None:
    bson_file = fixture(relative)
    json_file = oracle.json_twin(bson_file)
    shutil.copy(bson_file, tmp_path / "oplog.bson")
    with open_dump(tmp_path) as dump:
        assert dump.collections == ()
        entries = [bson.decode(raw) for raw in dump.oplog_entries(validate=True)]
    assert entries == _json_documents(json_file.read_text())
    assert all("op" in entry and "ns" in entry for entry in entries)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"db/x.bson": b""}, "not a mongodump directory"),
        ({"bad.name/x.metadata.json": b"{}"}, "invalid database name 'bad.name'"),
        ({"db/x.bson": b"", "db/x.bson.gz": b"", "db/x.metadata.json": b"{}"}, "both"),
        ({"db/x%zz.metadata.json": b"{}"}, "malformed %-escape"),
        (
            {"db/x.metadata.json": b'{"indexes": [{"key": {"a": 1}}]}'},
            "lacks a 'key' object or a 'name'",
        ),
        ({"db/x.metadata.json": b"[1, 2]"}, "not a JSON object"),
        ({"prelude.json": b"{", "db/x.bson": b""}, "invalid prelude JSON"),
        (
            {"db/x.metadata.json": b'{"options":{"timeseries":{}},"type":"timeseries"}'},
            "without options.timeseries.timeField",
        ),
        (
            {("db/" + "a" * 200 + "%24" + "h" * 35 + ".bson"): b""},
            "truncated collection name needs the collectionName",
        ),
    ],
)
def test_things_that_are_not_a_good_dump_are_refused(
    layout: dict[str, bytes], message: str, tmp_path: Path
) -> None:
    for name, content in layout.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    with pytest.raises(InvalidArchive, match=message) as refused:
        DirectoryDump(tmp_path)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "relative",
    [
        f"{TESTDATA}/oplogs",  # single oplog entries in a bson/ and a json/ folder
        f"{TESTDATA}/timeseries_tests/ts_single_buckets_file",
        "mongodb-mongo-tools/mongodump/testdata",
        "mongodb-mongo-tools/bsondump/testdata",
    ],
)
def test_fixture_folders_that_are_not_dumps_are_refused(relative: str) -> None:
    with pytest.raises(InvalidArchive, match="not a mongodump directory"):
        open_dump(fixture(relative))


# --- the legacy tar.gz ------------------------------------------------------------------------

PREFIX = "backups/mongodb/backup_20240501_020000"


def _tar(
    tmp_path: Path, root: Path, mode: Literal["w", "w:gz"] = "w:gz", name: str = "backup.tar.gz"
) -> Path:
    path = tmp_path / name
    with tarfile.open(path, mode) as tar:
        tar.add(root, arcname=PREFIX)
    return path


@pytest.mark.parametrize(
    "relative",
    [
        f"{TESTDATA}/testdirs",
        f"{TESTDATA}/timeseries_tests/ts_dump_with_oplog",
        f"{TESTDATA}/prelude_test/prelude_gzip",
        f"{TESTDATA}/specialcharacter",
        f"{QA}/dump_with_soft_links",
    ],
)
def test_a_tarred_dump_reads_like_the_directory(relative: str, tmp_path: Path) -> None:
    root = fixture(relative)
    directory = DirectoryDump(root)
    with open_dump(_tar(tmp_path, root)) as tarred:
        assert tarred.kind == "tar+gzip"
        assert tarred.collections == directory.collections
        assert tarred.oplog == directory.oplog
        assert tarred.server_version == directory.server_version
        assert tarred.count_documents(validate=True) == directory.count_documents()
        got = sorted((str(c.namespace), d) for c, d in tarred.iter_documents())
        assert got == sorted((str(c.namespace), d) for c, d in directory.iter_documents())
        for collection in directory.collections:
            assert list(tarred.documents(collection.namespace)) == list(
                directory.documents(collection.namespace)
            )


def test_tar_variants_plain_zstd_and_a_stream(tmp_path: Path) -> None:
    root = fixture(f"{TESTDATA}/oplogdump")
    expected = DirectoryDump(root).count_documents()
    plain = _tar(tmp_path, root, "w", "backup.tar")
    zst = tmp_path / "backup.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    with open_dump(plain) as dump:
        assert dump.kind == "tar"
        assert dump.count_documents() == expected
    with open_dump(zst) as dump:
        assert dump.kind == "tar+zstd"
        assert dump.count_documents() == expected
    stream = OneWayStream(_tar(tmp_path, root).read_bytes(), step=777)
    with open_dump(stream) as dump:  # type: ignore[arg-type]
        assert dump.kind == "tar+gzip"
        assert dump.count_documents() == expected
        assert dump.count_documents() == expected  # spooled, so it can be read again


def test_a_damaged_tar_is_refused(tmp_path: Path) -> None:
    data = _tar(tmp_path, fixture(f"{TESTDATA}/testdirs")).read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        path = tmp_path / f"cut{cut}.tar.gz"
        path.write_bytes(data[:cut])
        with (
            pytest.raises(InvalidArchive, match=r"tar|decompress|truncated"),
            open_dump(path) as dump,
        ):
            dump.count_documents()


def test_a_tar_with_two_dumps_or_none_is_refused(tmp_path: Path) -> None:
    two = tmp_path / "two.tar.gz"
    with tarfile.open(two, "w:gz") as tar:
        tar.add(fixture(f"{TESTDATA}/foodump"), arcname="a")
        tar.add(fixture(f"{TESTDATA}/oplogdump"), arcname="b")
    with pytest.raises(InvalidArchive, match="more than one dump"):
        open_dump(two)
    none = tmp_path / "none.tar.gz"
    with tarfile.open(none, "w:gz") as tar:
        tar.add(fixture("mongodb-mongo-tools/bsondump/testdata"), arcname="x")
    with pytest.raises(InvalidArchive, match="holds no mongodump directory"):
        open_dump(none)
