"""Connection errors as a person needs them: a request the server refuses is bad input (exit 2,
nothing to retry); a server that cannot be reached is transient (retried, then exit 1)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from dr_runbooks.errors import BadInput, ConnectionFailed, OperationFailed, ServerUnreachable
from dr_runbooks.postgres.connection import ConnInfo
from tests.pg_helpers import PasswordServer

PASSWORD = "Right-Pa55word-7731"


@pytest.fixture(scope="module")
def password_server(pg_server: ConnInfo) -> Iterator[ConnInfo]:
    # pg_server first: starting it creates the OS user the password server runs as. The data
    # lives outside pytest's temporary directory, which that user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="dr-tests-scram-"))
    server = PasswordServer(base, PASSWORD)
    info = server.start()
    yield info
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_right_password_connects(password_server: ConnInfo) -> None:
    with replace(password_server, password=SecretStr(PASSWORD)).connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_wrong_password_is_bad_input_without_the_password(password_server: ConnInfo) -> None:
    wrong = "Wrong-Pa55word-0000"
    with pytest.raises(ConnectionFailed, match="password authentication failed") as refused:
        replace(password_server, password=SecretStr(wrong)).connect()
    assert isinstance(refused.value, BadInput) and wrong not in str(refused.value)


def test_an_unknown_database_or_role_is_bad_input(pg_server: ConnInfo) -> None:
    with pytest.raises(ConnectionFailed, match='database "no_such_db_x" does not exist'):
        pg_server.connect(dbname="no_such_db_x")
    with pytest.raises(ConnectionFailed, match='role "nobody_x" does not exist'):
        replace(pg_server, user="nobody_x").connect()


def test_a_server_that_cannot_be_reached_is_transient() -> None:
    down = ConnInfo(host="127.0.0.1", port=_closed_port(), user="app", dbname="shop")
    with pytest.raises(ServerUnreachable, match="refused") as unreachable:
        down.connect()
    assert isinstance(unreachable.value, OperationFailed)
    assert not isinstance(unreachable.value, BadInput)


def _dr(*args: str, dsn: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DR_DSN": dsn, "DR_CONFIG": ""}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_a_backup_of_an_unreachable_server_is_retried_and_exits_1(tmp_path: Path) -> None:
    dsn = f"postgresql://app@127.0.0.1:{_closed_port()}/shop"
    result = _dr("backup", "postgres", "--repo", str(tmp_path / "repo"), dsn=dsn, tmp_path=tmp_path)

    assert result.returncode == 1, result.stderr
    assert "cannot connect" in result.stderr and "refused" in result.stderr
    assert "nothing" not in result.stderr  # not reported as bad input
    # The retry is said, not a silent stall.
    assert "attempt 1 of 2 failed" in result.stderr and "refused" in result.stderr
    assert "retrying in 10 second(s)" in result.stderr
    assert not list((tmp_path / "repo").rglob("manifest.json"))


def test_a_backup_with_a_wrong_password_exits_2_at_once(
    password_server: ConnInfo, tmp_path: Path
) -> None:
    dsn = f"postgresql://postgres:Wrong-Pa55word-0000@/postgres?host={password_server.host}"
    result = _dr("backup", "postgres", "--repo", str(tmp_path / "repo"), dsn=dsn, tmp_path=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "password authentication failed" in result.stderr
    assert "Wrong-Pa55word-0000" not in result.stderr + result.stdout
