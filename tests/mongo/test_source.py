"""open_dump's detection of what it is given, and inspect_dump's summary."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from dr_runbooks.errors import InvalidArchive
from dr_runbooks.mongo import ArchiveDump, DirectoryDump, TarDump, inspect_dump, open_dump
from tests.mongo.test_archive import OneWayStream, write_round_trip_archive
from tests.shared_data import shared_data

TESTDATA = ("mongodb-mongo-tools", "mongorestore", "testdata")


def test_each_kind_is_recognised_by_its_content(tmp_path: Path) -> None:
    plain = shared_data(*TESTDATA, "dump-w-oplog.archive")
    zst = tmp_path / "dump.bin"  # no telling suffix on purpose
    zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    tar = tmp_path / "backup_20240501_020000.tar.gz"
    with tarfile.open(tar, "w:gz") as archive:
        archive.add(shared_data(*TESTDATA, "oplogdump"), arcname="backups/mongodb/x")
    cases = [
        (plain, "archive", ArchiveDump),
        (shared_data("argon-lab-argon", "dump.archive"), "archive+gzip", ArchiveDump),
        (zst, "archive+zstd", ArchiveDump),
        (shared_data(*TESTDATA, "oplogdump"), "directory", DirectoryDump),
        (tar, "tar+gzip", TarDump),
    ]
    for path, kind, cls in cases:
        with open_dump(path) as dump:
            assert (dump.kind, type(dump)) == (kind, cls), path
            assert dump.count_documents()  # and it reads


def test_the_same_archive_in_every_wrapping_gives_the_same_documents(tmp_path: Path) -> None:
    raw = io.BytesIO()
    write_round_trip_archive(raw)
    data = raw.getvalue()
    wrapped = {
        "archive": data,
        "archive+gzip": gzip.compress(data),
        "archive+zstd": zstandard.ZstdCompressor(level=3).compress(data),
    }
    results = []
    for kind, content in wrapped.items():
        path = tmp_path / kind
        path.write_bytes(content)
        for source in (path, OneWayStream(content, step=500)):
            with open_dump(source) as dump:  # type: ignore[arg-type]
                assert dump.kind == kind
                results.append([(str(c.namespace), d) for c, d in dump.iter_documents()])
    assert all(result == results[0] for result in results)
    assert len(results[0]) == 300 + 12 + 1 + 3 + 7


def test_a_path_can_be_read_again_but_a_stream_only_once(tmp_path: Path) -> None:
    path = shared_data(*TESTDATA, "dump-w-oplog.archive")
    with open_dump(path) as dump:
        assert len(list(dump.documents("test.foo"))) == 25
        assert len(list(dump.oplog_entries())) == 18  # re-reads the file
    with open_dump(OneWayStream(path.read_bytes())) as dump:  # type: ignore[arg-type]
        assert len(list(dump.documents("test.foo"))) == 25
        with pytest.raises(RuntimeError, match="read already"):
            list(dump.oplog_entries())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"starts with nothing"),
        (b"hello, world\n", r"neither a mongodump archive nor a tarred dump \(starts with 68 65"),
        (gzip.compress(b"just text"), "gzip data that holds neither"),
        (zstandard.ZstdCompressor().compress(b"x" * 600), "zstd data that holds neither"),
        (b"\x1f\x8b\x08\x00garbage-garbage-garbage", "cannot decompress"),
    ],
)
def test_what_is_not_a_dump_is_refused(content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "thing"
    path.write_bytes(content)
    with pytest.raises(InvalidArchive, match=message):
        open_dump(path)
    with pytest.raises(InvalidArchive, match=message):
        open_dump(io.BytesIO(content))


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArchive, match="no such file or directory"):
        open_dump(tmp_path / "nope")


def test_inspect_summarises_an_archive_with_an_oplog() -> None:
    summary = inspect_dump(shared_data(*TESTDATA, "dump-w-oplog.archive"), validate=True)
    assert json.loads(json.dumps(summary)) == summary  # JSON-able as it is
    assert summary["kind"] == "archive"
    assert summary["server_version"] == "4.0.2"
    foo = next(c for c in summary["collections"] if c["namespace"] == "test.foo")
    assert foo == {
        "namespace": "test.foo",
        "db": "test",
        "collection": "foo",
        "type": "collection",
        "special": None,
        "documents": 25,
        "bytes": 725,
        "indexes": ["_id_"],
        "options": {},
        "uuid": "d6b7b0bd5dce41c498aa03f115533254",
    }
    assert summary["oplog"] == {
        "entries": 18,
        "bytes": 2760,
        "first_ts": {"t": 1538587928, "i": 1},
        "last_ts": {"t": 1538587943, "i": 1},
    }


def test_inspect_summarises_timeseries_and_ttl_options() -> None:
    summary = inspect_dump(shared_data(*TESTDATA, "timeseries_tests", "dump.archive"))
    json.dumps(summary)
    foo_ts = next(c for c in summary["collections"] if c["collection"] == "foo_ts")
    assert foo_ts["type"] == "timeseries"
    assert foo_ts["documents"] == 10
    assert foo_ts["options"]["timeseries"] == {
        "timeField": "ts",
        "metaField": "meta",
        "granularity": "seconds",
        "bucketMaxSpanSeconds": 3600,
    }
    assert foo_ts["indexes"] == ["meta.device_1", "ts_1_meta.device_1"]

    directory = inspect_dump(shared_data(*TESTDATA, "testdirs"))
    assert "badfile.txt: a top-level file that is not the oplog" in directory["skipped"]
    assert directory["oplog"] == {"entries": 0, "bytes": 0, "first_ts": None, "last_ts": None}


def test_inspect_refuses_a_broken_dump() -> None:
    with pytest.raises(InvalidArchive, match="not a valid time-series bucket"):
        inspect_dump(shared_data(*TESTDATA, "timeseries_tests", "ts_dump_invalid_buckets"))
