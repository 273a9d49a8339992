"""A PostgreSQL server from the embedded binaries that archives its WAL with ``dr wal push``,
run as the unprivileged OS user the embedded server uses, as on a real database host.

The ``dr`` in ``archive_command`` is the shared installation (``make shared-install``, a
virtualenv from the system Python in a world-readable place), because the server's OS user
cannot run the ``.venv`` in root's home. :func:`shared_dr` refuses an installation older than
the code under test.
"""

from __future__ import annotations

import filecmp
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tools import pg_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_PREFIX = Path(os.environ.get("DR_SHARED_PREFIX", "/opt/dr-runbooks"))
OS_USER = "embedded_postgres"
#: The modules PostgreSQL runs through archive_command and restore_command.
_RUN_BY_SERVER = ["cli/main.py", "cli/wal.py", "dr_runbooks/postgres/__init__.py"] + [
    str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "dr_runbooks/postgres/wal").glob("*.py")
]


@functools.cache
def shared_dr() -> str:
    """The shared installation's ``dr``, checked (once per process) to run the code under
    test."""
    program = SHARED_PREFIX / "bin" / "dr"
    if not program.exists():
        raise RuntimeError(f"{program} is missing: run make shared-install")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = next((SHARED_PREFIX / "lib").glob("python3*/site-packages"), None)
    assert site is not None, version
    stale = [
        name for name in _RUN_BY_SERVER if not filecmp.cmp(REPO_ROOT / name, site / name, False)
    ]
    if stale:
        raise RuntimeError(f"{SHARED_PREFIX} is older than {stale[0]}: run make shared-install")
    return str(program)


def world_dir(prefix: str) -> Path:
    """A temporary directory every OS user can enter and write (the server's user writes the
    repository; root writes base backups into it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)
    return path


def as_user(*argv: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    command = ["runuser", "-u", OS_USER, "--", *argv] if os.geteuid() == 0 else list(argv)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {result.returncode}: {result.stderr.strip()}")
    return result


class ArchivingServer:
    """initdb, start with WAL archiving through ``dr wal push``, ``kill -9``, remove."""

    def __init__(
        self,
        base: Path,
        system: str,
        repo: str,
        archive_timeout: int = 1,
        push_options: str = "",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.base = base
        self.datadir = base / "pgdata"
        self.system = system
        self.repo = repo
        self.archive_timeout = archive_timeout
        self.push_options = push_options
        self.settings = settings or {}
        self.bindir = Path(pg_tool("initdb")).parent

    @property
    def archive_command(self) -> str:
        argv = [shared_dr(), "wal", "push", "%p", "--system", self.system, "--repo", self.repo]
        command = " ".join(a if a == "%p" else shlex.quote(a) for a in argv)
        return f"{command} {self.push_options}".strip()

    def init(self) -> ArchivingServer:
        self.base.chmod(0o777)
        as_user(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
        )
        conf = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.datadir),
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": self.archive_command,
            "archive_timeout": str(self.archive_timeout),
            "summarize_wal": "on",
            "log_min_messages": "warning",
            **self.settings,
        }
        with open(self.datadir / "postgresql.auto.conf", "a") as handle:
            for key, value in conf.items():
                handle.write(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n")
        return self

    def start(self) -> ConnInfo:
        as_user(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "start",
        )
        return self.conninfo

    @property
    def conninfo(self) -> ConnInfo:
        return ConnInfo(host=str(self.datadir), user="postgres", dbname="postgres")

    def pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def kill9(self) -> None:
        kill9(self.datadir)

    def stop(self) -> None:
        if self.pid() is not None:
            as_user(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                "immediate",
                "stop",
                check=False,
            )

    def log(self) -> str:
        try:
            return (self.base / "server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


def copy_repository(source: Path, target: Path) -> None:
    """Copy a repository for a test that damages it. Archived WAL is private to the server's
    OS user (PostgreSQL's umask), who reads it back when a restored cluster recovers."""
    shutil.copytree(source, target)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", OS_USER, str(target)], check=True)


def kill9(datadir: Path) -> None:
    """What a crash does: SIGKILL to the postmaster; its children follow it."""
    try:
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["pgrep", "-f", f"postgres.*{datadir}"], capture_output=True, text=True
        )
        if not out.stdout.strip():
            return
        time.sleep(0.1)


def stop_cluster(pgdata: Path) -> None:
    """Stop a cluster ``dr restore`` started (as the OS user it runs as)."""
    if (pgdata / "postmaster.pid").exists():
        as_user(pg_tool("pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop", check=False)


@dataclass(frozen=True)
class Mark:
    time: datetime
    rows: int
    lsn: str


class Writer(threading.Thread):
    """Inserts a row a few milliseconds apart, each in its own transaction, stamped with the
    server's clock; :meth:`mark` returns the server's clock between two inserts."""

    def __init__(self, conninfo: ConnInfo, table: str = "ticks", pause: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.table = table
        self.pause = pause
        self.stopping = threading.Event()
        self.rows = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._marks: list[datetime] = []

    def create(self) -> None:
        with self.conninfo.connect() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} "
                "(id bigserial PRIMARY KEY, at timestamptz NOT NULL, pad text)"
            )

    def run(self) -> None:
        try:
            with self.conninfo.connect() as conn:
                while not self.stopping.is_set():
                    with self._lock:
                        conn.execute(
                            f"INSERT INTO {self.table} (at, pad) VALUES (clock_timestamp(), "
                            "repeat('x', 200))"
                        )
                        self.rows += 1
                    time.sleep(self.pause)
        except BaseException as exc:  # the server was killed under it: expected at the end
            self.error = exc

    def mark(self, restore_point: str | None = None) -> Mark:
        """The server's clock and WAL position, taken while no insert is in flight, and the
        rows committed by then (ids 1 to that number); with ``restore_point``, a named restore
        point there too."""
        with self._lock, self.conninfo.connect() as conn:
            if restore_point:
                conn.execute("SELECT pg_create_restore_point(%s)", (restore_point,))
            row = conn.execute(
                "SELECT clock_timestamp(), pg_current_wal_insert_lsn()::text"
            ).fetchone()
            rows = self.rows
        assert row is not None
        return Mark(row[0], rows, str(row[1]))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
