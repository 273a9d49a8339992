"""Asynchronous archiving: a spool directory and a pusher that uploads several files at once.

PostgreSQL's archiver runs ``archive_command`` for one file at a time and waits for it, so a
command that starts a Python process, imports, compresses and uploads per segment caps
archiving at one segment per that long. With ``dr wal push %p --spool DIR``:

- a **pusher** process (started by the first push that finds none running, and leaving after a
  minute without work) watches ``pg_wal/archive_status/*.ready``, pushes every ready file,
  several at once, and records each one archived as ``DIR/<system>/done/<name>`` only after
  :func:`~dr_runbooks.postgres.wal.archive.push` returned (the file is in every repository);
  a failure is recorded as ``failed/<name>`` with its message;
- each **push** only waits for its file's record: ``done`` → exit 0, ``failed`` → exit 1 with
  the message (PostgreSQL retries, and the pusher tries again). Usually the pusher has got
  there first, and the push returns at once.

So the rule of the synchronous push holds: exit 0 only once the file is in the repository.
The spool holds records, never WAL: nothing is lost if it is deleted.

A pusher keeps the settings it was started with (repositories, recipients) while it has work,
which under a steady load is for ever. So each push leaves a digest of the command it would
start a pusher with in ``DIR/<system>/pusher.settings``, and a pusher whose own command differs
(an ``archive_command`` changed to add ``--encrypt-to`` or a repository) finishes the uploads
in hand and leaves; the next push starts one with the new settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dr_runbooks.errors import OperationFailed

if TYPE_CHECKING:
    from dr_runbooks.storage.base import Store

__all__ = ["Spool", "file_signature", "run_pusher", "settings_of"]

#: A pusher with nothing to do for this long exits; the next push starts another.
IDLE_EXIT_SECONDS = 60.0
SCAN_SECONDS = 0.1
#: How often a pusher looks whether pushes ask for other settings.
SETTINGS_CHECK_SECONDS = 1.0
#: Records whose file PostgreSQL never asked about again are removed after this long.
STALE_RECORD_SECONDS = 86400.0


class Spool:
    """One system's spool: ``done/``, ``failed/``, the pusher's lock and its log."""

    def __init__(self, directory: Path, system: str) -> None:
        self.root = directory / system
        self.done = self.root / "done"
        self.failed = self.root / "failed"
        self.lock_path = self.root / "pusher.lock"
        self.log_path = self.root / "pusher.log"
        self.settings_path = self.root / "pusher.settings"

    def prepare(self) -> None:
        for folder in (self.done, self.failed):
            folder.mkdir(parents=True, exist_ok=True)

    def acknowledge(self, name: str, path: Path) -> bool:
        """True (and the record removed) once the file at ``path`` is archived as ``name``; a
        recorded failure is raised. A record of another file by that name (a cluster created
        anew, same spool) does not count."""
        done = self.done / name
        try:
            recorded = done.read_text().strip()
        except FileNotFoundError:
            recorded = None
        if recorded is not None:
            done.unlink(missing_ok=True)
            if recorded == file_signature(path):
                return True
        failed = self.failed / name
        try:
            message = failed.read_text().strip()
        except FileNotFoundError:
            return False
        failed.unlink(missing_ok=True)
        raise OperationFailed(message or f"the pusher could not archive {name}")

    def settings(self) -> str | None:
        """The command the newest push would start a pusher with (see the module)."""
        try:
            return self.settings_path.read_text()
        except FileNotFoundError:
            return None

    def publish_settings(self, settings: str) -> None:
        if self.settings() != settings:
            _write_atomic(self.settings_path, settings.encode())

    def pusher_running(self) -> bool:
        with open(self.lock_path, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def start_pusher(self, argv: Sequence[str]) -> None:
        """Start a pusher in a session of its own, so the archiver never waits for it."""
        with open(self.log_path, "ab") as log:
            subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )

    def wait_archived(
        self,
        path: Path,
        pusher_argv: Sequence[str],
        timeout: float,
        settings: str | None = None,
    ) -> None:
        """Return once the pusher recorded the file at ``path`` archived; raise if it recorded
        a failure or did not get there within ``timeout`` seconds. ``settings``: what a pusher
        started with ``pusher_argv`` is told to compare (:func:`settings_of` its command
        before that)."""
        name = path.name
        if self.acknowledge(name, path):
            return
        self.prepare()
        self.publish_settings(settings or settings_of(pusher_argv))
        deadline = time.monotonic() + timeout
        while True:
            if not self.pusher_running():
                self.start_pusher(pusher_argv)
            pause = time.monotonic() + 1.0
            while time.monotonic() < pause:
                if self.acknowledge(name, path):
                    return
                if time.monotonic() > deadline:
                    raise OperationFailed(
                        f"the pusher did not archive {name} within {timeout:.0f} s "
                        f"(see {self.log_path})"
                    )
                time.sleep(0.02)


def settings_of(pusher_argv: Sequence[str]) -> str:
    """A digest of a pusher's command (which may name a container URL with its token)."""
    return hashlib.sha256("\0".join(pusher_argv).encode()).hexdigest()


def file_signature(path: Path) -> str:
    """Size, modification time and inode: which file a record is about."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return ""
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"


def run_pusher(
    spool: Spool,
    wal_dir: Path,
    stores: Sequence[Store],
    parallel: int = 4,
    idle_exit: float = IDLE_EXIT_SECONDS,
    push: Callable[..., Any] | None = None,
    encrypt_to: Sequence[str] = (),
    settings: str | None = None,
) -> None:
    """Push every ready WAL file of ``wal_dir`` until idle for ``idle_exit`` seconds,
    encrypted to ``encrypt_to`` if any.

    Only one pusher runs per spool (an exclusive lock); a second one returns at once. With
    ``settings`` (the digest of the command that started it), it also returns once a push
    has asked for a pusher with other settings, after the uploads in hand.
    """
    if push is None:
        from dr_runbooks.postgres.wal.archive import push as push_file
    else:
        push_file = push
    spool.prepare()
    system = spool.root.name
    status = wal_dir / "archive_status"
    with open(spool.lock_path, "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        _remove_stale(spool)
        running: dict[str, Future[str]] = {}
        # What this pusher archived: a file stays .ready for a moment after PostgreSQL took
        # its record, and must not be pushed (and recorded) again.
        pushed: dict[str, str] = {}
        idle_since = time.monotonic()
        superseded, checked = False, 0.0
        with ThreadPoolExecutor(max(parallel, 1), thread_name_prefix="dr-wal-push") as pool:
            while True:
                for name, future in list(running.items()):
                    if future.done():
                        del running[name]
                        if _record(spool, name, future):
                            pushed[name] = future.result()
                if settings is not None and time.monotonic() - checked > SETTINGS_CHECK_SECONDS:
                    checked = time.monotonic()
                    superseded = spool.settings() not in (None, settings)
                if superseded:
                    if not running:
                        print("settings changed: leaving to a pusher with the new ones", flush=True)
                        return
                    time.sleep(SCAN_SECONDS)
                    continue
                ready = _ready(status)
                for name in set(pushed) - set(ready):
                    del pushed[name]
                for name in ready:
                    if name in running or len(running) >= parallel:
                        continue
                    if (spool.done / name).exists() or (spool.failed / name).exists():
                        continue
                    if pushed.get(name) == file_signature(wal_dir / name):
                        continue
                    running[name] = pool.submit(
                        _push_one, push_file, wal_dir / name, system, stores, encrypt_to
                    )
                if running or ready:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > idle_exit:
                    return
                time.sleep(SCAN_SECONDS)


def _ready(status: Path) -> list[str]:
    try:
        names = [entry.name[:-6] for entry in os.scandir(status) if entry.name.endswith(".ready")]
    except FileNotFoundError:
        return []
    # History files first, as PostgreSQL's archiver does: a new timeline must be known first.
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


def _push_one(
    push: Callable[..., Any],
    path: Path,
    system: str,
    stores: Sequence[Store],
    encrypt_to: Sequence[str],
) -> str:
    signature = file_signature(path)
    if encrypt_to:
        push(path, system, stores, encrypt_to=encrypt_to)
    else:
        push(path, system, stores)
    return signature


def _record(spool: Spool, name: str, future: Future[str]) -> bool:
    """Record the outcome of one push; True if the file was archived."""
    error = future.exception()
    if error is None:
        _write_atomic(spool.done / name, future.result().encode())
        return True
    print(f"push {name} failed: {error}", flush=True)
    _write_atomic(spool.failed / name, f"push {name} failed: {error}".encode())
    return False


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


def _remove_stale(spool: Spool) -> None:
    cutoff = time.time() - STALE_RECORD_SECONDS
    for folder in (spool.done, spool.failed):
        for entry in os.scandir(folder):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
