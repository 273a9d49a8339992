"""Nothing touched before the checksum is right; no password in argv, logs or errors; the
tools engine's credentials only in a 0600 file that is gone afterwards."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from pymongo.errors import OperationFailure

from dr_runbooks.errors import BadInput, ChecksumMismatch, ConnectionFailed, DumpFailed
from dr_runbooks.mongo.backup import DATA, backup_database
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.mongo.fetch import fetch_backup
from dr_runbooks.mongo.verification import verify_backup
from dr_runbooks.redaction import redact
from dr_runbooks.repository import Repository
from tests.mongodb_engine.conftest import PASSWORD, URI
from tests.mongodb_engine.fake import FakeServer
from tests.mongodb_engine.seed import seed_shop
from tests.shared_data import shared_data

FIXTURE = ("mongodb-mongo-tools", "mongorestore", "testdata", "dump-w-oplog.archive")


def _corrupt(repository: Repository) -> None:
    backup = repository.find("mongodb", "app", "shop")
    path = Path(repository.store.location) / (backup.prefix + DATA)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_backup_is_refused_before_any_server_is_touched(
    server: FakeServer,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    seed_shop(server, orders=50)
    backup_database(conninfo_for(server), "shop", "app", repository, engine="native")
    _corrupt(repository)
    backup = repository.find("mongodb", "app", "shop")
    target = FakeServer()

    with pytest.raises(ChecksumMismatch, match=f"backup {backup.id}: {DATA} is corrupt"):
        fetch_backup(repository, backup)
    result = verify_backup(target.client, repository, backup)

    assert result["outcome"] == "failed"
    assert "is corrupt" in result["problems"][0]
    assert target.calls == [] and target.clients_opened == 0


def test_no_password_in_logs_errors_or_reprs(
    server: FakeServer,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = conninfo_for(server)
    assert PASSWORD not in repr(info) and PASSWORD not in info.describe()
    assert PASSWORD in info.uri()  # it is there for the client, and only there
    assert PASSWORD not in redact(f"connecting to {URI}")
    with pytest.raises(BadInput) as malformed:
        MongoConnInfo.from_uri(f"mongodb://admin:{PASSWORD}@/")
    assert PASSWORD not in str(malformed.value)

    refusing = FakeServer()
    refusing.refuse = OperationFailure(f"Authentication failed for {URI}", code=18)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConnectionFailed) as failed:  # refused credentials: bad input
        backup_database(conninfo_for(refusing), "shop", "app", repository, engine="native")
    assert "Authentication failed" in str(failed.value)
    assert PASSWORD not in str(failed.value)
    assert PASSWORD not in caplog.text


# -- the tools engine ------------------------------------------------------------------------------


@pytest.fixture
def fake_mongodump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``mongodump`` on PATH that records its argv, its config file's mode and content, and
    writes a real archive (mongo-tools' dump-w-oplog.archive) to stdout."""
    archive = shared_data(*FIXTURE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record"
    record.mkdir()
    script = bin_dir / "mongodump"
    script.write_text(
        f"""#!/bin/sh
echo "$0 $*" >> {record}/argv
for arg in "$@"; do
  case "$arg" in
    --config=*) file="${{arg#--config=}}"
                echo "$file" > {record}/config_path
                stat -c %a "$file" > {record}/mode
                cat "$file" > {record}/config ;;
  esac
done
if [ -f {record}/fail ]; then
  echo "Failed: can't create session: connection() error: auth failed for {URI}" >&2
  exit 1
fi
exec cat {archive}
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_the_tools_engine_streams_mongodump_with_credentials_only_in_a_0600_file(
    fake_mongodump: Path,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    server = FakeServer(replica_set="rs0")
    manifest = backup_database(conninfo_for(server), "test", "app", repository, engine="auto")

    argv = (fake_mongodump / "argv").read_text()
    config_path = (fake_mongodump / "config_path").read_text().strip()
    assert argv.split()[1:] == [f"--config={config_path}", "--archive", "--oplog"]
    assert PASSWORD not in argv
    assert (fake_mongodump / "mode").read_text().strip() == "600"
    expected = MongoConnInfo.from_uri(URI).uri()
    assert (fake_mongodump / "config").read_text() == f"uri: {json.dumps(expected)}\n"
    assert PASSWORD in expected
    assert not Path(config_path).exists() and not Path(config_path).parent.exists()

    # Only the database asked for, and the oplog entries that touch it.
    assert manifest.tables == {"test.foo": 25}
    assert manifest.details["engine"] == "tools"
    assert manifest.details["oplog"]["entries"] == 16
    assert manifest.consistency == "oplog"
    assert manifest.tool_version.startswith("mongodump ")

    target = FakeServer()
    result = verify_backup(target.client, repository, repository.find("mongodb", "app", "test"))
    assert result["outcome"] == "ok", result["problems"]
    assert result["documents"] == 25 and result["oplog"]["applied"] == 16


def test_the_tools_engine_on_a_standalone_dumps_one_database(
    fake_mongodump: Path,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    manifest = backup_database(
        conninfo_for(FakeServer()), "test", "app", repository, engine="tools"
    )
    argv = (fake_mongodump / "argv").read_text().split()
    assert argv[2:] == ["--archive", "--db=test"]
    assert manifest.consistency == "per-collection"


def test_a_failing_mongodump_is_reported_redacted_and_leaves_no_backup(
    fake_mongodump: Path,
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
) -> None:
    (fake_mongodump / "fail").write_text("")
    with pytest.raises(DumpFailed, match=r"mongodump exited 1: Failed: can't create session") as e:
        backup_database(conninfo_for(FakeServer()), "test", "app", repository, engine="tools")
    assert PASSWORD not in str(e.value)
    assert repository.backups("mongodb") == []
    assert list(repository.store.list()) == []
    config_path = (fake_mongodump / "config_path").read_text().strip()
    assert not Path(config_path).exists()


def test_engine_tools_without_mongodump_is_a_clear_error(
    repository: Repository,
    conninfo_for: Callable[[FakeServer], MongoConnInfo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DumpFailed, match="mongodump is not on PATH"):
        backup_database(conninfo_for(FakeServer()), "test", "app", repository, engine="tools")
