"""Physical base backups on a real server: what a backup commits, incremental chains combined
with pg_combinebackup, pg_verifybackup, damage, and retention that keeps every kept chain's WAL."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr_runbooks.errors import ChecksumMismatch, OperationFailed, RestoreVerificationFailed
from dr_runbooks.postgres import basebackup, pitr
from dr_runbooks.postgres.basebackup import BaseBackupManifest
from dr_runbooks.postgres.cluster import restore_to_point
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.wal.archive import list_archive
from dr_runbooks.postgres.wal.names import parse_lsn
from dr_runbooks.repository import MARKER, Repository
from dr_runbooks.storage import LocalStore
from tests.postgres.archiving import ArchivingServer, Writer, copy_repository, world_dir
from tests.postgres.conftest import Clusters, dr_physical, free_port, json_of

SYSTEM = "base-app"


@dataclass
class History:
    server: ArchivingServer
    repository: Repository
    full: BaseBackupManifest
    first: BaseBackupManifest
    second: BaseBackupManifest
    target: datetime
    rows_at_target: int
    newer_full: BaseBackupManifest


@pytest.fixture(scope="module")
def history(prefect_server: None) -> Iterator[History]:
    """A full backup, two incrementals and, after a target time, another full backup, of a
    server written to all along; the server keeps running."""
    base, repo = world_dir("dr-tests-base-"), world_dir("dr-tests-base-repo-")
    server = ArchivingServer(base, SYSTEM, str(repo), archive_timeout=1).init()
    conninfo = server.start()
    repository = Repository(LocalStore(repo), "test")
    writer = Writer(conninfo)
    try:
        writer.create()
        writer.start()
        time.sleep(0.5)
        full = basebackup.take_base_backup(conninfo, SYSTEM, repository)
        time.sleep(0.5)
        dsn = f"postgresql://postgres@/postgres?host={server.datadir}"
        first_id = json_of(
            dr_physical(
                "backup",
                "--system",
                SYSTEM,
                "--repo",
                str(repo),
                "--dsn",
                dsn,
                "--incremental",
                "--json",
            )
        )["backup_id"]
        first = next(
            b.manifest for b in basebackup.base_backups(repository, SYSTEM) if b.id == first_id
        )
        time.sleep(0.5)
        second = basebackup.take_base_backup(conninfo, SYSTEM, repository, incremental=True)
        time.sleep(1)
        mark = writer.mark()
        target, rows_at_target = mark.time, mark.rows
        time.sleep(1)
        newer_full = basebackup.take_base_backup(conninfo, SYSTEM, repository)
        time.sleep(1)
        writer.stop()
        time.sleep(2.5)
        yield History(server, repository, full, first, second, target, rows_at_target, newer_full)
    finally:
        writer.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(repo, ignore_errors=True)


def test_a_full_base_backup_is_committed_with_what_a_restore_needs(history: History) -> None:
    full, store = history.full, history.repository.store
    with history.server.conninfo.connect() as conn:
        row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    assert row is not None
    assert full.kind == "full" and full.chain == [full.id] and full.parent is None
    assert full.system_identifier == row[0]
    assert full.server_version.startswith("18") and full.server_version_num >= 180000
    assert full.timeline == 1 and full.wal_segment_size == 16 * 1024 * 1024
    assert parse_lsn(full.start_lsn) < parse_lsn(full.end_lsn)
    assert full.started < full.finished
    prefix = f"postgres/{SYSTEM}/base/{full.id}/"
    keys = {info.key[len(prefix) :]: info.size for info in store.list(prefix)}
    assert set(keys) == {"base.tar.zst", "backup_manifest", "base_backup.json"}
    assert MARKER not in keys
    for entry in full.objects:
        assert keys[entry.name] == entry.size
    pg_manifest = json.loads(store.read_bytes(prefix + "backup_manifest"))
    assert str(pg_manifest["System-Identifier"]) == full.system_identifier
    assert pg_manifest["WAL-Ranges"][0]["Start-LSN"] == full.start_lsn
    # The logical listing and the abandoned-attempt cleanup do not see base backups.
    assert history.repository.backups("postgres", SYSTEM) == []
    assert history.repository.abandoned("postgres") == []
    backup_files = [f.name for f in list_archive(store, SYSTEM) if f.wal.kind == "backup"]
    assert len(backup_files) == 4  # PostgreSQL's own backup history file, for each


def test_incrementals_form_a_chain(history: History) -> None:
    first, second = history.first, history.second
    assert first.kind == "incremental" and first.parent == history.full.id
    assert first.chain == [history.full.id, first.id]
    assert second.chain == [history.full.id, first.id, second.id]
    assert first.size < history.full.size / 2
    listed = [b.id for b in basebackup.base_backups(history.repository, SYSTEM)]
    assert listed == [history.newer_full.id, second.id, first.id, history.full.id]


def test_an_incremental_chain_is_restored_through_pg_combinebackup_beside_the_live_server(
    history: History, clusters: Clusters
) -> None:
    pgdata, port = clusters.path("chain"), free_port()
    result = json_of(
        dr_physical(
            "restore",
            "--system",
            SYSTEM,
            "--repo",
            str(history.repository.store.root),
            "--at",
            history.target.isoformat(),
            "--pgdata",
            str(pgdata),
            "--start",
            "--port",
            str(port),
            "--json",
        )
    )
    assert result["backups"] == [history.full.id, history.first.id, history.second.id]
    restored = ConnInfo(host=str(pgdata), port=port, user="postgres", dbname="postgres")
    with restored.connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM ticks ORDER BY id")]
    assert ids == list(range(1, history.rows_at_target + 1))
    with history.server.conninfo.connect() as conn:  # the live server was never touched
        live = conn.execute("SELECT count(*) > %s FROM ticks", (len(ids),)).fetchone()
    assert live == (True,)
    assert not list(pgdata.parent.glob(".chain*")) and not list(pgdata.parent.glob(".*dr-chain*"))


def test_pg_verifybackup_checks_an_unpacked_backup(history: History, tmp_path: Path) -> None:
    backup = next(
        b for b in basebackup.base_backups(history.repository, SYSTEM) if b.id == history.full.id
    )
    directory = tmp_path / "unpacked"
    directory.mkdir(mode=0o700)
    basebackup.unpack_base_backup(history.repository, backup, directory, durable=False)
    basebackup.verify_directory(directory)
    with open(directory / "PG_VERSION", "a") as handle:
        handle.write("x")
    with pytest.raises(RestoreVerificationFailed, match="PG_VERSION"):
        basebackup.verify_directory(directory)


def test_a_damaged_base_backup_is_refused_and_nothing_is_left(
    history: History, clusters: Clusters
) -> None:
    copy = world_dir("dr-tests-damaged-") / "repo"
    copy_repository(history.repository.store.root, copy)
    try:
        data = copy / f"postgres/{SYSTEM}/base/{history.newer_full.id}/base.tar.zst"
        damaged = bytearray(data.read_bytes())
        damaged[len(damaged) // 3] ^= 0x04
        data.write_bytes(bytes(damaged))
        pgdata = clusters.path("damaged")
        with pytest.raises(ChecksumMismatch, match=history.newer_full.id):
            restore_to_point(
                Repository(LocalStore(copy)),
                SYSTEM,
                pitr.RecoveryTarget("latest"),
                pgdata,
                repo_specs=[str(copy)],
            )
        assert not pgdata.exists()
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def test_a_backup_whose_wal_does_not_reach_the_repository_is_refused(history: History) -> None:
    # The server archives as SYSTEM; a backup filed under another name would have no WAL.
    with pytest.raises(OperationFailed, match=r"did not reach .* for system elsewhere"):
        basebackup.take_base_backup(
            history.server.conninfo, "elsewhere", history.repository, wal_timeout=3
        )
    assert list(history.repository.store.list("postgres/elsewhere/")) == []


def test_retention_deletes_whole_chains_and_only_wal_no_kept_backup_needs(
    history: History, clusters: Clusters
) -> None:
    copy = world_dir("dr-tests-retention-") / "repo"
    copy_repository(history.repository.store.root, copy)
    try:
        repository = Repository(LocalStore(copy), "copy")
        later = datetime.now(UTC) + timedelta(days=30)
        both = pitr.plan_physical_retention(repository, SYSTEM, later, 7, min_keep=2)
        assert {b.id for b in both.keep} == {
            history.full.id,
            history.first.id,
            history.second.id,
            history.newer_full.id,
        }
        assert both.delete == []
        assert all(f.wal.start_lsn() < parse_lsn(history.full.start_lsn) for f in both.wal_delete)

        plan = pitr.plan_physical_retention(repository, SYSTEM, later, 7, min_keep=1)
        assert [b.id for b in plan.keep] == [history.newer_full.id]
        assert {b.id for b in plan.delete} == {history.full.id, history.first.id, history.second.id}
        start = parse_lsn(history.newer_full.start_lsn) // (16 * 1024 * 1024)
        assert plan.wal_delete and all(f.wal.segno() < start for f in plan.wal_delete)
        pitr.apply_physical_retention(repository, plan)

        remaining = list_archive(repository.store, SYSTEM)
        assert min(f.wal.segno() for f in remaining if f.wal.kind != "history") == start
        backup = basebackup.base_backups(repository, SYSTEM)[0]
        assert pitr.check_wal_chain(repository, SYSTEM, backup).complete
        window = pitr.recovery_window(repository, SYSTEM)
        assert window.earliest == history.newer_full.finished and window.gap is None
        pgdata, port = clusters.path("after-retention"), free_port()
        restored = restore_to_point(
            repository,
            SYSTEM,
            pitr.RecoveryTarget("latest"),
            pgdata,
            repo_specs=[str(copy)],
            start=True,
            port=port,
        )
        assert restored.reached is not None and restored.reached.timeline == 2
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def test_status_figures_the_recovery_window(history: History) -> None:
    window = pitr.recovery_window(history.repository, SYSTEM)
    assert window.base_backups == 4 and window.gap is None
    assert window.earliest == history.full.finished
    assert window.latest is not None and window.latest > history.target
    assert window.newest_wal_archived is not None
    quick = pitr.recovery_window(history.repository, SYSTEM, precise=False)
    assert quick.latest is None and quick.newest_wal == window.newest_wal
