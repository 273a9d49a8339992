"""``kill -9`` of the real ``dr`` process in the middle of a backup and of a restore: the next
run works within seconds, its children died with it, nothing is left behind after the next
run, and Prefect no longer shows the killed run as running."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.processes import state_dir
from dr_runbooks.repository import MANIFEST, Repository
from dr_runbooks.storage import LocalStore
from tests.faults.conftest import (
    Dr,
    descendants,
    indexes_and_constraints,
    kill_9,
    registered_runs,
    run_state,
    seed,
    wait_for,
)
from tests.pg_helpers import database_names, table_fingerprints

pytestmark = pytest.mark.slow


def _registered_runs() -> set[str]:
    return registered_runs(state_dir())


def _hidden_partials(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*partial-*") if p.is_file()]


def test_kill_9_mid_upload_leaves_the_next_backup_working_and_nothing_behind(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("killbak")
    seed(pg_server, database, rows=600_000)
    repo = tmp_path / "repo"
    before = _registered_runs()

    first = dr.spawn("backup", "postgres", "--database", database, "--repo", str(repo), "--json")
    wait_for(lambda: any(p.stat().st_size > 0 for p in _hidden_partials(repo)), 120, "the upload")
    children = descendants(first)
    [killed_run] = _registered_runs() - before
    kill_9(first)

    # pg_dump died with it: nothing keeps writing into the repository.
    wait_for(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
        10,
        "the children to die",
    )
    begun = time.monotonic()
    second = dr(
        "backup", "postgres", "--database", database, "--repo", str(repo), "--json", timeout=180
    )
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - begun < 120  # no wait for a lock or slot the dead run held

    [made] = json.loads(second.stdout)
    repository = Repository(LocalStore(repo))
    [backup] = repository.backups("postgres", None, database)
    assert backup.id == made["backup_id"]
    assert repository.verify_objects(backup) == []
    folders = {p.parent for p in repo.rglob("*") if p.is_file() and ".locks" not in p.parts}
    assert all((folder / MANIFEST).exists() or folder.name == "verifications" for folder in folders)
    assert _hidden_partials(repo) == []
    assert run_state(killed_run) == "CRASHED"


def test_kill_9_mid_restore_kills_pg_restore_and_the_next_restore_cleans_up(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("killres")
    seed(pg_server, database, rows=600_000)
    repo = tmp_path / "repo"
    made = dr("backup", "postgres", "--database", database, "--repo", str(repo), "--json")
    assert made.returncode == 0, made.stderr
    expected = table_fingerprints(pg_server, database)
    shape = indexes_and_constraints(pg_server, database)
    with pg_server.connect(dbname=database) as conn:
        conn.execute("DELETE FROM orders WHERE id % 2 = 0")  # the damage to repair
    workdir = Path(dr.env["DR_WORK_DIR"])
    before = _registered_runs()

    first = dr.spawn("restore", "postgres", "--database", database, "--repo", str(repo), "--yes")

    def restoring() -> bool:
        return any(c.name() == "pg_restore" for c in descendants(first))

    wait_for(restoring, 180, "pg_restore to start")
    pg_restores = [c for c in descendants(first) if c.name() == "pg_restore"]
    [killed_run] = _registered_runs() - before
    kill_9(first)

    wait_for(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in pg_restores),
        10,
        "pg_restore to die",
    )
    assert database_names(pg_server, f"{database}\\_\\_restore\\_%")  # left by the dead run
    assert list(workdir.glob("dr-restore-*"))  # its unpacked dump too

    second = dr(
        "restore",
        "postgres",
        "--database",
        database,
        "--repo",
        str(repo),
        "--yes",
        "--json",
        timeout=300,
    )
    assert second.returncode == 0, second.stderr

    assert database_names(pg_server, f"{database}\\_\\_restore\\_%") == []
    assert list(workdir.glob("dr-restore-*")) == []
    assert table_fingerprints(pg_server, database) == expected
    assert indexes_and_constraints(pg_server, database) == shape
    assert run_state(killed_run) == "CRASHED"
