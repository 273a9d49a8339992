"""The fault suite's tools: the real ``dr`` command run (and killed) as a user would, against
the session's PostgreSQL, Azurite and Prefect server, and seeded databases to lose.

CLI runs point at the session's Prefect test server (``PREFECT_API_URL``), so a test can read
back what Prefect recorded (a killed run marked Crashed) and no run pays for a temporary
server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import psutil
import pytest
from prefect.client.orchestration import get_client

from dr_runbooks.postgres.connection import ConnInfo


@dataclass
class Dr:
    """Runs ``dr`` with a DSN in the environment, from a directory without a dr.yaml."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def prefect_api(prefect_server: None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the session's Prefect test server has no URL"
    return str(url)


@pytest.fixture
def dr(pg_server: ConnInfo, tmp_path: Path, prefect_api: str) -> Dr:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {
        **os.environ,
        "DR_DSN": f"postgresql://postgres@/postgres?host={pg_server.host}",
        "DR_CONFIG": "",
        "DR_WORK_DIR": str(workdir),
        "PREFECT_API_URL": prefect_api,
    }
    return Dr(env, tmp_path)


def seed(conninfo: ConnInfo, database: str, rows: int) -> None:
    """A table with a primary key, an index and a foreign key: what a half-restored database
    (rows but no indexes) would lack."""
    with conninfo.connect(dbname=database) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL)")
        conn.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer int REFERENCES customers, "
            "note text)"
        )
        conn.execute(
            "INSERT INTO customers SELECT g, 'c' || g || '@example.com' "
            "FROM generate_series(1, %s) g",
            (max(rows // 10, 1),),
        )
        conn.execute(
            "INSERT INTO orders SELECT g, 1 + g %% %s, repeat(md5(g::text), 4) "
            "FROM generate_series(1, %s) g",
            (max(rows // 10, 1), rows),
        )
        conn.execute("CREATE INDEX orders_customer ON orders (customer)")


def indexes_and_constraints(conninfo: ConnInfo, database: str) -> set[str]:
    with conninfo.connect(dbname=database) as conn:
        found = {
            str(r[0])
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        }
        found |= {
            str(r[0])
            for r in conn.execute(
                "SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
            )
        }
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def descendants(process: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def registered_runs(state: Path) -> set[str]:
    """The Prefect runs that runbooks with ``DR_STATE_DIR=state`` recorded as in progress."""
    directory = state / "runs"
    return {p.stem for p in directory.glob("*.json")} if directory.is_dir() else set()


def run_state(run_id: str) -> str:
    """What Prefect shows for a flow run now (``RUNNING``, ``CRASHED``…)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    return run.state.type.value if run.state else "NONE"


def kill_9(process: subprocess.Popen[str]) -> None:
    """``kill -9`` of the dr process alone (its children are left to fend for themselves)."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture
def fault_database(make_database: Callable[[str], str]) -> Iterator[Callable[[str], str]]:
    yield make_database
