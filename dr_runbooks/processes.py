"""Child programs (pg_dump, pg_restore, psql, mongodump…) that die with ``dr``, and work
directories that the next run can tell from a live run's.

A child started with :func:`die_with_parent` as its ``preexec_fn`` gets SIGKILL from the kernel
when the process that started it dies, however it dies (``kill -9`` included), so a killed
restore does not leave ``pg_restore`` filling a database behind it. Linux only; elsewhere it
does nothing.

A work directory made by :func:`owned_workdir` carries a small record of its owner (host, pid,
process start time); :func:`remove_stale_workdirs` removes those whose owner is gone.

:class:`RunRegistry` records the runs in progress on this machine the same way, so the next run
can tell which ended without saying so (killed) and have them marked Crashed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

__all__ = [
    "MONGODB_WORKDIR_PREFIX",
    "OWNER_FILE",
    "POSTGRES_WORKDIR_PREFIX",
    "RunRegistry",
    "alive_since",
    "die_with_parent",
    "owned_workdir",
    "remove_stale_workdirs",
    "state_dir",
]

OWNER_FILE = ".dr-owner.json"
#: Restores' work directories (an unpacked dump, a downloaded archive), by engine.
POSTGRES_WORKDIR_PREFIX = "dr-restore-"
MONGODB_WORKDIR_PREFIX = "dr-mongo-restore-"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child, before ``exec``: ask Linux to SIGKILL it when its parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _process_start(pid: int) -> float | None:
    """When ``pid`` started (to tell it from a later process with the same number)."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # no such process, or psutil missing
        return None


def alive_since(pid: int, since: float) -> bool:
    """Whether process ``pid`` runs and started by ``since`` (epoch seconds): the same process
    that was ``pid`` then, not a later one given the number again."""
    started = _process_start(pid)
    return started is not None and started <= since + 1


def owned_workdir(prefix: str, base: Path | None = None) -> Path:
    """A new private directory that records its owner, for :func:`remove_stale_workdirs`."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _process_start(os.getpid()),
    }
    (directory / OWNER_FILE).write_text(json.dumps(owner))
    return directory


def _owner_alive(directory: Path) -> bool:
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        # No record: made by a run that died before writing it, or one writing it right now.
        with contextlib.suppress(OSError):
            return time.time() - directory.stat().st_mtime < 60
        return False
    if owner.get("host") != socket.gethostname():
        return True  # another machine's (a shared work directory): not ours to judge
    started = _process_start(int(owner.get("pid", -1)))
    return started is not None and (
        owner.get("started") is None or abs(started - owner["started"]) < 1
    )


def remove_stale_workdirs(prefix: str, base: Path | None = None) -> list[Path]:
    """Remove the ``prefix*`` work directories under ``base`` (default: the temporary
    directory) whose owner process is gone; return what was removed."""
    root = base or Path(tempfile.gettempdir())
    removed = []
    for directory in sorted(root.glob(f"{prefix}*")):
        if directory.is_dir() and not directory.is_symlink() and not _owner_alive(directory):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def state_dir() -> Path:
    """Where this machine keeps dr-runbooks' own state: ``DR_STATE_DIR``, else
    ``$XDG_STATE_HOME/dr-runbooks`` (``~/.local/state/dr-runbooks``)."""
    override = os.environ.get("DR_STATE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dr-runbooks"


class RunRegistry:
    """The runbook runs in progress on this machine, one small file each."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir() / "runs"

    def _path(self, run_id: str) -> Path:
        return self.directory / f"{''.join(c for c in run_id if c.isalnum() or c == '-')}.json"

    def register(self, run_id: str, flow: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "run_id": run_id,
            "flow": flow,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _process_start(os.getpid()),
        }
        self._path(run_id).write_text(json.dumps(record))

    def forget(self, run_id: str) -> None:
        self._path(run_id).unlink(missing_ok=True)

    def dead(self) -> list[dict[str, object]]:
        """Runs recorded here whose process is gone (not any run of this process)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                pid, started = int(record["pid"]), record.get("started")
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if pid == os.getpid():
                continue
            now_started = _process_start(pid)
            alive = now_started is not None and (started is None or abs(now_started - started) < 1)
            if not alive:
                found.append(record)
        return found
