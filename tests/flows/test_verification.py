"""The daily verification runbook and ``dr status`` on real backups and real failures."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from dr_runbooks.config import load_config
from dr_runbooks.errors import DRError, RestoreVerificationFailed
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tools import pg_tool
from dr_runbooks.repository import MANIFEST, Repository
from dr_runbooks.status import system_status
from dr_runbooks.storage import LocalStore
from dr_runbooks.targets import repository_from_config
from flows.backup_postgres import backup_postgres
from flows.verify_backups import verify_backups
from tests.flows.conftest import PASSWORD, use_database
from tests.pg_helpers import database_names, run_sql_file
from tests.shared_data import shared_data
from tests.webhook import Receiver


@pytest.fixture
def config(system_config: Path, receiver: Receiver) -> Path:
    system_config.write_text(
        system_config.read_text() + "notifications: {block: custom-webhook/dr-test-alerts}\n"
    )
    return system_config


def _seed(conninfo: ConnInfo, database: str) -> None:
    with conninfo.connect(dbname=database) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric)")
        conn.execute(
            "INSERT INTO accounts SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, 4000) g"
        )


def _primary(config: Path) -> Repository:
    return repository_from_config(load_config(config), "primary")


def _states(config: Path) -> list[str]:
    cfg = load_config(config)
    return [s.state for s in system_status(cfg, "shop", cfg.systems["shop"], _primary(config))]


def test_a_good_backup_is_test_restored_recorded_and_status_ok(
    pg_server: ConnInfo, make_database, config: Path, receiver: Receiver
) -> None:
    database = make_database("good")
    _seed(pg_server, database)
    path = use_database(config, database)
    backup = backup_postgres(system="shop", config_path=path)[0]
    assert _states(config) == ["UNVERIFIED"]

    [result] = verify_backups(config_path=path)

    assert result["outcome"] == "ok" and result["backup_id"] == backup["backup_id"]
    repo = _primary(config)
    [record] = repo.verifications(repo.find("postgres", "shop", database))
    assert record["outcome"] == "ok" and record["checksums"] == "ok"
    assert record["compared"] == {"tables": 1, "rows": 4000, "row_counts": True, "checks": False}
    assert database_names(pg_server, "%\\_\\_verify\\_%") == []
    assert _states(config) == ["OK"]
    assert receiver.messages == []
    status = subprocess.run(
        [sys.executable, "-m", "cli", "--config", path, "status", "--json"],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["systems"][0]["state"] == "OK"


def test_a_corrupted_object_fails_verification_notifies_and_shows_failed(
    pg_server: ConnInfo, make_database, config: Path, receiver: Receiver, tmp_path: Path
) -> None:
    database = make_database("rot")
    _seed(pg_server, database)
    path = use_database(config, database)
    backup_postgres(system="shop", config_path=path)
    data = next((tmp_path / "primary").rglob("data.dump.zst"))
    raw = bytearray(data.read_bytes())
    raw[-10] ^= 0x40
    data.write_bytes(bytes(raw))

    with pytest.raises(RestoreVerificationFailed, match=r"data\.dump\.zst"):
        verify_backups(config_path=path)

    assert _states(config) == ["FAILED"]
    [message] = receiver.messages
    assert "shop" in message["subject"] and "data.dump.zst" in message["body"]
    assert "flow run" in message["body"]
    status = subprocess.run(
        [sys.executable, "-m", "cli", "--config", path, "status"],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 1 and "FAILED" in status.stdout


def test_a_backup_whose_restore_fails_is_caught(
    pg_server: ConnInfo, make_database, config: Path, receiver: Receiver, tmp_path: Path
) -> None:
    database = make_database("unrestorable")
    _seed(pg_server, database)
    path = use_database(config, database)
    backup_postgres(system="shop", config_path=path)
    # Intact checksums, unrestorable content: the manifest agrees with what is stored.
    data = next((tmp_path / "primary").rglob("data.dump.zst"))
    garbage = zstandard.ZstdCompressor().compress(b"this is not a pg_dump archive\n" * 100)
    data.write_bytes(garbage)
    manifest_path = data.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["objects"][0].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(RestoreVerificationFailed, match="pg_restore"):
        verify_backups(config_path=path)

    assert _states(config) == ["FAILED"]
    assert len(receiver.messages) == 1
    assert database_names(pg_server, "%\\_\\_verify\\_%") == []


def test_a_stale_backup_is_reported_stale_and_notified(
    pg_server: ConnInfo, make_database, config: Path, receiver: Receiver, tmp_path: Path
) -> None:
    database = make_database("stale")
    _seed(pg_server, database)
    path = use_database(config, database)
    backup_postgres(system="shop", config_path=path)
    manifest_path = next((tmp_path / "primary").rglob(MANIFEST))
    manifest = json.loads(manifest_path.read_text())
    old = datetime.now(UTC) - timedelta(hours=5)
    manifest["consistent_point"] = old.isoformat()
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(RestoreVerificationFailed, match="objective 1 h"):
        verify_backups(config_path=path)

    assert _states(config) == ["STALE"]
    [message] = receiver.messages
    assert "stale" in message["body"]


def test_a_failed_backup_sends_one_notification(config: Path, receiver: Receiver) -> None:
    path = use_database(config, "no_such_database")
    with pytest.raises(DRError):
        backup_postgres(system="shop", config_path=path)
    [message] = receiver.messages
    assert message["subject"] == "DR: backup-postgres failed for shop"
    assert "no_such_database" in message["body"] and "flow run" in message["body"]
    assert PASSWORD not in json.dumps(message)


def test_leftover_verification_databases_are_removed(
    pg_server: ConnInfo, make_database, config: Path
) -> None:
    database = make_database("leftover")
    _seed(pg_server, database)
    path = use_database(config, database)
    backup_postgres(system="shop", config_path=path)
    crashed = f"{database}__verify_19990101T000000Z-dead"
    with pg_server.connect(dbname="postgres") as conn:
        conn.execute(f'CREATE DATABASE "{crashed}"')
    verify_backups(config_path=path)
    assert database_names(pg_server, "%\\_\\_verify\\_%") == []


def test_a_legacy_script_backup_is_verified_and_counts_for_status(
    pg_server: ConnInfo, make_database, config: Path, tmp_path: Path
) -> None:
    database = make_database("legacy")
    _seed(pg_server, database)
    path = use_database(config, database)
    plain = subprocess.run(
        [pg_tool("pg_dump"), "-d", database],
        env=pg_server.child_env(dbname=database),
        capture_output=True,
        check=True,
    ).stdout
    legacy_dir = tmp_path / "primary" / "postgres-backups"
    legacy_dir.mkdir(parents=True)
    stamp = datetime.now(UTC) - timedelta(minutes=10)
    (legacy_dir / f"backup_{stamp:%Y%m%d_%H%M%S}.sql.gz").write_bytes(gzip.compress(plain))
    assert _states(config) == ["UNVERIFIED"]

    [result] = verify_backups(config_path=path)

    assert result["outcome"] == "ok" and result["backup_id"].startswith("backup_")
    assert _states(config) == ["OK"]
    assert (legacy_dir / f"backup_{stamp:%Y%m%d_%H%M%S}.sql.gz").exists()


def test_pagila_backup_is_proven_restorable(
    pg_server: ConnInfo, make_database, config: Path
) -> None:
    schema = shared_data("devrimgunduz-pagila", "pagila-schema.sql")
    data = shared_data("devrimgunduz-pagila", "pagila-data.sql")
    database = make_database("pagila_v")
    run_sql_file(pg_server, database, schema)
    run_sql_file(pg_server, database, data)
    path = use_database(config, database)
    backup_postgres(system="shop", config_path=path)
    [result] = verify_backups(config_path=path)
    assert result["outcome"] == "ok"
    repo = _primary(config)
    [record] = repo.verifications(repo.find("postgres", "shop", database))
    assert record["compared"]["rows"] > 40000 and record["compared"]["tables"] >= 21


def test_status_without_backups_is_missing_and_exits_non_zero(config: Path) -> None:
    path = use_database(config, "never_backed_up")
    status = subprocess.run(
        [sys.executable, "-m", "cli", "--config", path, "status", "--json"],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 1
    assert json.loads(status.stdout)["systems"][0]["state"] == "MISSING"


def test_local_store_is_what_primary_means(config: Path, tmp_path: Path) -> None:
    assert isinstance(_primary(config).store, LocalStore)
    assert Path(_primary(config).store.location) == tmp_path / "primary"


def test_a_separate_verification_server_is_used_when_named(
    pg_server: ConnInfo, make_database, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = make_database("elsewhere")
    _seed(pg_server, database)
    path = use_database(config, database)
    backup_postgres(system="shop", config_path=path)
    monkeypatch.setenv(
        "DR_TEST_VERIFY_DSN", f"postgresql://verifier_probe@/postgres?host={pg_server.host}"
    )

    with pytest.raises(RestoreVerificationFailed, match="verifier_probe"):
        # The role does not exist there: proof that the named server, not the source, was used.
        verify_backups(verify_server="env:DR_TEST_VERIFY_DSN", notify=False, config_path=path)
