"""Fetching ahead: a recovering server asks for one WAL segment at a time, and waits.

``restore_command`` is run once per segment, so a recovery that fetches each one with a new
process, its imports and a round trip to the repository replays at that pace, whatever the
server could do. With ``dr wal fetch %f %p --spool DIR``:

- a **fetcher** process (started by the first fetch that finds none running, gone after a
  minute without requests) downloads the requested segment and the next ``window - 1`` on
  the same timeline, several at once, verifies each as :func:`~.archive.fetch` does, and keeps
  them in ``DIR/<system>/fetch/``; it stops at the first segment not archived yet;
- each **fetch** moves its segment from there into place when it is ready. One the fetcher
  could not get (not archived, damaged, a repository that failed, encrypted with no identity at
  hand) or did not get to in time is fetched directly, so every refusal, and "not in the
  archive", is the repository's own answer at that moment.

Encrypted segments are decrypted by the fetcher (with the identity of ``--identity`` or
``DR_AGE_IDENTITY_FILE``, which it inherits), so the spool holds WAL in clear, as ``pg_wal``
does: it is created private to the cluster's OS user (0700), like the data directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from dr_runbooks.errors import ObjectNotFound
from dr_runbooks.postgres.wal.names import parse_wal_name, segment_name

if TYPE_CHECKING:
    from dr_runbooks.crypto import Keyring
    from dr_runbooks.storage.base import Store

__all__ = ["FetchSpool", "run_fetcher"]

IDLE_EXIT_SECONDS = 60.0
WAIT_SECONDS = 60.0


class FetchSpool:
    """One system's fetch spool: prefetched files, their failures, and the newest request."""

    def __init__(self, directory: Path, system: str) -> None:
        self.root = directory / system / "fetch"
        self.lock_path = self.root / "fetcher.lock"
        self.log_path = self.root / "fetcher.log"
        self.want_path = self.root / "want"

    def prepare(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def want(self, name: str) -> None:
        """Ask for ``name``. Each request is told from the one before, also when PostgreSQL
        asks for the same file again (it reads a timeline's history file twice in a row)."""
        _write_atomic(self.want_path, f"{name} {os.getpid()}-{time.monotonic_ns()}".encode())

    def request(self) -> str | None:
        """The newest request, as :meth:`want` wrote it."""
        try:
            return self.want_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def fetcher_running(self) -> bool:
        with open(self.lock_path, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def take(self, name: str, destination: Path, fetcher_argv: Sequence[str]) -> bool:
        """Move the prefetched ``name`` to ``destination``; False when the fetcher could not
        get it, or did not in time: the caller then fetches it directly."""
        self.prepare()
        # Recovery can ask for a segment again (a checkpoint read before its redo starts):
        # without the mark of having taken it, the fetcher fetches it once more.
        (self.root / f"{name}.taken").unlink(missing_ok=True)
        self.want(name)
        ready, failed, missing = (
            self.root / name,
            self.root / f"{name}.error",
            self.root / f"{name}.missing",
        )
        deadline = time.monotonic() + WAIT_SECONDS
        started = False
        while time.monotonic() < deadline:
            if ready.exists():
                shutil.move(ready, destination)
                (self.root / f"{name}.taken").touch()
                return True
            for gave_up in (failed, missing):
                if gave_up.exists():
                    gave_up.unlink(missing_ok=True)
                    return False
            if not started and not self.fetcher_running():
                with open(self.log_path, "ab") as log:
                    subprocess.Popen(
                        list(fetcher_argv),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                        close_fds=True,
                    )
                started = True
            time.sleep(0.01)
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)


def _window(name: str, size: int) -> list[str]:
    wal = parse_wal_name(name)
    if wal.kind != "segment":
        return [name]
    first = wal.segno()
    return [segment_name(wal.timeline, n) for n in range(first, first + size)]


def run_fetcher(
    spool: FetchSpool,
    system: str,
    stores: Sequence[Store],
    window: int = 8,
    parallel: int = 4,
    idle_exit: float = IDLE_EXIT_SECONDS,
    keyring: Keyring | None = None,
) -> None:
    """Keep the ``window`` segments from the newest request fetched; one fetcher per spool.
    Encrypted segments are decrypted with an identity from ``keyring``."""
    from dr_runbooks.crypto import Keyring
    from dr_runbooks.postgres.wal.archive import read

    # One keyring for every thread: the identity file is read once.
    keyring = keyring or Keyring()

    spool.prepare()
    with open(spool.lock_path, "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return

        def fetch(name: str) -> None:
            try:
                data, _ = read(name, system, stores, keyring=keyring)
            except ObjectNotFound:
                _write_atomic(spool.root / f"{name}.missing", b"")
                raise
            except Exception as exc:  # recorded; the fetch that asks for it goes direct
                _write_atomic(spool.root / f"{name}.error", str(exc).encode())
                raise
            _write_atomic(spool.root / name, data)

        running: dict[str, Future[None]] = {}
        done: set[str] = set()
        # Segments not archived (yet): nothing beyond one is fetched until it is asked for.
        missing: set[str] = set()
        last_request, idle_since = None, time.monotonic()
        with ThreadPoolExecutor(max(parallel, 1), thread_name_prefix="dr-wal-fetch") as pool:
            while True:
                for name, future in list(running.items()):
                    if future.done():
                        del running[name]
                        done.add(name)
                        if isinstance(future.exception(), ObjectNotFound):
                            missing.add(name)
                request = spool.request()
                if request is not None and request != last_request:
                    last_request, idle_since = request, time.monotonic()
                    want = request.split()[0]
                    names = _window(want, window)
                    _drop_unwanted(spool, set(names))
                    done &= set(names)
                    missing &= set(names[1:])
                    if want in done and not _kept(spool, want):
                        done.discard(want)  # asked for again after it was taken
                    for name in names:
                        if name in missing:
                            break
                        if name not in running and name not in done:
                            running[name] = pool.submit(fetch, name)
                elif time.monotonic() - idle_since > idle_exit and not running:
                    return
                time.sleep(0.01)


def _kept(spool: FetchSpool, name: str) -> bool:
    """Whether the fetcher's work on ``name`` still stands: its file, its failure, or the
    mark that the file was taken."""
    return any(
        (spool.root / f"{name}{suffix}").exists() for suffix in ("", ".missing", ".error", ".taken")
    )


def _drop_unwanted(spool: FetchSpool, wanted: set[str]) -> None:
    """Remove prefetched files outside the window (consumed, or skipped by recovery)."""
    for entry in os.scandir(spool.root):
        if entry.name in ("fetcher.lock", "fetcher.log", "want") or entry.name.startswith("."):
            continue
        base = entry.name
        for suffix in (".missing", ".error", ".taken"):
            base = base.removesuffix(suffix)
        if base not in wanted:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
