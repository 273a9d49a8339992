"""``dr wal stream``: WAL streamed with ``pg_receivewal`` and pushed as it arrives.

``archive_command`` sees a segment only once it is complete: with ``archive_timeout = 60`` up
to a minute of commits exist only on the server. Streaming receives every commit within
moments; the streamer then

- pushes each completed segment and history file into the repositories as ``dr wal push``
  does, encrypted to ``encrypt_to`` if any (keeping the newest two locally, so a restarted
  ``pg_receivewal`` resumes from them),
- pushes the segment being written, as ``<segment>.partial``, every ``partial_interval``
  seconds when it has grown. That interval bounds the RPO; ``dr wal fetch`` serves the partial
  file when the whole segment was never archived,
- restarts ``pg_receivewal`` when it exits (a server restart, a network failure), after a
  pause, and stops it on SIGTERM or SIGINT after a last push.

With a replication slot (``slot``, created if missing) the server keeps WAL the streamer has
not received yet, so an outage of the streamer loses nothing (and WAL piles up on the server
until it is back: monitor the slot).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dr_runbooks.errors import DRError, OperationFailed
from dr_runbooks.postgres.tools import StderrCollector, error_lines, pg_tool
from dr_runbooks.postgres.wal.archive import push
from dr_runbooks.postgres.wal.names import wal_key

if TYPE_CHECKING:
    from dr_runbooks.postgres.connection import ConnInfo
    from dr_runbooks.storage.base import Store

__all__ = ["WalStreamer"]

_COMPLETE = re.compile(r"^[0-9A-F]{24}$|^[0-9A-F]{8}\.history$")
_PARTIAL = re.compile(r"^([0-9A-F]{24})\.partial$")
KEEP_LOCAL = 2


class WalStreamer:
    """Runs ``pg_receivewal`` into ``directory`` and pushes what it receives."""

    def __init__(
        self,
        conninfo: ConnInfo,
        system: str,
        stores: Sequence[Store],
        directory: Path,
        slot: str | None = None,
        partial_interval: float = 2.0,
        restart_delay: float = 5.0,
        log: Callable[[str], None] = print,
        encrypt_to: Sequence[str] = (),
    ) -> None:
        self.conninfo = conninfo
        self.system = system
        self.stores = list(stores)
        self.directory = directory
        self.slot = slot
        self.partial_interval = partial_interval
        self.restart_delay = restart_delay
        self.log = log
        self.encrypt_to = tuple(encrypt_to)
        self.stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: StderrCollector | None = None
        self._pushed: set[str] = set()
        self._partial_state: tuple[str, int, int] | None = None

    def run(self) -> None:
        """Stream until :meth:`stop` (or SIGTERM/SIGINT in the main thread)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        if self.slot:
            self._create_slot()
        next_partial = 0.0
        try:
            while not self.stopping.is_set():
                if self._process is None or self._process.poll() is not None:
                    self._restart()
                self.push_completed()
                if time.monotonic() >= next_partial:
                    self.push_partial()
                    next_partial = time.monotonic() + self.partial_interval
                self.stopping.wait(0.2)
        finally:
            self._terminate()
            self.push_completed()
            self.push_partial()

    def stop(self) -> None:
        self.stopping.set()

    # -- pg_receivewal ---------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        argv = [
            pg_tool("pg_receivewal"),
            "--directory",
            str(self.directory),
            "--no-loop",
            "--no-password",
            "--synchronous",
            "--status-interval=1",
        ]
        if self.slot:
            argv += ["--slot", self.slot]
        return argv

    def _create_slot(self) -> None:
        argv = [
            pg_tool("pg_receivewal"),
            "--create-slot",
            "--if-not-exists",
            "--slot",
            str(self.slot),
            "--no-password",
        ]
        result = subprocess.run(
            argv, env=self.conninfo.child_env(), capture_output=True, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            message = error_lines(result.stderr.decode(errors="replace"))
            raise OperationFailed(f"cannot create replication slot {self.slot}: {message}")

    def _restart(self) -> None:
        if self._process is not None:
            if self._stderr is not None:
                self._stderr.join(timeout=5)
            text = self._stderr.text() if self._stderr is not None else ""
            self.log(
                f"pg_receivewal exited {self._process.returncode}: {error_lines(text)}; "
                f"restarting in {self.restart_delay:.0f} s"
            )
            self._process = None
            if self.stopping.wait(self.restart_delay):
                return
        self._process = subprocess.Popen(
            self._argv(),
            env=self.conninfo.child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Read its messages as they come: a full pipe would stop pg_receivewal.
        self._stderr = StderrCollector(self._process.stderr)
        self._stderr.start()

    def _terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    # -- pushing ---------------------------------------------------------------------------------

    def push_completed(self) -> None:
        """Push completed segments and history files not pushed yet; then drop the local
        copies older than the newest few, and the partial objects they supersede."""
        names = sorted(n for n in os.listdir(self.directory) if _COMPLETE.match(n))
        for name in names:
            if name in self._pushed:
                continue
            try:
                push(self.directory / name, self.system, self.stores, encrypt_to=self.encrypt_to)
            except DRError as exc:
                self.log(f"push {name} failed: {exc}; retrying")
                return
            self._pushed.add(name)
            if not name.endswith(".history"):
                for store in self.stores:
                    store.delete([wal_key(self.system, name + ".partial")])
        segments = [n for n in names if not n.endswith(".history") and n in self._pushed]
        for name in segments[:-KEEP_LOCAL]:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()

    def push_partial(self) -> None:
        """Push the segment being written as ``<segment>.partial``, if it grew."""
        partials = sorted(n for n in os.listdir(self.directory) if _PARTIAL.match(n))
        if not partials:
            return
        name = partials[-1]
        path = self.directory / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        state = (name, st.st_size, st.st_mtime_ns)
        if state == self._partial_state:
            return
        try:
            push(path, self.system, self.stores, encrypt_to=self.encrypt_to)
        except DRError as exc:
            self.log(f"push {name} failed: {exc}")
            return
        self._partial_state = state
