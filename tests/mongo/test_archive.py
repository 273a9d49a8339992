"""The archive reader against real mongodump archives, damaged ones, and our own writer."""

from __future__ import annotations

import datetime
import gzip
import io
import os
import random
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import bson
import pytest
import zstandard
from bson.raw_bson import RawBSONDocument

from dr_runbooks.errors import InvalidArchive
from dr_runbooks.mongo import (
    OPLOG_NAMESPACE,
    ArchiveHeader,
    ArchivePrelude,
    ArchiveReader,
    ArchiveWriter,
    Namespace,
    open_dump,
)
from dr_runbooks.mongo._stream import _crc64_python, crc64, to_int64
from tests.mongo import oracle
from tests.shared_data import shared_data

BROKEN_ARCHIVES = {
    # mongodump r4.2.2 wrote an index key containing quotes without escaping them.
    "mongodb-mongo-tools/mongorestore/testdata/bad-format.archive": "invalid metadata JSON",
}

# Facts about the real archives, established by decoding them independently (oracle.py).
ARCHIVE_FACTS: dict[str, dict[str, Any]] = {
    "mongodb-mongo-tools/mongorestore/testdata/test.bar.archive": {
        "server_version": "3.4.3",
        "counts": {"test.bar": 1, "admin.system.version": 1},
        "oplog": None,
    },
    "mongodb-mongo-tools/mongorestore/testdata/dump-w-oplog.archive": {
        "server_version": "4.0.2",
        "counts": {"test.foo": 25, "admin.system.version": 1},
        "oplog": 18,
    },
    "mongodb-mongo-tools/mongorestore/testdata/timeseries_tests/dump.archive": {
        "server_version": "5.0.0-rc0",
        "counts": {
            "admin.system.version": 1,
            "admin.system.views": 0,
            "timeseries_test.foo_ts": 10,
        },
        "oplog": None,
    },
    "argon-lab-argon/dump.archive": {
        "server_version": "4.0.2",
        "counts": {"test.test": 1},
        "oplog": None,
    },
    "argon-lab-argon/data/base_dump.archive": {
        "server_version": "4.0.2",
        "counts": {"test.test": 2},
        "oplog": None,
    },
}


class OneWayStream(io.RawIOBase):
    """A stream that cannot seek and returns short reads, like a pipe or a decompressor."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self._data = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), self._step))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def fixture_path(relative: str) -> Path:
    if relative == oracle.MISSING:
        shared_data(oracle.MONGO_TOOLS)
    return shared_data(*relative.split("/"))


def read_all(data: bytes) -> tuple[ArchiveReader, dict[Namespace, list[bytes]]]:
    reader = ArchiveReader(io.BytesIO(data), where="test")
    documents: dict[Namespace, list[bytes]] = {}
    for namespace, document in reader.documents():
        documents.setdefault(namespace, []).append(document)
    return reader, documents


@pytest.mark.parametrize("relative", oracle.discover_archives())
def test_every_archive_fixture_reads_as_the_independent_parse_says(relative: str) -> None:
    path = fixture_path(relative)
    data = oracle.read_maybe_gzip(path)
    if relative in BROKEN_ARCHIVES:
        with pytest.raises(InvalidArchive, match=BROKEN_ARCHIVES[relative]):
            read_all(data)
        return
    expected = oracle.parse_archive(data)
    reader, documents = read_all(data)

    assert reader.header.version == expected.header["version"] == "0.1"
    assert reader.header.server_version == expected.header["server_version"]
    assert [str(p.namespace) for p in reader.preludes] == [
        f"{p['db']}.{p['collection']}" for p in expected.preludes
    ]
    eof_namespaces = {
        f"{b.header['db']}.{b.header['collection']}" for b in expected.blocks if b.header["EOF"]
    }
    assert {str(ns) for ns in reader.stats} == eof_namespaces
    for namespace, stats in reader.stats.items():
        raw = expected.documents(str(namespace))
        assert documents.get(namespace, []) == raw  # byte for byte, in order
        assert stats.documents == len(raw) == len([bson.decode(d) for d in raw])
        assert (
            stats.crc == expected.eof_crc(str(namespace)) == oracle.crc64_xz_bitwise(b"".join(raw))
        )


@pytest.mark.parametrize("relative", sorted(ARCHIVE_FACTS))
def test_known_facts_of_the_real_archives(relative: str) -> None:
    facts = ARCHIVE_FACTS[relative]
    with open_dump(fixture_path(relative)) as dump:
        assert dump.server_version == facts["server_version"]
        counts = {str(ns): n for ns, n in dump.count_documents(validate=True).items()}
    oplog = counts.pop(".oplog", None)
    assert counts == facts["counts"]
    assert oplog == facts["oplog"]


def test_the_crc_is_go_crc64_ecma_and_not_iso() -> None:
    archive = oracle.parse_archive(
        fixture_path("mongodb-mongo-tools/mongorestore/testdata/dump-w-oplog.archive").read_bytes()
    )
    documents = b"".join(archive.documents("test.foo"))
    assert to_int64(crc64(documents)) == archive.eof_crc("test.foo")

    iso = 0xD800000000000000  # CRC-64/GO-ISO, the other table Go's hash/crc64 offers
    crc = (1 << 64) - 1
    for byte in documents:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (iso if crc & 1 else 0)
    assert to_int64(crc ^ ((1 << 64) - 1)) != archive.eof_crc("test.foo")


def test_fast_and_fallback_crc_agree_with_the_definition() -> None:
    data = random.Random(7).randbytes(3000)
    assert crc64(b"123456789") == _crc64_python(b"123456789") == 0x995DC9BBDF1939FA
    expected = oracle.crc64_xz_bitwise(data)
    assert to_int64(crc64(data)) == to_int64(_crc64_python(data)) == expected
    assert to_int64(crc64(data[1000:], crc64(data[:1000]))) == expected  # incremental


def _cut_points(data: bytes) -> list[int]:
    if len(data) <= 5000:
        return list(range(len(data)))
    return sorted({*range(0, len(data), len(data) // 400), *range(len(data) - 64, len(data))})


@pytest.mark.parametrize(
    "relative", [r for r in oracle.discover_archives() if r not in BROKEN_ARCHIVES]
)
def test_an_archive_cut_anywhere_is_refused_as_truncated(relative: str) -> None:
    data = oracle.read_maybe_gzip(fixture_path(relative))
    for cut in _cut_points(data):
        with pytest.raises(InvalidArchive) as refused:
            read_all(data[:cut])
        message = str(refused.value)
        assert "truncated" in message or (cut < 4 and "not a mongodump archive" in message), (
            cut,
            message,
        )
        assert "\n" not in message


def test_a_cut_compressed_archive_is_refused(tmp_path: Path) -> None:
    compressed = fixture_path("argon-lab-argon/data/base_dump.archive").read_bytes()
    for cut in (len(compressed) - 9, len(compressed) // 2, 40):
        path = tmp_path / f"cut{cut}.archive.gz"
        path.write_bytes(compressed[:cut])
        with pytest.raises(InvalidArchive, match=r"decompress|truncated"), open_dump(path) as dump:
            dump.count_documents()


def test_a_flipped_byte_inside_a_document_is_a_crc_mismatch() -> None:
    data = fixture_path("mongodb-mongo-tools/mongorestore/testdata/test.bar.archive").read_bytes()
    (document,) = oracle.parse_archive(data).documents("test.bar")
    at = data.index(document) + document.index(b"bar\x00")  # inside the string value "bar"
    damaged = data[:at] + b"c" + data[at + 1 :]
    with pytest.raises(InvalidArchive, match=r"CRC mismatch for test\.bar"):
        read_all(damaged)


def test_a_flipped_byte_in_a_length_is_a_framing_error() -> None:
    data = fixture_path("mongodb-mongo-tools/mongorestore/testdata/test.bar.archive").read_bytes()
    (document,) = oracle.parse_archive(data).documents("test.bar")
    at = data.index(document) + 3  # the high byte of the document's int32 length
    damaged = data[:at] + b"\x40" + data[at + 1 :]
    with pytest.raises(InvalidArchive, match="bad BSON length"):
        read_all(damaged)


def _archive(*blocks: bytes, preludes: tuple[ArchivePrelude, ...] = ()) -> bytes:
    out = io.BytesIO()
    ArchiveWriter(out, preludes or (ArchivePrelude.for_collection("db.c", {"indexes": []}),))
    return out.getvalue() + b"".join(blocks)


def _header(db: str, collection: str, eof: bool = False, crc: int = 0) -> bytes:
    return bson.encode({"db": db, "collection": collection, "EOF": eof, "CRC": bson.Int64(crc)})


TERMINATOR = b"\xff\xff\xff\xff"
DOC = bson.encode({"_id": 1})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04" + bytes(60), "not a mongodump archive"),
        (b"\x6d\xe2\x99\x81" + TERMINATOR, "a terminator where the header should be"),
        (b"\x6d\xe2\x99\x81" + b"\x05\x00\x00\x00\x01", "does not end with a NUL byte"),
        (_archive(_header("x", "y") + DOC + TERMINATOR), "no collection metadata in the prelude"),
        (_archive(TERMINATOR), "two terminators in a row"),
        (
            _archive(
                _header("db", "c", True) + TERMINATOR,
                _header("db", "c") + DOC + TERMINATOR,
            ),
            "after its EOF block",
        ),
        (_archive(_header("db", "c", True) + DOC + TERMINATOR), "documents follow the EOF block"),
        (_archive(_header("db", "c") + DOC + TERMINATOR), r"truncated.*before the end of db\.c"),
        (
            _archive(
                _header("db", "c") + DOC + TERMINATOR, _header("db", "c", True, 5) + TERMINATOR
            ),
            "CRC mismatch",
        ),
    ],
)
def test_malformed_archives_are_refused_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArchive, match=message) as refused:
        read_all(data)
    assert "\n" not in str(refused.value)


def test_an_invalid_timeseries_bucket_in_an_archive_is_refused() -> None:
    prelude = ArchivePrelude.for_collection(
        "m.cpu",
        {"options": {"timeseries": {"timeField": "ts"}}, "indexes": [], "type": "timeseries"},
    )
    out = io.BytesIO()
    with ArchiveWriter(out, [prelude], header=ArchiveHeader(server_version="7.0.2")) as writer:
        writer.write_collection("m.cpu", [{"_id": bson.ObjectId(), "x": 1}])
    with pytest.raises(InvalidArchive, match=r"m\.system\.buckets\.cpu document 0.*not a valid"):
        read_all(out.getvalue())


# --- our writer ---------------------------------------------------------------------------

EVERY_KIND_OF_INDEX = [
    {"v": 2, "key": {"_id": 1}, "name": "_id_"},
    {"v": 2, "key": {"customer": 1, "placed": -1}, "name": "customer_1_placed_-1"},
    {"v": 2, "key": {"sku": 1}, "name": "sku_1", "unique": True, "sparse": True},
    {"v": 2, "key": {"placed": 1}, "name": "placed_1", "expireAfterSeconds": 3600},
    {
        "v": 2,
        "key": {"status": 1},
        "name": "open_orders",
        "partialFilterExpression": {"status": {"$eq": "open"}, "total": {"$gt": 10}},
    },
    {"v": 2, "key": {"where": "2dsphere"}, "name": "where_2dsphere", "2dsphereIndexVersion": 3},
    {
        "v": 2,
        "key": {"_fts": "text", "_ftsx": 1},
        "name": "notes_text",
        "weights": {"notes": 10, "title": 2},
        "default_language": "english",
        "textIndexVersion": 3,
    },
    {"v": 2, "key": {"customer": "hashed"}, "name": "customer_hashed"},
    {
        "v": 2,
        "key": {"title": 1},
        "name": "title_fr",
        "collation": {"locale": "fr", "strength": 2},
    },
    {"v": 2, "key": {"attributes.$**": 1}, "name": "attributes_wildcard"},
]


def orders(count: int) -> list[bytes]:
    start = datetime.datetime(2024, 5, 1)
    return [
        bson.encode(
            {
                "_id": bson.ObjectId(),
                "customer": f"c{n % 17}",
                "placed": start + datetime.timedelta(minutes=n),
                "total": bson.Decimal128(f"{n}.50"),
                "where": {"type": "Point", "coordinates": [2.35, 48.85]},
                "notes": "x" * (n % 50),
            }
        )
        for n in range(count)
    ]


def buckets(count: int) -> list[bytes]:
    start = datetime.datetime(2024, 5, 1)
    return [
        bson.encode(
            {
                "_id": bson.ObjectId(),
                "control": {
                    "version": 1,
                    "min": {"ts": start, "load": 0.1},
                    "max": {"ts": start + datetime.timedelta(minutes=n), "load": 0.9},
                },
                "meta": {"host": f"h{n}"},
                "data": {"ts": {"0": start}, "load": {"0": 0.5}},
            }
        )
        for n in range(count)
    ]


ROUND_TRIP_METADATA: dict[str, dict[str, Any]] = {
    "shop.orders": {"options": {}, "indexes": EVERY_KIND_OF_INDEX, "uuid": "a" * 32},
    "shop.empty": {"options": {"capped": True, "size": bson.Int64(1 << 20)}, "indexes": []},
    "shop.big_orders": {
        "options": {"viewOn": "orders", "pipeline": [{"$match": {"total": {"$gt": 100}}}]},
        "indexes": [],
        "type": "view",
    },
    "metrics.cpu": {
        "options": {
            "timeseries": {"timeField": "ts", "metaField": "meta", "granularity": "seconds"}
        },
        "indexes": [{"v": 2, "key": {"meta": 1, "ts": 1}, "name": "meta_1_ts_1"}],
        "type": "timeseries",
    },
    "admin.system.users": {"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]},
    "odd.cafés/€ x": {"options": {"collation": {"locale": "de"}}, "indexes": []},
}


def write_round_trip_archive(out: io.BytesIO) -> dict[str, list[bytes]]:
    """Write the round-trip archive (interleaved the way a concurrent mongodump does)."""
    written = {
        "shop.orders": orders(300),
        "metrics.system.buckets.cpu": buckets(12),
        "admin.system.users": [bson.encode({"_id": "admin.ops", "user": "ops", "db": "admin"})],
        "odd.cafés/€ x": orders(3),
        ".oplog": [
            bson.encode({"ts": bson.Timestamp(1714521600 + n, 1), "op": "n", "ns": "", "o": {}})
            for n in range(7)
        ],
    }
    preludes = [ArchivePrelude.for_collection(ns, md) for ns, md in ROUND_TRIP_METADATA.items()]
    header = ArchiveHeader(server_version="7.0.14", tool_version="dr-runbooks test")
    with ArchiveWriter(out, [*preludes, ArchivePrelude.oplog()], header=header) as writer:
        writer.write_segment("shop.orders", written["shop.orders"][:120])
        writer.write_collection("admin.system.users", written["admin.system.users"])
        writer.write_segment("metrics.cpu", written["metrics.system.buckets.cpu"][:5])
        writer.write_segment("shop.orders", written["shop.orders"][120:])
        writer.write_segment("metrics.cpu", written["metrics.system.buckets.cpu"][5:])
        writer.end_namespace("shop.orders")
        writer.end_namespace("metrics.cpu")
        writer.write_collection("shop.empty", [])
        writer.write_collection("odd.cafés/€ x", (bson.decode(d) for d in written["odd.cafés/€ x"]))
        writer.write_oplog(RawBSONDocument(d) for d in written[".oplog"])
    return written


def test_round_trip_keeps_every_byte_and_all_metadata() -> None:
    out = io.BytesIO()
    written = write_round_trip_archive(out)

    reader, documents = read_all(out.getvalue())
    assert {str(ns): docs for ns, docs in documents.items()} == written
    assert reader.header == ArchiveHeader(
        concurrent_collections=1, server_version="7.0.14", tool_version="dr-runbooks test"
    )
    by_namespace = {str(p.namespace): p for p in reader.preludes}
    assert set(by_namespace) == {*ROUND_TRIP_METADATA, ".oplog"}
    for namespace, metadata in ROUND_TRIP_METADATA.items():
        parsed = by_namespace[namespace].metadata
        assert parsed is not None
        assert parsed.options == metadata["options"]
        assert parsed.indexes == metadata["indexes"]
        assert [list(i["key"]) for i in parsed.indexes] == [
            list(i["key"])
            for i in metadata["indexes"]  # compound key order kept
        ]
    assert by_namespace["shop.big_orders"].kind == "view"
    assert by_namespace["metrics.cpu"].kind == "timeseries"
    assert by_namespace[".oplog"].metadata is None
    assert reader.stats[Namespace("shop", "big_orders")].documents == 0
    assert reader.stats[Namespace("shop", "empty")].documents == 0

    with open_dump(io.BytesIO(out.getvalue())) as dump:
        assert dump.collection("admin.system.users").special == "users"
        assert dump.collection("metrics.cpu").data_namespace == Namespace(
            "metrics", "system.buckets.cpu"
        )
        assert dump.oplog is not None and dump.oplog.namespace == OPLOG_NAMESPACE
        assert [d for _, d in dump.iter_documents() if _.special == "oplog"] == written[".oplog"]


def test_writer_output_follows_the_spec_byte_for_byte() -> None:
    out = io.BytesIO()
    written = write_round_trip_archive(out)
    archive = oracle.parse_archive(out.getvalue())  # asserts magic, terminators, framing

    assert archive.header == {
        "concurrent_collections": 1,
        "version": "0.1",
        "server_version": "7.0.14",
        "tool_version": "dr-runbooks test",
    }
    assert archive.header_raw[4:5] == b"\x10"  # concurrent_collections is an int32
    assert [p["type"] for p in archive.preludes] == [
        "collection",
        "collection",
        "view",
        "timeseries",
        "collection",
        "collection",
        "",
    ]
    for block in archive.blocks:
        assert list(block.header) == ["db", "collection", "EOF", "CRC"]
        assert isinstance(block.header["CRC"], bson.Int64)
        if not block.header["EOF"]:
            assert block.header["CRC"] == 0
    for namespace, documents in written.items():
        assert archive.documents(namespace) == documents
        assert archive.eof_crc(namespace) == oracle.crc64_xz_bitwise(b"".join(documents))
    # Empty namespaces and views get an empty segment, then the EOF, as mongodump writes them.
    for namespace in ("shop.empty", "shop.big_orders"):
        blocks = [
            b for b in archive.blocks if f"{b.header['db']}.{b.header['collection']}" == namespace
        ]
        assert [(b.header["EOF"], len(b.documents)) for b in blocks] == [(False, 0), (True, 0)]
        assert blocks[1].header["CRC"] == 0
    # Interleaving: shop.orders was written in two segments around other namespaces.
    order = [f"{b.header['db']}.{b.header['collection']}" for b in archive.blocks]
    assert order[:3] == ["shop.orders", "admin.system.users", "admin.system.users"]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_reading_from_a_one_way_decompressing_stream(compression: str) -> None:
    out = io.BytesIO()
    written = write_round_trip_archive(out)
    stream: IO[bytes]
    if compression == "gzip":
        packed = gzip.compress(out.getvalue())
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=OneWayStream(packed)))
    else:
        packed = zstandard.ZstdCompressor().compress(out.getvalue())
        one_way = cast(IO[bytes], OneWayStream(packed, step=333))
        stream = cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(one_way))
    reader = ArchiveReader(cast(BinaryIO, stream), where=compression)
    got: dict[str, list[bytes]] = {}
    for namespace, document in reader.documents():
        got.setdefault(str(namespace), []).append(document)
    assert got == written
    with pytest.raises(RuntimeError, match="only be read once"):
        next(reader.documents())


def test_writer_refuses_misuse() -> None:
    declared = [
        ArchivePrelude.for_collection("a.b", {"indexes": []}),
        ArchivePrelude.for_collection("a.v", {"options": {"viewOn": "b", "pipeline": []}}),
    ]
    writer = ArchiveWriter(io.BytesIO(), declared)
    with pytest.raises(ValueError, match="not declared"):
        writer.write_collection("a.other", [])
    with pytest.raises(ValueError, match="is a view"):
        writer.write_collection("a.v", [DOC])
    with pytest.raises(InvalidArchive, match="not a BSON document"):
        writer.write_segment("a.b", [DOC[:-1] + b"\x01"])
    with pytest.raises(ValueError, match=r"never completed: a\.b"):
        writer.close()
    writer.end_namespace("a.b")
    with pytest.raises(ValueError, match="already complete"):
        writer.write_segment("a.b", [DOC])
    writer.close()  # closes the view by itself


def test_metadata_written_by_the_writer_is_canonical_extended_json() -> None:
    prelude = ArchivePrelude.for_collection("a.b", ROUND_TRIP_METADATA["shop.empty"])
    assert '"size": {"$numberLong": "1048576"}' in prelude.metadata_json
    assert prelude.metadata is not None
    assert isinstance(prelude.metadata.options["size"], bson.Int64)


def test_unknown_header_and_prelude_fields_survive_a_round_trip() -> None:
    header = ArchiveHeader(server_version="8.0.1", extra={"flavor": "percona"})
    prelude = ArchivePrelude(Namespace("a", "b"), '{"indexes": []}', 0, "collection", {"x": 7})
    out = io.BytesIO()
    with ArchiveWriter(out, [prelude], header=header) as writer:
        writer.write_collection("a.b", [])
    reader, _ = read_all(out.getvalue())
    assert reader.header == header
    assert reader.preludes == (prelude,)


def test_documents_up_to_the_server_limit_pass_and_larger_lengths_do_not() -> None:
    big = bson.encode({"_id": 1, "blob": bson.Binary(os.urandom(16 * 1024 * 1024 - 64))})
    data = _archive(
        _header("db", "c") + big + TERMINATOR,
        _header("db", "c", True, to_int64(crc64(big))) + TERMINATOR,
    )
    _, documents = read_all(data)
    assert documents[Namespace("db", "c")] == [big]
    oversized = (17 * 1024 * 1024).to_bytes(4, "little")
    with pytest.raises(InvalidArchive, match="bad BSON length 17825792"):
        read_all(_archive(_header("db", "c") + oversized + bytes(100)))
