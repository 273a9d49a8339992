"""The repository format on a local directory: ids, latest, retention, abandoned attempts,
legacy backups. The same logic runs on Azure in tests/store (the store contract)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr_runbooks.errors import BackupNotFound, BadInput
from dr_runbooks.repository import (
    MANIFEST,
    MARKER,
    Manifest,
    ObjectEntry,
    Repository,
    new_backup_id,
    parse_time,
)
from dr_runbooks.storage import LocalStore

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def fake_backup(
    repo: Repository, backup_id: str, point: datetime, system: str = "s", database: str = "db"
) -> Manifest:
    """A committed backup with one small object, written through the real commit path."""
    prefix = repo.begin("postgres", system, database, backup_id, now=point)
    payload = f"data of {backup_id}".encode()
    repo.store.put_bytes(prefix + "data.dump.zst", payload)
    manifest = Manifest(
        id=backup_id,
        engine="postgres",
        system=system,
        database=database,
        started=point,
        finished=point + timedelta(seconds=5),
        consistent_point=point,
        objects=[
            ObjectEntry(
                name="data.dump.zst", size=len(payload), sha256=hashlib.sha256(payload).hexdigest()
            )
        ],
    )
    repo.commit(prefix, manifest)
    return manifest


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(LocalStore(tmp_path / "repo"), "local", retention_days=7, min_keep=3)


def test_backup_ids_are_utc_start_plus_suffix_and_unique() -> None:
    ids = {new_backup_id(NOW) for _ in range(50)}
    assert all(re.fullmatch(r"20261128T120000Z-[0-9a-f]{4}", i) for i in ids)
    assert len(ids) > 40


def test_latest_is_the_newest_consistent_point_not_the_listing_order(repo: Repository) -> None:
    # Ids that sort the other way round from their consistent points.
    fake_backup(repo, "20991231T000000Z-aaaa", NOW - timedelta(days=2))
    fake_backup(repo, "20000101T000000Z-bbbb", NOW - timedelta(hours=1))
    fake_backup(repo, "20500101T000000Z-cccc", NOW - timedelta(days=1))
    assert repo.find("postgres", "s", "db").id == "20000101T000000Z-bbbb"
    assert [b.id for b in repo.backups("postgres")] == [
        "20000101T000000Z-bbbb",
        "20500101T000000Z-cccc",
        "20991231T000000Z-aaaa",
    ]
    before = repo.find("postgres", "s", "db", before=NOW - timedelta(hours=2))
    assert before.id == "20500101T000000Z-cccc"


def test_unknown_id_and_nothing_before_are_bad_input(repo: Repository) -> None:
    fake_backup(repo, "20261128T000000Z-aaaa", NOW)
    with pytest.raises(BackupNotFound, match="no complete backup with id 'nope'"):
        repo.find("postgres", "s", "db", backup_id="nope")
    with pytest.raises(BackupNotFound, match="no complete backup before"):
        repo.find("postgres", "s", "db", before=NOW - timedelta(days=1))
    assert BackupNotFound.exit_code == 2


def test_folders_without_a_manifest_are_ignored(repo: Repository) -> None:
    fake_backup(repo, "20261128T000000Z-aaaa", NOW)
    repo.begin("postgres", "s", "db", "20261128T010000Z-bbbb")
    repo.store.put_bytes("postgres/s/db/20261128T010000Z-bbbb/data.dump.zst", b"partial")
    assert [b.id for b in repo.backups("postgres")] == ["20261128T000000Z-aaaa"]


def test_retention_deletes_old_backups_but_keeps_min_keep(repo: Repository) -> None:
    ages = [1, 3, 10, 20, 40]
    for index, days in enumerate(ages):
        fake_backup(repo, f"2026110{index}T000000Z-000{index}", NOW - timedelta(days=days))
    plan = repo.plan_retention("postgres", "s", "db", now=NOW)
    assert sorted(b.id for b in plan.delete) == ["20261103T000000Z-0003", "20261104T000000Z-0004"]
    # All backups old: min_keep (3) of the newest survive.
    plan = repo.plan_retention("postgres", "s", "db", now=NOW + timedelta(days=100))
    assert [b.id for b in plan.keep] == [
        "20261100T000000Z-0000",
        "20261101T000000Z-0001",
        "20261102T000000Z-0002",
    ]
    for backup in plan.delete:
        repo.delete_backup(backup)
    assert len(repo.backups("postgres")) == 3
    assert list(repo.store.list("postgres/s/db/20261104T000000Z-0004/")) == []


def test_retention_by_kind_leaves_other_kinds_alone(repo: Repository) -> None:
    for index, (days, kind) in enumerate(
        [(0.1, "hourly"), (1, "hourly"), (3, "hourly"), (4, "hourly"), (3, "full"), (5, "full")]
    ):
        manifest = fake_backup(
            repo, f"2026112{index}T000000Z-000{index}", NOW - timedelta(days=days)
        )
        path = repo.store.root / repo.prefix("postgres", "s", "db", manifest.id) / MANIFEST  # type: ignore[attr-defined]
        path.write_text(manifest.model_copy(update={"kind": kind}).model_dump_json())
    plan = repo.plan_retention(
        "postgres", "s", "db", now=NOW, retention_days=2, min_keep=1, kind="hourly"
    )
    assert sorted(b.id for b in plan.delete) == ["20261122T000000Z-0002", "20261123T000000Z-0003"]
    assert all(b.manifest and b.manifest.kind == "hourly" for b in plan.keep)


def test_abandoned_attempts_older_than_a_day_are_removed_and_nothing_else(repo: Repository) -> None:
    fake_backup(repo, "20261120T000000Z-done", NOW - timedelta(days=8))
    old = repo.begin("postgres", "s", "db", "20261126T000000Z-dead", now=NOW - timedelta(days=2))
    repo.store.put_bytes(old + "data.dump.zst", b"half")
    young = repo.begin("postgres", "s", "db", "20261128T110000Z-live", now=NOW - timedelta(hours=1))
    repo.store.put_bytes("postgres/s/db/someone-elses/notes.txt", b"not ours")
    repo.store.put_bytes("postgres/s/db/no-marker-folder/data.dump.zst", b"no marker")

    assert repo.remove_abandoned("postgres", now=NOW) == [old]
    keys = {info.key for info in repo.store.list("postgres/")}
    assert not any(k.startswith(old) for k in keys)
    assert young + MARKER in keys
    assert "postgres/s/db/someone-elses/notes.txt" in keys
    assert "postgres/s/db/no-marker-folder/data.dump.zst" in keys
    assert "postgres/s/db/20261120T000000Z-done/" + MANIFEST in keys


def test_legacy_script_backups_are_listed_and_kept_by_retention(repo: Repository) -> None:
    repo.store.create()
    repo.store.put_bytes("postgres-backups/backup_20251215_050000.sql.gz", b"x" * 10)
    repo.store.put_bytes("backup_20251214_000000.sql.gz", b"y" * 20)
    repo.store.put_bytes("mongodb-backups/backup_20251215_030000.tar.gz", b"z")
    fake_backup(repo, "20261128T000000Z-aaaa", NOW)
    listed = repo.backups("postgres", "s", "db")
    assert [(b.id, b.legacy) for b in listed] == [
        ("20261128T000000Z-aaaa", False),
        ("backup_20251215_050000.sql.gz", True),
        ("backup_20251214_000000.sql.gz", True),
    ]
    assert listed[1].consistent_point == datetime(2025, 12, 15, 5, 0, tzinfo=UTC)
    assert listed[1].size == 10
    plan = repo.plan_retention("postgres", "s", "db", now=NOW, min_keep=1, retention_days=1)
    assert plan.delete == []
    plan = repo.plan_retention(
        "postgres",
        "s",
        "db",
        now=NOW + timedelta(days=2),
        min_keep=1,
        retention_days=1,
        include_legacy=True,
    )
    assert sorted(b.id for b in plan.delete) == [
        "backup_20251214_000000.sql.gz",
        "backup_20251215_050000.sql.gz",
    ]


def test_verification_records_live_next_to_the_backup(repo: Repository) -> None:
    fake_backup(repo, "20261128T000000Z-aaaa", NOW)
    backup = repo.find("postgres", "s", "db")
    key = repo.record_verification(backup, {"outcome": "ok"})
    assert key.startswith(backup.prefix + "verifications/")
    assert repo.verifications(backup) == [{"outcome": "ok"}]
    assert [b.id for b in repo.backups("postgres")] == ["20261128T000000Z-aaaa"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T05:00:00", datetime(2026, 11, 28, 5, tzinfo=UTC)),
        ("2026-11-28T05:00:00Z", datetime(2026, 11, 28, 5, tzinfo=UTC)),
        ("2026-11-28T07:00:00+02:00", datetime(2026, 11, 28, 5, tzinfo=UTC)),
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=UTC)),
    ],
)
def test_times_without_zone_are_utc(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00", "28/11/2026", ""])
def test_malformed_times_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="malformed time"):
        parse_time(text)
