"""The backup and database-failure runbooks as real Prefect flow runs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dr_runbooks.errors import (
    BackupNotFound,
    BadInput,
    ChecksumMismatch,
    ConfigError,
    RepositoryNotFound,
    RestoreVerificationFailed,
)
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from flows.backup_postgres import backup_postgres
from flows.database_failure import database_failure
from tests.flows.conftest import PASSWORD, use_database
from tests.pg_helpers import database_names, table_fingerprints
from tests.prefect_records import logs_and_artifacts_since


def _seed(conninfo: ConnInfo, database: str, rows: int = 3000) -> None:
    with conninfo.connect(dbname=database) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        conn.execute(
            "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, %s) g", (rows,)
        )


def test_backup_runbook_writes_every_repository_and_keeps_secrets_out(
    pg_server: ConnInfo, make_database, system_config: Path, argv_log: Path, tmp_path: Path
) -> None:
    database = make_database("shop")
    _seed(pg_server, database)
    config = use_database(system_config, database)

    start = datetime.now(UTC)
    results = backup_postgres(system="shop", config_path=config)

    assert len(results) == 1 and results[0]["database"] == database
    backup_id = results[0]["backup_id"]
    for name in ("primary", "offsite"):
        repo = Repository(LocalStore(tmp_path / name))
        backup = repo.find("postgres", "shop", database)
        assert backup.id == backup_id
        assert backup.manifest is not None and backup.manifest.tables == {"public.customers": 3000}
        assert repo.verify_objects(backup) == []
    recorded = argv_log.read_text()
    assert "pg_dump --format=custom" in recorded
    assert PASSWORD not in recorded
    everything = logs_and_artifacts_since(start)
    assert backup_id in everything  # the logs and artifacts were really read
    assert PASSWORD not in everything


def test_database_failure_restores_the_backup_before_a_time_and_keeps_the_old_database(
    pg_server: ConnInfo, make_database, system_config: Path
) -> None:
    database = make_database("orders")
    _seed(pg_server, database, rows=1000)
    config = use_database(system_config, database)
    first = backup_postgres(system="shop", config_path=config, retention=False)[0]
    between = datetime.now(UTC).isoformat()
    with pg_server.connect(dbname=database) as conn:
        conn.execute("INSERT INTO customers SELECT g, 'late' FROM generate_series(1001, 1500) g")
    second = backup_postgres(system="shop", config_path=config, retention=False)[0]
    assert second["rows"] == 1500
    with pg_server.connect(dbname=database) as conn:
        conn.execute("DELETE FROM customers WHERE id > 10")  # the "corruption"

    result = database_failure(system="shop", before=between, approved=True, config_path=config)

    assert result["backup_id"] == first["backup_id"]
    assert result["kept_old_database"] and result["kept_old_database"].startswith(
        f"{database}__pre_restore_"
    )
    with pg_server.connect(dbname=database) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (1000,)
    with pg_server.connect(dbname=result["kept_old_database"]) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (10,)
    assert database_names(pg_server, f"{database}\\_\\_restore%") == []
    assert result["rto_met"] is True and 0 < result["rto_seconds"] < 7200
    assert [s["step"] for s in result["steps"]] == [
        "load",
        "assess",
        "choose backup",
        "lock",
        "approval",
        "remove leftovers of runs that died",
        "download and verify checksums",
        "restore into side database",
        "verify",
        "swap",
    ]
    assert all(s["outcome"] == "ok" for s in result["steps"])


def test_corrupted_backup_is_refused_and_the_database_untouched(
    pg_server: ConnInfo, make_database, system_config: Path, tmp_path: Path
) -> None:
    database = make_database("corrupt")
    _seed(pg_server, database)
    config = use_database(system_config, database)
    backup_postgres(system="shop", config_path=config, retention=False)
    data = next((tmp_path / "primary").rglob("data.dump.zst"))
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0x01
    data.write_bytes(bytes(raw))
    with pg_server.connect(dbname=database) as conn:
        conn.execute("DELETE FROM customers WHERE id % 2 = 0")
    before = table_fingerprints(pg_server, database)

    with pytest.raises(ChecksumMismatch):
        database_failure(system="shop", approved=True, config_path=config)

    assert table_fingerprints(pg_server, database) == before
    assert database_names(pg_server, f"{database}\\_\\_%") == []


def test_failed_checks_leave_the_original_and_drop_the_side_database(
    pg_server: ConnInfo, make_database, system_config: Path, tmp_path: Path
) -> None:
    database = make_database("checks")
    _seed(pg_server, database)
    config = use_database(system_config, database)
    backup_postgres(system="shop", config_path=config, retention=False)
    checks = tmp_path / "checks.sql"
    checks.write_text(
        "-- no customer may be missing a name\n"
        "SELECT id FROM customers WHERE name IS NULL;\n"
        "-- deliberately failing: every customer id is under 100\n"
        "SELECT id FROM customers WHERE id >= 100;\n"
    )
    before = table_fingerprints(pg_server, database)

    with pytest.raises(RestoreVerificationFailed, match="returned"):
        database_failure(system="shop", approved=True, checks_file=str(checks), config_path=config)

    assert table_fingerprints(pg_server, database) == before
    assert database_names(pg_server, f"{database}\\_\\_%") == []


def test_dry_run_changes_nothing_and_shows_the_plan(
    pg_server: ConnInfo, make_database, system_config: Path
) -> None:
    database = make_database("dry")
    _seed(pg_server, database)
    config = use_database(system_config, database)
    backup = backup_postgres(system="shop", config_path=config, retention=False)[0]
    before = table_fingerprints(pg_server, database)

    result = database_failure(system="shop", dry_run=True, config_path=config)

    assert result["dry_run"] is True and backup["backup_id"] in result["plan"]
    assert f"rename {database}" in result["plan"]
    assert table_fingerprints(pg_server, database) == before
    assert database_names(pg_server, f"{database}\\_\\_%") == []


def test_bad_input_fails_before_anything_changes(
    pg_server: ConnInfo, make_database, system_config: Path
) -> None:
    database = make_database("bad")
    _seed(pg_server, database)
    config = use_database(system_config, database)
    with pytest.raises(RepositoryNotFound, match="repository directory does not exist"):
        database_failure(system="shop", approved=True, config_path=config)
    backup_postgres(system="shop", config_path=config, retention=False)
    with pytest.raises(BackupNotFound, match="20200101T000000Z-dead"):
        database_failure(
            system="shop", backup_id="20200101T000000Z-dead", approved=True, config_path=config
        )
    with pytest.raises(BadInput, match="malformed time"):
        database_failure(system="shop", before="last tuesday", approved=True, config_path=config)
    with pytest.raises(BadInput, match="malformed time 'at dawn'"):
        database_failure(system="shop", incident_time="at dawn", approved=True, config_path=config)
    with pytest.raises(ConfigError, match="unknown system 'nope'"):
        database_failure(system="nope", approved=True, config_path=config)
    assert database_names(pg_server, f"{database}\\_\\_%") == []


def test_two_backups_of_one_database_never_overlap(
    pg_server: ConnInfo, make_database, system_config: Path
) -> None:
    database = make_database("conc")
    with pg_server.connect(dbname=database) as conn:
        conn.execute(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g"
        )
    config = use_database(system_config, database)
    results: list[list[dict[str, Any]]] = []

    def run() -> None:
        results.append(backup_postgres(system="shop", config_path=config, retention=False))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2
    repo = Repository(LocalStore(Path(config).parent / "primary"))
    manifests = sorted(
        (b.manifest for b in repo.backups("postgres", "shop", database) if b.manifest),
        key=lambda m: m.started,
    )
    assert len(manifests) == 2
    assert manifests[0].finished <= manifests[1].started


def test_a_side_database_left_by_a_crashed_attempt_is_replaced(
    pg_server: ConnInfo, make_database, system_config: Path
) -> None:
    database = make_database("crashed")
    _seed(pg_server, database, rows=500)
    config = use_database(system_config, database)
    made = backup_postgres(system="shop", config_path=config, retention=False)[0]
    leftover = f"{database}__restore_{made['backup_id']}"
    with pg_server.connect(dbname="postgres") as conn:
        conn.execute(f'CREATE DATABASE "{leftover}"')

    result = database_failure(system="shop", approved=True, config_path=config)

    assert result["backup_id"] == made["backup_id"]
    assert database_names(pg_server, f"{database}\\_\\_restore%") == []
