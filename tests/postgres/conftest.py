"""Fixtures for WAL archiving and point-in-time recovery on real PostgreSQL servers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL

from tests.postgres.archiving import OS_USER, ArchivingServer, shared_dr, stop_cluster, world_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dr_wal(
    *args: str,
    as_server_user: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``dr wal …`` from the shared installation, as the database server's OS user runs it."""
    argv = [shared_dr(), "wal", *args]
    if as_server_user and os.geteuid() == 0:
        argv = ["runuser", "-u", OS_USER, "--", *argv]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd or "/",
    )


def dr_physical(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``backup …`` runs ``dr backup postgres --physical …`` (a flow: the session's Prefect
    server must be up, see the ``prefect_server`` fixture); ``restore …`` runs
    ``dr restore postgres …`` (no Prefect)."""
    command, rest = args[0], list(args[1:])
    words = ["backup", "postgres", "--physical"] if command == "backup" else [command, "postgres"]
    api = {"PREFECT_API_URL": str(PREFECT_API_URL.value())} if PREFECT_API_URL.value() else {}
    return subprocess.run(
        [sys.executable, "-m", "cli", *words, *rest],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            **api,
            "DR_CONFIG": "",
            "DR_WAL_PROGRAM": shared_dr(),
            **(env or {}),
        },
        stdin=subprocess.DEVNULL,
    )


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Clusters:
    """Restored clusters to stop at the end of a test."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: list[Path] = []

    def path(self, name: str) -> Path:
        path = self.base / name
        self.made.append(path)
        return path

    def stop_all(self) -> None:
        for path in self.made:
            stop_cluster(path)

    def logs(self) -> str:
        """The recovery logs of the clusters still there, for a failing test's report."""
        texts = []
        for path in self.made:
            log = path / "dr-recovery.log"
            if log.exists():
                texts.append(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(texts)


@pytest.fixture
def clusters() -> Iterator[Clusters]:
    base = world_dir("dr-tests-clusters-")
    made = Clusters(base)
    yield made
    made.stop_all()
    if not os.environ.get("DR_TESTS_KEEP"):  # keep the clusters' files to debug a failure
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def archive_dir() -> Iterator[Path]:
    """A repository directory the server's OS user can write into."""
    base = world_dir("dr-tests-repo-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_server() -> Iterator[Any]:
    """Start archiving servers; every one is stopped and removed afterwards."""
    servers: list[ArchivingServer] = []
    bases: list[Path] = []

    def make(system: str, repo: str, **options: Any) -> ArchivingServer:
        base = world_dir("dr-tests-server-")
        bases.append(base)
        server = ArchivingServer(base, system, repo, **options).init()
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    for base in bases:
        shutil.rmtree(base, ignore_errors=True)
