"""A damaged repository: a manifest garbled in place, a backup dated a year ahead by a wrong
clock, folders and blocks that failed writes left. Damage stays with what is damaged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr_runbooks.config import load_config
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import MANIFEST, Repository
from dr_runbooks.status import system_status
from dr_runbooks.storage import LocalStore
from dr_runbooks.targets import repository_from_config
from tests.faults.conftest import Dr, seed
from tests.pg_helpers import table_fingerprints

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, database: str) -> Path:
    path = tmp_path / "dr.yaml"
    path.write_text(f"""
repositories:
  main: {{type: local, path: {tmp_path / "repo"}, retention_days: 7, min_keep: 1}}
systems:
  shop:
    engine: postgres
    connection: {{dsn_env: DR_DSN}}
    databases: [{database}]
    repositories: [main]
""")
    return path


def _backup(dr: Dr, config: Path) -> str:
    made = dr("--config", str(config), "backup", "postgres", "--system", "shop", "--json")
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)[0]["backup_id"])


def _manifest(tmp_path: Path, backup_id: str) -> Path:
    [path] = (tmp_path / "repo").rglob(f"{backup_id}/{MANIFEST}")
    return path


def _states(config: Path) -> list[tuple[str, str]]:
    loaded = load_config(config)
    repository = repository_from_config(loaded, "main")
    return [
        (s.state, s.detail)
        for s in system_status(loaded, "shop", loaded.systems["shop"], repository)
    ]


def test_a_garbled_manifest_damages_that_backup_only(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("garble")
    seed(pg_server, database, rows=5000)
    config = _config(tmp_path, database)
    intact = _backup(dr, config)
    garbled = _backup(dr, config)
    manifest = _manifest(tmp_path, garbled)
    manifest.write_bytes(manifest.read_bytes()[:200] + b"\x00garbage")

    listed = dr("--config", str(config), "backups", "list", "--system", "shop", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows[garbled]["kind"] == "DAMAGED" and "malformed" in rows[garbled]["problem"]
    assert rows[intact]["kind"] == "manual" and rows[intact]["problem"] is None

    # The latest usable backup is chosen; the damaged one only refuses when named.
    expected = table_fingerprints(pg_server, database)
    restored = dr(
        "--config", str(config), "restore", "postgres", "--system", "shop", "--yes", "--json"
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["backup_id"] == intact
    assert table_fingerprints(pg_server, database) == expected
    named = dr(
        "--config",
        str(config),
        "restore",
        "postgres",
        "--system",
        "shop",
        "--yes",
        "--backup-id",
        garbled,
    )
    assert named.returncode == 1 and f"backup {garbled} is damaged" in named.stderr

    # Retention reports it and leaves it; later backups and their retention succeed.
    pruned = dr(
        "--config", str(config), "backups", "prune", "--system", "shop", "--dry-run", "--json"
    )
    assert pruned.returncode == 0, pruned.stderr
    actions = {c["backup_id"]: c["action"] for c in json.loads(pruned.stdout)["changes"]}
    assert actions[garbled].startswith("left alone: damaged")
    third = _backup(dr, config)
    assert manifest.exists() and third not in (intact, garbled)
    assert ("DAMAGED", f"1 damaged backup(s), unusable: {garbled}") in _states(config)


def test_a_backup_dated_a_year_ahead_is_never_the_latest(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("skew")
    seed(pg_server, database, rows=2000)
    config = _config(tmp_path, database)
    good = _backup(dr, config)
    ahead = _backup(dr, config)
    manifest = _manifest(tmp_path, ahead)
    data = json.loads(manifest.read_text())
    data["consistent_point"] = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    manifest.write_text(json.dumps(data))

    [(state, detail)] = _states(config)
    assert state == "CLOCK_SKEW" and ahead in detail and "in the future" in detail
    restored = dr(
        "--config", str(config), "restore", "postgres", "--system", "shop", "--yes", "--json"
    )
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["backup_id"] == good
    named = dr(
        "--config",
        str(config),
        "restore",
        "postgres",
        "--system",
        "shop",
        "--yes",
        "--json",
        "--backup-id",
        ahead,
    )
    assert named.returncode == 0 and json.loads(named.stdout)["backup_id"] == ahead

    # Retention ages it from when it was written: it goes like the others once it is old.
    repository = Repository(LocalStore(tmp_path / "repo"))
    later = datetime.now(UTC) + timedelta(days=30)
    plan = repository.plan_retention("postgres", "shop", database, now=later)
    assert ahead in {b.id for b in plan.delete} and ahead in {b.id for b in plan.skewed}
    assert good in {b.id for b in plan.keep}  # min_keep counts backups with a sane date


def test_leftovers_of_failed_writes_are_removed_by_the_next_backup(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("orphan")
    seed(pg_server, database, rows=2000)
    config = _config(tmp_path, database)
    _backup(dr, config)
    folder = tmp_path / "repo" / "postgres" / "shop" / database
    orphan = folder / "20261101T000000Z-dead"  # no marker, no manifest: a write cut short
    orphan.mkdir()
    (orphan / "data.dump.zst").write_bytes(b"half a dump")
    attempt = folder / "20261102T000000Z-beef"  # an attempt whose run died an hour ago
    attempt.mkdir()
    (attempt / "_in_progress.json").write_text(
        json.dumps({"started": datetime.now(UTC).isoformat()})
    )
    (attempt / ".data.dump.zst.partial-1234").write_bytes(b"partial")

    _backup(dr, config)

    assert not orphan.exists() and not attempt.exists()
    repository = Repository(LocalStore(tmp_path / "repo"))
    assert len(repository.backups("postgres", "shop", database)) == 2
