"""``dr backups inspect`` on mongodump output and on our backups, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from dr_runbooks.mongo.backup import backup_database
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.repository import Manifest, ObjectEntry, Repository
from dr_runbooks.storage import LocalStore
from tests.mongodb_engine.fake import FakeServer
from tests.mongodb_engine.seed import seed_shop
from tests.shared_data import REPO_ROOT, shared_data

TESTDATA = ("mongodb-mongo-tools", "mongorestore", "testdata")


def dr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``dr`` entry point, in a directory without a dr.yaml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DR_"))}
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
    )


def test_inspect_a_mongodump_directory_as_json(tmp_path: Path) -> None:
    dump = shared_data(*TESTDATA, "timeseries_tests", "ts_dump")

    completed = dr("backups", "inspect", str(dump), "--json", cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["kind"] == "directory"
    by_namespace = {c["namespace"]: c for c in summary["collections"]}
    foo = by_namespace["timeseries_test.foo_ts"]
    assert foo["type"] == "timeseries" and foo["documents"] == 10
    assert foo["options"]["timeseries"]["timeField"] == "ts"
    assert len(foo["indexes"]) == 2


def test_inspect_a_broken_archive_fails_with_one_line(tmp_path: Path) -> None:
    completed = dr(
        "backups", "inspect", str(shared_data(*TESTDATA, "bad-format.archive")), cwd=tmp_path
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and "invalid metadata JSON" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_inspect_our_backups_by_id_mongodb_and_postgres(
    tmp_path: Path, conninfo_for: Callable[[FakeServer], MongoConnInfo]
) -> None:
    server = FakeServer()
    seed_shop(server, orders=12)
    repository = Repository(LocalStore(tmp_path / "repo"))
    manifest = backup_database(conninfo_for(server), "shop", "app", repository, engine="native")
    pg = Manifest(
        id="20240501T020000Z-abcd",
        engine="postgres",
        system="app-db",
        database="shop",
        started=manifest.started,
        finished=manifest.finished,
        consistent_point=manifest.started,
        objects=[ObjectEntry(name="data.dump.zst", size=1, sha256="0" * 64)],
        tables={"public.orders": 42},
    )
    prefix = repository.begin("postgres", "app-db", "shop", pg.id)
    repository.store.put_bytes(prefix + "data.dump.zst", b"x")
    repository.commit(prefix, pg)
    repo = str(tmp_path / "repo")

    ours = dr("backups", "inspect", manifest.id, "--repo", repo, "--json", cwd=tmp_path)
    read = dr("backups", "inspect", manifest.id, "--repo", repo, "--read", "--json", cwd=tmp_path)
    postgres = dr("backups", "inspect", pg.id, "--repo", repo, cwd=tmp_path)

    assert ours.returncode == 0, ours.stderr
    collections = {c["namespace"]: c for c in json.loads(ours.stdout)["collections"]}
    assert collections["shop.orders"]["documents"] == 12
    assert "customer_hashed" in collections["shop.orders"]["indexes"]
    from_archive = {c["namespace"]: c for c in json.loads(read.stdout)["collections"]}
    assert {ns: c["documents"] for ns, c in from_archive.items()} == {
        ns: c["documents"] for ns, c in collections.items()
    }
    assert postgres.returncode == 0, postgres.stderr
    assert "public.orders" in postgres.stdout and "42" in postgres.stdout
