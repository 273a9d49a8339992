"""The ``dr`` command as a user runs it: exit codes, one-line errors, JSON, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dr_runbooks.postgres.connection import ConnInfo

PASSWORD = "Cli-Secret-9f2e77"


def dr(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def dsn(pg_server: ConnInfo) -> str:
    return f"postgresql://postgres:{PASSWORD}@/postgres?host={pg_server.host}"


@pytest.fixture
def no_config(tmp_path: Path) -> dict[str, str]:
    """Run from a directory with no dr.yaml above it (no config is valid: plan defaults)."""
    return {"DR_CONFIG": ""}


def test_malformed_dsn_is_bad_input_and_masks_the_password(tmp_path: Path) -> None:
    result = dr(
        "restore",
        "postgres",
        "--repo",
        str(tmp_path),
        "--yes",
        env={"DR_DSN": f"postgresql://app:{PASSWORD}@db:notaport/shop"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    line = one_error_line(result)
    assert "bad DSN" in line and "notaport" in line
    assert PASSWORD not in result.stderr + result.stdout


def test_missing_repository_is_bad_input(tmp_path: Path) -> None:
    result = dr("backups", "list", "--repo", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2
    assert "repository does not exist" in one_error_line(result)


def test_unknown_system_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "dr.yaml").write_text("systems: {}\n")
    result = dr("backup", "postgres", "--system", "ghost", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown system 'ghost'" in one_error_line(result)


def test_malformed_time_is_bad_input(tmp_path: Path, dsn: str) -> None:
    result = dr(
        "restore",
        "postgres",
        "--repo",
        str(tmp_path),
        "--database",
        "x",
        "--before",
        "next friday",
        "--yes",
        env={"DR_DSN": dsn},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "malformed time 'next friday'" in one_error_line(result)


def test_malformed_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "dr.yaml").write_text("objectives:\n  rto:\n    critical: soon\n")
    result = dr("backups", "list", "--repo", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "objectives.rto.critical" in one_error_line(result)


def test_backup_list_restore_round_trip(
    pg_server: ConnInfo, make_database, tmp_path: Path, dsn: str
) -> None:
    database = make_database("cli")
    with pg_server.connect(dbname=database) as conn:
        conn.execute(
            "CREATE TABLE notes AS SELECT g AS id, md5(g::text) AS body "
            "FROM generate_series(1, 5000) g"
        )
    repo = tmp_path / "repo"
    env = {"DR_DSN": dsn}

    backup = dr(
        "backup",
        "postgres",
        "--database",
        database,
        "--repo",
        str(repo),
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert backup.returncode == 0, backup.stderr
    [made] = json.loads(backup.stdout)
    assert made["rows"] == 5000 and made["database"] == database

    listed = dr("backups", "list", "--repo", str(repo), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [b["id"] for b in json.loads(listed.stdout)] == [made["backup_id"]]

    unknown = dr(
        "restore",
        "postgres",
        "--database",
        database,
        "--repo",
        str(repo),
        "--backup-id",
        "20200101T000000Z-0000",
        "--yes",
        env=env,
        cwd=tmp_path,
    )
    assert unknown.returncode == 2
    assert "no complete backup with id" in one_error_line(unknown)

    refused = dr(
        "restore", "postgres", "--database", database, "--repo", str(repo), env=env, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "--yes" in one_error_line(refused)

    with pg_server.connect(dbname=database) as conn:
        conn.execute("DELETE FROM notes")
    restored = dr(
        "restore",
        "postgres",
        "--database",
        database,
        "--repo",
        str(repo),
        "--yes",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert restored.returncode == 0, restored.stderr
    result = json.loads(restored.stdout)
    assert result["backup_id"] == made["backup_id"] and result["rto_seconds"] > 0
    with pg_server.connect(dbname=database) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (5000,)
    for output in (backup, listed, unknown, refused, restored):
        assert PASSWORD not in output.stdout + output.stderr


def test_prune_applies_retention_with_a_dry_run_first(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from dr_runbooks.repository import Repository
    from dr_runbooks.storage import LocalStore
    from tests.test_repository import fake_backup

    repo = Repository(LocalStore(tmp_path / "repo"))
    now = datetime.now(UTC)
    for index, days in enumerate([1, 2, 3, 20, 40]):
        fake_backup(
            repo,
            f"2026110{index}T000000Z-000{index}",
            now - timedelta(days=days),
            system="app",
            database="shop",
        )
    (tmp_path / "dr.yaml").write_text(
        f"repositories: {{local: {{type: local, path: {tmp_path / 'repo'}, retention_days: 7}}}}\n"
        "systems: {app: {engine: postgres, databases: [shop], repositories: [local]}}\n"
    )

    dry = dr("backups", "prune", "--system", "app", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert sorted(c["backup_id"] for c in json.loads(dry.stdout)["changes"]) == [
        "20261103T000000Z-0003",
        "20261104T000000Z-0004",
    ]
    assert len(repo.backups("postgres")) == 5

    refused = dr("backups", "prune", "--system", "app", cwd=tmp_path)
    assert refused.returncode == 2 and len(repo.backups("postgres")) == 5

    done = dr("backups", "prune", "--system", "app", "--yes", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kept"] == 3
    assert [b.id for b in repo.backups("postgres")] == [
        "20261100T000000Z-0000",
        "20261101T000000Z-0001",
        "20261102T000000Z-0002",
    ]


def test_a_dead_prefect_server_does_not_stop_a_backup(
    pg_server: ConnInfo, make_database, tmp_path: Path, dsn: str
) -> None:
    """A disaster may have taken the Prefect server too: the CLI runs on a temporary one."""
    database = make_database("noserver")
    with pg_server.connect(dbname=database) as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS id")
    dead = "http://127.0.0.1:9/api"  # the discard port: nothing listens there
    result = dr(
        "backup",
        "postgres",
        "--database",
        database,
        "--repo",
        str(tmp_path / "r"),
        "--json",
        env={"DR_DSN": dsn, "PREFECT_API_URL": dead},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"Prefect API {dead} does not answer" in result.stderr
    assert json.loads(result.stdout)[0]["rows"] == 1


def test_a_system_of_the_other_engine_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "dr.yaml").write_text(
        f"repositories: {{local: {{type: local, path: {tmp_path}}}}}\n"
        "systems: {docs: {engine: mongodb, repositories: [local]}}\n"
    )
    result = dr("backup", "postgres", "--system", "docs", cwd=tmp_path)
    assert result.returncode == 2
    assert "is a mongodb system, not postgres" in one_error_line(result)


def test_backup_ids_are_never_cut_in_an_80_column_terminal(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from dr_runbooks.repository import Manifest, ObjectEntry, Repository, new_backup_id
    from dr_runbooks.storage import LocalStore

    repository = Repository(LocalStore(tmp_path / "repo"))
    made = []
    for database in ("orders", "a_database_with_a_rather_long_name_indeed"):
        backup_id = new_backup_id()
        prefix = repository.begin("postgres", "a-system-name-of-some-length", database, backup_id)
        repository.store.put_bytes(prefix + "data", b"x" * 10)
        now = datetime.now(UTC)
        repository.commit(
            prefix,
            Manifest(
                id=backup_id,
                engine="postgres",
                system="a-system-name-of-some-length",
                database=database,
                started=now,
                finished=now,
                consistent_point=now,
                objects=[ObjectEntry(name="data", size=10, sha256="0" * 64)],
            ),
        )
        made.append(backup_id)

    listed = dr("backups", "list", "--repo", str(tmp_path / "repo"), env={"COLUMNS": "80"})

    assert listed.returncode == 0, listed.stderr
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    for backup_id in made:
        assert backup_id in listed.stdout  # whole, on one line
