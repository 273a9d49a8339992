"""Every real mongodump fixture restored (or refused, before anything is written)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from dr_runbooks.errors import BadInput, InvalidArchive
from dr_runbooks.mongo import UnrestorableIndex, open_dump
from dr_runbooks.mongo.fetch import fetch_backup
from dr_runbooks.mongo.oplog import replay_oplog
from dr_runbooks.mongo.plan import plan_restore
from dr_runbooks.mongo.side import restore_into_side
from dr_runbooks.mongo.swap import swap_database
from dr_runbooks.mongo.verification import verify_backup
from dr_runbooks.mongo.verify import verify_restore
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from tests.mongo import oracle
from tests.mongodb_engine.fake import FakeServer
from tests.shared_data import shared_data

TESTDATA = "mongodb-mongo-tools/mongorestore/testdata"

# Broken on purpose upstream: refused with these messages, before the server is touched.
REFUSED: dict[str, tuple[type[Exception], str]] = {
    f"{TESTDATA}/bad-format.archive": (InvalidArchive, "invalid metadata JSON"),
    f"{TESTDATA}/timeseries_tests/ts_dump_invalid_buckets": (
        InvalidArchive,
        "not a valid time-series bucket",
    ),
    f"{TESTDATA}/coll_with_geohaystack_index": (UnrestorableIndex, "geoHaystack"),
}
# Valid dumps that hold only the server's own databases: there is nothing to restore.
NOTHING_TO_RESTORE = {
    f"{TESTDATA}/dump_local_oplog": "only local",
    f"{TESTDATA}/usersdump": "only admin",
}


def _fixture(relative: str) -> Path:
    if relative == oracle.MISSING:
        shared_data(oracle.MONGO_TOOLS)
    return shared_data(*relative.split("/"))


@pytest.mark.parametrize("relative", oracle.discover_archives() + oracle.discover_directory_dumps())
def test_every_fixture_is_restored_with_its_counts_or_refused(relative: str) -> None:
    path = _fixture(relative)
    target = FakeServer()
    if relative in REFUSED:
        error, message = REFUSED[relative]
        with pytest.raises(error, match=message), open_dump(path) as dump:
            plan_restore(dump, "fx")
        assert target.calls == []
        return
    with open_dump(path) as dump:
        if relative in NOTHING_TO_RESTORE:
            with pytest.raises(BadInput, match=NOTHING_TO_RESTORE[relative]):
                plan_restore(dump, "fx")
            return
        plan = plan_restore(dump, "fx")
        client = target.client()
        with_oplog = dump.oplog is not None
        # With an oplog, indexes wait for the replay (as in the runbook).
        restore_into_side(client, dump, plan, indexes=not with_oplog)
        assert verify_restore(client, plan, indexes=not with_oplog)["problems"] == []
        replayed = replay_oplog(client, dump, plan, metadata_indexes=with_oplog)
        assert verify_restore(client, plan, counts=False)["problems"] == []
        for database in plan.databases:
            if target.collections(database.side):
                swap_database(client, database.target, database.side, "20240501T000000Z")

    for database in plan.databases:
        for collection in database.collections:
            if collection.type == "view":
                continue
            restored = target.mock[database.target][collection.data_name].count_documents({})
            if dump.oplog is None:  # without a replay, the target holds exactly the dump
                assert restored == collection.expected_documents, collection.name
            names = {i["name"] for i in client[database.target][collection.name].list_indexes()}
            assert set(collection.expected_indexes) <= names
    if path.is_file():  # the counts agree with an independent parse of the archive
        parsed = oracle.parse_archive(oracle.read_maybe_gzip(path))
        for database in plan.databases:
            for collection in database.collections:
                if collection.type != "view":
                    namespace = f"{database.source}.{collection.data_name}"
                    assert collection.expected_documents == len(parsed.documents(namespace))
    if plan.oplog_entries:
        assert replayed["applied"] + sum(replayed["skipped"].values()) > 0


def test_an_oplog_dump_replays_into_the_restored_collection() -> None:
    path = _fixture(f"{TESTDATA}/../../test/qa-tests/jstests/restore/testdata/dump_with_oplog")
    target = FakeServer()
    with open_dump(path) as dump:
        plan = plan_restore(dump, "fx")
        client = target.client()
        restore_into_side(client, dump, plan)
        before = target.mock["test__restore_fx"]["data"].count_documents({})
        result = replay_oplog(client, dump, plan)
    assert before == 10
    assert result["applied"] == 5
    assert target.mock["test__restore_fx"]["data"].count_documents({}) == 15


def test_the_plans_legacy_tar_gz_is_restored_from_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "mongodb-backups").mkdir(parents=True)
    legacy = root / "mongodb-backups" / "backup_20240501_030000.tar.gz"
    with tarfile.open(legacy, "w:gz") as tar:  # what the plan's script does
        tar.add(_fixture(f"{TESTDATA}/testdirs"), arcname="backups/mongodb/backup_20240501_030000")
    repository = Repository(LocalStore(root), "legacy")

    backup = repository.find("mongodb", "app", "db1")
    assert backup.legacy and backup.id == "backup_20240501_030000.tar.gz"
    target = FakeServer()
    fetched = fetch_backup(repository, backup)
    with fetched.open() as dump:
        assert dump.kind == "tar+gzip"
        plan = plan_restore(dump, backup.id, {"db1": "db1"})
        client = target.client()
        restore_into_side(client, dump, plan)
        assert verify_restore(client, plan)["problems"] == []
        side = plan.databases[0].side
        assert "." not in side and side.startswith("db1__restore_backup_20240501_030000")
        swap_database(client, "db1", side, "20240601T000000Z")
    fetched.cleanup()
    assert not fetched.path.exists()
    counts = {name: target.mock["db1"][name].count_documents({}) for name in ("c1", "c2", "c4")}
    assert counts == {"c1": 100, "c2": 0, "c4": 10}

    result = verify_backup(FakeServer().client, repository, backup)
    assert result["outcome"] == "ok", result["problems"]
    assert result["collections"] == 5 and result["documents"] == 110


def test_a_broken_dump_in_the_repository_fails_verification_without_raising(
    tmp_path: Path,
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    broken = root / "backup_20240501_030000.tar.gz"
    with tarfile.open(broken, "w:gz") as tar:
        tar.add(
            _fixture(f"{TESTDATA}/timeseries_tests/ts_dump_invalid_buckets"),
            arcname="backup_20240501_030000",
        )
    repository = Repository(LocalStore(root), "legacy")
    target = FakeServer()

    result = verify_backup(target.client, repository, repository.find("mongodb", None, None))

    assert result["outcome"] == "failed"
    assert "not a valid time-series bucket" in result["problems"][0]
    assert target.calls == []
