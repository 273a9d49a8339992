"""Physical protection wired into the runbooks and the CLI, on a real server archiving its WAL
through the shared ``dr wal push``: the scheduled base backups (full, incremental, the hourly
dump skipped), ``dr status`` and ``dr backups list`` with the recovery window,
``verify-backups``' test recovery and WAL-gap check, and ``dr backups prune`` keeping every
segment a kept base backup needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL

from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.postgres import basebackup
from dr_runbooks.postgres.wal.archive import list_archive
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from flows.backup_postgres import backup_postgres
from flows.backup_postgres_physical import backup_postgres_physical
from flows.verify_backups import verify_backups
from tests.postgres.archiving import ArchivingServer, Writer, shared_dr, world_dir

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "phys-db"


@dataclass
class World:
    server: ArchivingServer
    repo: Path
    config: str
    writer: Writer

    @property
    def repository(self) -> Repository:
        return Repository(LocalStore(self.repo), "local")

    def dr(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "DR_CONFIG": self.config,
            "DR_WAL_PROGRAM": shared_dr(),
            "COLUMNS": "200",
        }
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=600,
        )

    def json(self, *args: str) -> Any:
        result = self.dr(*args, "--json")
        assert result.stdout, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def world(prefect_server: None) -> Iterator[World]:
    base, repo = world_dir("dr-tests-physrb-"), world_dir("dr-tests-physrb-repo-")
    server = ArchivingServer(base, SYSTEM, str(repo), archive_timeout=1).init()
    server.start()
    config = base / "dr.yaml"
    config.write_text(
        f"""
objectives:
  rpo:
    database: 1h
repositories:
  local:
    type: local
    path: {repo}
    retention_days: 0
    min_keep: 1
systems:
  {SYSTEM}:
    engine: postgres
    physical: true
    connection:
      host: {server.datadir}
      user: postgres
      dbname: postgres
    databases: [postgres]
    repositories: [local]
"""
    )
    config.chmod(0o644)
    previous = os.environ.get("DR_WAL_PROGRAM")
    os.environ["DR_WAL_PROGRAM"] = shared_dr()
    writer = Writer(server.conninfo)
    try:
        writer.create()
        writer.start()
        yield World(server, repo, str(config), writer)
    finally:
        writer.stop()
        server.stop()
        if previous is None:
            os.environ.pop("DR_WAL_PROGRAM", None)
        else:
            os.environ["DR_WAL_PROGRAM"] = previous
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(repo, ignore_errors=True)


def test_scheduled_base_backups_status_list_and_verification(world: World) -> None:
    config = world.config
    backup_postgres(system=SYSTEM, kind="full", config_path=config, retention=False)
    full = backup_postgres_physical(system=SYSTEM, config_path=config, retention=False)
    assert full["kind"] == "physical-full"
    time.sleep(0.5)
    incremental = backup_postgres_physical(
        system=SYSTEM, incremental=True, config_path=config, retention=False
    )
    assert incremental["kind"] == "physical-incremental"
    [chained] = [b for b in basebackup.base_backups(world.repository, SYSTEM) if b.kind != "full"]
    assert chained.manifest.chain[0] == full["backup_id"]

    # The hourly dump gives way to the incremental base backup and the WAL.
    assert backup_postgres(system=SYSTEM, kind="hourly", config_path=config) == []

    time.sleep(2.5)  # archive_timeout = 1: the newest writes reach the archive
    status = world.json("status")
    [cluster] = [r for r in status["systems"] if r["database"] == "(cluster)"]
    assert cluster["state"] == "OK", cluster
    assert "RPO achieved" in cluster["detail"] and "recoverable from" in cluster["detail"]
    assert 0 <= cluster["age_seconds"] < 60

    listed = world.json("backups", "list", "--system", SYSTEM)
    kinds = {r["id"]: r["kind"] for r in listed}
    assert kinds[full["backup_id"]] == "physical-full"
    assert kinds[incremental["backup_id"]] == "physical-incremental"
    window = next(r for r in listed if r["id"] == full["backup_id"])["recovery_window"]
    assert window["earliest_backup"] == full["backup_id"] and window["gap"] is None
    shown = world.dr("backups", "list", "--system", SYSTEM)
    assert f"{SYSTEM} in local: recoverable to any second from" in shown.stdout, shown.stderr

    results = verify_backups(systems=[SYSTEM], config_path=config, notify=False)
    [physical] = [r for r in results if r["database"].startswith("(cluster")]
    assert physical["outcome"] == "ok", physical
    assert physical["detail"].startswith(
        f"recovered {full['backup_id']}, {incremental['backup_id']}"
    )


def test_prune_keeps_every_segment_a_kept_base_backup_needs(world: World) -> None:
    config = world.config
    older = {b.id for b in basebackup.base_backups(world.repository, SYSTEM)}
    assert older, "the first test takes the first chain"
    newest = backup_postgres_physical(system=SYSTEM, config_path=config, retention=False)
    needed = basebackup.base_backups(world.repository, SYSTEM)[0]
    wal_before = {f.name for f in list_archive(world.repository.store, SYSTEM)}

    planned = world.json("backups", "prune", "--system", SYSTEM, "--dry-run")
    actions = {c["backup_id"]: c["action"] for c in planned["changes"]}
    assert all(actions[i].startswith("would delete base backup") for i in older)
    assert newest["backup_id"] not in actions
    assert any("WAL files" in a for a in actions.values())
    assert {b.id for b in basebackup.base_backups(world.repository, SYSTEM)} >= older

    done = world.json("backups", "prune", "--system", SYSTEM, "--yes")
    assert not [c for c in done["changes"] if c["action"].startswith("would")]
    left = basebackup.base_backups(world.repository, SYSTEM)
    assert [b.id for b in left] == [newest["backup_id"]]
    archive = list_archive(world.repository.store, SYSTEM)
    assert wal_before - {f.name for f in archive}  # the server archives on meanwhile
    size = needed.manifest.wal_segment_size
    assert all(
        f.wal.segno(size) >= needed.start_lsn // size for f in archive if f.wal.kind != "history"
    )
    # What is left still recovers.
    results = verify_backups(systems=[SYSTEM], config_path=config, notify=False)
    assert all(r["outcome"] == "ok" for r in results), results


def test_a_gap_in_the_wal_fails_verification_and_status_naming_the_segment(world: World) -> None:
    time.sleep(3)  # several more segments archived after the newest base backup
    newest = basebackup.base_backups(world.repository, SYSTEM)[0]
    size = newest.manifest.wal_segment_size
    segments = sorted(
        (
            f
            for f in list_archive(world.repository.store, SYSTEM)
            if f.wal.kind == "segment" and f.wal.segno(size) > newest.end_lsn // size
        ),
        key=lambda f: f.wal.segno(size),
    )
    assert len(segments) >= 2, "archive_timeout = 1 with a busy writer archives every second"
    gone = segments[0]
    world.repository.store.delete([gone.key])

    status = world.json("status")
    [cluster] = [r for r in status["systems"] if r["database"] == "(cluster)"]
    assert cluster["state"] == "FAILED" and gone.name in cluster["detail"], cluster

    with pytest.raises(RestoreVerificationFailed, match=f"gap: {gone.name}"):
        verify_backups(systems=[SYSTEM], config_path=world.config, notify=False)
