"""The MongoDB backup and database-failure runbooks as real Prefect flow runs.

The server is a fake handed out by a saved block: a ``MongoDatabase`` subclass whose client
factory (``get_client``) returns the fake's clients, named in dr.yaml like any block.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr

from blocks.mongo import MongoDatabase
from dr_runbooks.errors import ChecksumMismatch
from dr_runbooks.mongo.backup import DATA
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from flows.backup_mongodb import backup_mongodb
from flows.database_failure_mongodb import database_failure_mongodb
from tests.mongodb_engine.conftest import PASSWORD, URI
from tests.mongodb_engine.fake import FakeServer
from tests.mongodb_engine.seed import documents, seed_shop
from tests.prefect_records import logs_and_artifacts_since
from tests.shared_data import shared_data

SERVERS: dict[str, FakeServer] = {}


class FakeMongoDatabase(MongoDatabase):
    """A MongoDB block whose clients come from an in-process fake server."""

    _block_type_name = "DR Test Fake MongoDB"
    _block_type_slug = "dr-test-fake-mongodb"

    server_key: str = Field(description="Key of the fake server in this test module.")

    def get_client(self) -> Any:
        return SERVERS[self.server_key].client()


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """Every flow test runs against the session's Prefect test server."""


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[FakeServer, str]]:
    """A seeded fake server behind a saved block, and a dr.yaml declaring system ``docs``."""
    key = secrets.token_hex(4)
    server = FakeServer()
    seed_shop(server, orders=60)
    SERVERS[key] = server
    FakeMongoDatabase(uri=SecretStr(URI), server_key=key, databases=["shop"]).save(
        f"docs-{key}", overwrite=True
    )
    config = tmp_path / "dr.yaml"
    config.write_text(f"""
objectives:
  rto: {{critical: 2h}}
repositories:
  primary: {{type: local, path: {tmp_path / "primary"}, retention_days: 7, min_keep: 2}}
  offsite: {{type: local, path: {tmp_path / "offsite"}, retention_days: 30}}
systems:
  docs:
    engine: mongodb
    connection: {{block: "dr-test-fake-mongodb/docs-{key}"}}
    repositories: [primary, offsite]
""")
    yield server, str(config)
    del SERVERS[key]


def test_backup_runbook_writes_every_repository_and_keeps_the_password_out(
    shop: tuple[FakeServer, str], tmp_path: Path
) -> None:
    _, config = shop

    start = datetime.now(UTC)
    results = backup_mongodb(system="docs", engine="native", config_path=config)

    assert [r["database"] for r in results] == ["shop"]
    assert results[0]["documents"] == 110 and results[0]["consistency"] == "per-collection"
    for name in ("primary", "offsite"):
        repository = Repository(LocalStore(tmp_path / name))
        backup = repository.find("mongodb", "docs", "shop")
        assert backup.id == results[0]["backup_id"]
        assert repository.verify_objects(backup) == []
    everything = logs_and_artifacts_since(start)
    assert results[0]["backup_id"] in everything  # the logs and artifacts were really read
    assert PASSWORD not in everything


def test_database_failure_runbook_restores_verifies_swaps_and_reports(
    shop: tuple[FakeServer, str],
) -> None:
    server, config = shop
    backup_mongodb(system="docs", engine="native", config_path=config)
    expected = documents(server, "shop", "orders")
    server.mock["shop"]["orders"].delete_many({})  # the incident

    start = datetime.now(UTC)
    result = database_failure_mongodb(system="docs", approved=True, config_path=config)

    assert documents(server, "shop", "orders") == expected
    assert result["kept_old_database"].startswith("shop__pre_restore_")
    assert server.mock[result["kept_old_database"]]["orders"].count_documents({}) == 0
    assert result["verification"]["documents"] == 110
    assert result["rto_met"] is True and result["rpo_seconds"] >= 0
    steps = [s["step"] for s in result["steps"]]
    assert steps == [
        "load",
        "assess",
        "choose backup",
        "approval",
        "download and verify checksums",
        "read the dump and plan",
        "restore into side database",
        "verify",
        "swap",
    ]
    assert "RTO achieved" in logs_and_artifacts_since(start)


def test_database_failure_runbook_refuses_a_corrupted_backup_before_touching_the_server(
    shop: tuple[FakeServer, str], tmp_path: Path
) -> None:
    server, config = shop
    results = backup_mongodb(system="docs", engine="native", config_path=config)
    repository = Repository(LocalStore(tmp_path / "primary"))
    backup = repository.find("mongodb", "docs", "shop", backup_id=results[0]["backup_id"])
    path = tmp_path / "primary" / (backup.prefix + DATA)
    damaged = bytearray(path.read_bytes())
    damaged[-10] ^= 0x55
    path.write_bytes(bytes(damaged))
    server.calls.clear()

    with pytest.raises(ChecksumMismatch):
        database_failure_mongodb(system="docs", approved=True, config_path=config)

    sent = {next(iter(command)) for _, command in server.commands()}
    assert sent <= {"hello", "buildInfo"}  # the assessment only
    assert len(documents(server, "shop", "orders")) == 60


def test_a_dry_run_shows_the_plan_and_changes_nothing(shop: tuple[FakeServer, str]) -> None:
    server, config = shop
    backup_mongodb(system="docs", engine="native", config_path=config)
    server.calls.clear()

    result = database_failure_mongodb(system="docs", dry_run=True, config_path=config)

    assert result["dry_run"] is True and "shop__pre_restore_" in result["plan"]
    assert {next(iter(c)) for _, c in server.commands()} <= {"hello", "buildInfo"}


def test_mongodump_output_given_as_a_path_is_restored_with_its_oplog(
    shop: tuple[FakeServer, str],
) -> None:
    server, config = shop
    archive = shared_data("mongodb-mongo-tools", "mongorestore", "testdata", "dump-w-oplog.archive")

    result = database_failure_mongodb(
        system="docs",
        database="test",
        source_path=str(archive),
        approved=True,
        config_path=config,
    )

    assert result["backup_id"] is None and result["rpo_seconds"] is None
    assert result["oplog"]["applied"] == 16
    assert server.mock["test"]["foo"].count_documents({}) == 25 + 0  # the oplog re-inserts
    assert "replay oplog and build indexes" in [s["step"] for s in result["steps"]]


def test_verification_flow_and_status_cover_mongodb_systems(
    shop: tuple[FakeServer, str], tmp_path: Path
) -> None:
    from dr_runbooks.config import load_config
    from dr_runbooks.errors import RestoreVerificationFailed
    from dr_runbooks.status import system_status
    from dr_runbooks.targets import repository_from_config
    from flows.verify_backups import verify_backups

    _, config = shop
    cfg = load_config(config)

    def states() -> list[str]:
        repo = repository_from_config(cfg, "primary")
        return [s.state for s in system_status(cfg, "docs", cfg.systems["docs"], repo)]

    backup_mongodb(system="docs", engine="native", config_path=config)
    assert states() == ["UNVERIFIED"]

    [result] = verify_backups(systems=["docs"], notify=False, config_path=config)

    assert result["outcome"] == "ok" and result["database"] == "shop"
    repository = Repository(LocalStore(tmp_path / "primary"))
    [record] = repository.verifications(repository.find("mongodb", "docs", "shop"))
    assert record["compared"]["documents"] == 110
    assert states() == ["OK"]

    data = next((tmp_path / "primary").rglob(DATA))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(RestoreVerificationFailed):
        verify_backups(systems=["docs"], notify=False, config_path=config)
    assert states() == ["FAILED"]


def test_an_unreachable_verification_server_fails_that_system_only(
    shop: tuple[FakeServer, str], tmp_path: Path
) -> None:
    from pymongo.errors import ServerSelectionTimeoutError

    from dr_runbooks.errors import RestoreVerificationFailed
    from flows.verify_backups import verify_backups

    _, config = shop
    down_key = secrets.token_hex(4)
    down = FakeServer()
    seed_shop(down, orders=10)
    SERVERS[down_key] = down
    FakeMongoDatabase(uri=SecretStr(URI), server_key=down_key, databases=["shop"]).save(
        f"down-{down_key}", overwrite=True
    )
    Path(config).write_text(
        Path(config).read_text()
        + f"""  gone:
    engine: mongodb
    connection: {{block: "dr-test-fake-mongodb/down-{down_key}"}}
    repositories: [primary]
"""
    )
    backup_mongodb(system="docs", engine="native", config_path=config)
    backup_mongodb(system="gone", engine="native", config_path=config)
    down.refuse = ServerSelectionTimeoutError("no servers found: connection refused")
    try:
        with pytest.raises(RestoreVerificationFailed, match="gone/shop") as failed:
            verify_backups(systems=["docs", "gone"], notify=False, config_path=config)
    finally:
        del SERVERS[down_key]

    assert "docs/shop" not in str(failed.value)  # the reachable system was verified
    repository = Repository(LocalStore(tmp_path / "primary"))
    [ok] = repository.verifications(repository.find("mongodb", "docs", "shop"))
    [bad] = repository.verifications(repository.find("mongodb", "gone", "shop"))
    assert ok["outcome"] == "ok"
    assert bad["outcome"] == "failed" and "no servers found" in bad["problems"][0]
