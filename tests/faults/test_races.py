"""Two runs at once: two restores of one database can never both go on, a restore paused for
approval keeps others out, and a backup waits (saying so) while a restore runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.flow_runs import resume_flow_run

from dr_runbooks.errors import LockHeld
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from flows.database_failure import database_failure
from tests.faults.conftest import Dr, indexes_and_constraints, seed, wait_for
from tests.flows.test_approval import _paused_run, paused_runs
from tests.pg_helpers import database_names, table_fingerprints

pytestmark = pytest.mark.slow


def _slow_checks(tmp_path: Path, seconds: int = 20) -> str:
    """A checks file that holds the restore in its verify step (under the lock) a while."""
    path = tmp_path / "slow-checks.sql"
    # Returns no row (the check passes) once the sleep is done; a constant-false filter would
    # let the planner skip the call.
    path.write_text(f"SELECT 1 FROM (SELECT pg_sleep({seconds})::text AS t) s WHERE s.t = 'x';\n")
    return str(path)


def _lock_holders(conninfo: ConnInfo) -> int:
    with conninfo.connect(dbname="postgres") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dr-runbooks lock%'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_second_restore_of_the_database_refuses_and_the_first_completes(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("race")
    seed(pg_server, database, rows=20_000)
    repo = str(tmp_path / "repo")
    assert dr("backup", "postgres", "--database", database, "--repo", repo).returncode == 0
    expected = table_fingerprints(pg_server, database)
    shape = indexes_and_constraints(pg_server, database)

    first = dr.spawn(
        "restore",
        "postgres",
        "--database",
        database,
        "--repo",
        repo,
        "--yes",
        "--checks",
        _slow_checks(tmp_path),
    )
    wait_for(lambda: _lock_holders(pg_server) > 0, 120, "the first restore to take its lock")
    second = dr("restore", "postgres", "--database", database, "--repo", repo, "--yes")
    _, first_err = first.communicate(timeout=300)

    assert second.returncode == 1
    assert f"database {database}" in second.stderr and "is locked by" in second.stderr
    assert first.returncode == 0, first_err
    # The database live now is the one restored and verified: every row, every index.
    assert table_fingerprints(pg_server, database) == expected
    assert indexes_and_constraints(pg_server, database) == shape
    assert database_names(pg_server, f"{database}\\_\\_restore\\_%") == []


def test_a_restore_paused_for_approval_keeps_a_second_restore_out(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = make_database("gate")
    seed(pg_server, database, rows=2000)
    repo = str(tmp_path / "repo")
    assert dr("backup", "postgres", "--database", database, "--repo", repo).returncode == 0
    monkeypatch.setenv("DR_TEST_RACE_DSN", dr.env["DR_DSN"])
    outcome: dict[str, Any] = {}

    def paused_restore() -> None:
        try:
            outcome["result"] = database_failure(
                system="", database=database, connection="env:DR_TEST_RACE_DSN", repository=repo
            )
        except BaseException as exc:
            outcome["error"] = exc

    known = paused_runs()
    thread = threading.Thread(target=paused_restore)
    thread.start()
    run_id = _paused_run(known=known)

    second = dr("restore", "postgres", "--database", database, "--repo", repo, "--yes")
    assert second.returncode == 1 and "is locked by" in second.stderr
    with pytest.raises(LockHeld, match="locked by run"):
        database_failure(
            system="",
            database=database,
            connection="env:DR_TEST_RACE_DSN",
            repository=repo,
            approved=True,
        )

    resume_flow_run(run_id, run_input={"approve": True, "approver": "Ada", "reason": "tested"})
    thread.join(timeout=300)
    assert outcome["result"]["approval"] == "approved in the UI by Ada: tested"


def test_a_backup_waits_for_a_running_restore_and_says_so(
    dr: Dr, pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    database = make_database("wait")
    seed(pg_server, database, rows=20_000)
    repo = str(tmp_path / "repo")
    assert dr("backup", "postgres", "--database", database, "--repo", repo).returncode == 0

    restore = dr.spawn(
        "restore",
        "postgres",
        "--database",
        database,
        "--repo",
        repo,
        "--yes",
        "--checks",
        _slow_checks(tmp_path),
    )
    wait_for(lambda: _lock_holders(pg_server) > 0, 120, "the restore to take its lock")
    begun = time.monotonic()
    backup = dr("--debug", "backup", "postgres", "--database", database, "--repo", repo, "--json")
    waited = time.monotonic() - begun
    restore.communicate(timeout=300)

    assert restore.returncode == 0 and backup.returncode == 0, backup.stderr
    said = backup.stdout + backup.stderr
    assert f"waiting for database {database}" in said and "locked by" in said
    assert waited > 1
    assert len(Repository(LocalStore(repo)).backups("postgres", None, database)) == 2
