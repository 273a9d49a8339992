"""Physical base backups of a whole PostgreSQL cluster: ``pg_basebackup``, full or incremental.

A base backup covers every database of the cluster, so it lives beside the system's databases,
not in one of them::

    postgres/<system>/base/<backup-id>/
        _in_progress.json     written first (Repository.begin), removed at the commit
        base.tar.zst          pg_basebackup's tar of the data directory, zstd-compressed and
                              hashed as it streams; PostgreSQL's backup_manifest is its last member
        backup_manifest       the same manifest on its own: the next incremental backup is taken
                              against it, without downloading the tar
        base_backup.json      written LAST: the commit point (:class:`BaseBackupManifest`)

In a repository with ``encrypt_to``, the tar is stored compressed, then encrypted to those
recipients as it streams (``base.tar.zst.age``), and its entry in ``base_backup.json`` records
the recipients and the checksums of the stored bytes, as a logical backup's manifest does. The
manifest on its own becomes ``backup_manifest.for-incremental``: PostgreSQL's manifest with
the files' checksums taken out (they would confirm a guess of a small file's content, a
configuration file's for instance), which is all an incremental backup needs from it (the server
keeps only names and sizes) and which needs no key: the machine that takes backups never
needs to read one. The whole manifest, checksums included, is the tar's last member, and
``pg_verifybackup`` checks the restored directory against it.

The folder is where a logical backup of a database called ``base`` would be; the logical
listing reads only ``manifest.json`` and never sees it, and the in-progress marker is the
logical one, so :meth:`Repository.remove_abandoned <dr_runbooks.repository.Repository
.remove_abandoned>` removes an abandoned attempt like any other.

The backup is taken with ``-X none``: the WAL from its start to its end comes from the WAL
archive (``dr wal push`` or ``dr wal stream``), like every WAL after it. So before anything is
written the backup checks that WAL of this server reaches the repository, and before it
commits, that the WAL its own consistency needs is there: a committed base backup can be
restored. With ``archive_mode = on`` PostgreSQL itself waits, at the end of the backup, until
the last segment is archived; a backup whose WAL does not get archived within a minute stops
with the archiver's last failure instead of waiting for ever.

An incremental backup (PostgreSQL 17+, ``summarize_wal = on``) is taken against the
``backup_manifest`` of the system's newest base backup; :func:`backup_chain` lists the backups
a restore combines with ``pg_combinebackup``.
"""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dr_runbooks import crypto, progress
from dr_runbooks.errors import (
    BackupNotFound,
    BadInput,
    ChecksumMismatch,
    DumpFailed,
    InvalidArchive,
    OperationFailed,
    RestoreVerificationFailed,
)
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tarstream import TarScanner, TarUnpacker, unpack
from dr_runbooks.postgres.tools import StderrCollector, error_lines, pg_tool
from dr_runbooks.postgres.wal.names import format_lsn, parse_lsn, segment_name, wal_key
from dr_runbooks.repository import (
    MARKER,
    ObjectEncryption,
    ObjectEntry,
    Repository,
    copy_object,
    new_backup_id,
)
from dr_runbooks.storage.base import Store
from dr_runbooks.streams import Digest, compress, hashed, read_chunks
from dr_runbooks.text import first_line

__all__ = [
    "COMMIT",
    "DATA",
    "FOLDER",
    "INCREMENTAL_MANIFEST",
    "PG_MANIFEST",
    "BaseBackup",
    "BaseBackupManifest",
    "ServerFacts",
    "WalRange",
    "backup_chain",
    "base_backups",
    "copy_base_backup",
    "delete_base_backup",
    "describe",
    "identities_for",
    "server_facts",
    "take_base_backup",
    "unpack_base_backup",
    "verify_directory",
    "without_checksums",
]

FOLDER = "base"
DATA = "base.tar.zst"
PG_MANIFEST = "backup_manifest"
#: In an encrypting repository: PostgreSQL's manifest without the files' checksums, in clear.
INCREMENTAL_MANIFEST = "backup_manifest.for-incremental"
COMMIT = "base_backup.json"
#: Seconds to wait for the WAL a backup needs to reach the repository.
WAL_TIMEOUT = 120.0
_STILL_WAITING = "still waiting for all required WAL segments to be archived"


class WalRange(BaseModel):
    """WAL that a backup needs on one timeline (PostgreSQL's ``WAL-Ranges``)."""

    timeline: int
    start_lsn: str
    end_lsn: str


class BaseBackupManifest(BaseModel):
    """The commit record of one base backup; present only when the backup is complete."""

    model_config = ConfigDict(extra="allow")

    format_version: int = 1
    id: str
    kind: Literal["full", "incremental"]
    engine: Literal["postgres"] = "postgres"
    system: str
    parent: str | None = Field(None, description="The backup this incremental is taken against")
    chain: list[str] = Field(description="From the full backup to this one, in order")
    server_version: str
    server_version_num: int
    system_identifier: str
    wal_segment_size: int
    timeline: int = Field(description="The timeline the backup starts on")
    start_lsn: str
    end_lsn: str
    wal_ranges: list[WalRange]
    started: datetime = Field(description="Server clock before the backup began")
    finished: datetime = Field(
        description="Server clock after it ended: the earliest time it can be recovered to"
    )
    tool_version: str | None = None
    compression: str = "zstd"
    objects: list[ObjectEntry]
    details: dict[str, Any] = Field(default_factory=dict)

    def object(self, name: str) -> ObjectEntry:
        """The object ``name`` (``base.tar.zst``), stored in clear or encrypted."""
        for entry in self.objects:
            if entry.name == name or entry.logical_name == name:
                return entry
        raise OperationFailed(f"base backup {self.id} has no object {name!r}")

    def has(self, name: str) -> bool:
        return any(entry.name == name or entry.logical_name == name for entry in self.objects)

    @property
    def recipients(self) -> list[str]:
        """Every recipient any of its objects is encrypted to (empty: stored in clear)."""
        found: list[str] = []
        for entry in self.objects:
            for recipient in entry.encryption.recipients if entry.encryption else []:
                if recipient not in found:
                    found.append(recipient)
        return found

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)


@dataclass(frozen=True)
class BaseBackup:
    """A complete base backup found in a repository."""

    prefix: str
    manifest: BaseBackupManifest

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def finished(self) -> datetime:
        return self.manifest.finished

    @property
    def start_lsn(self) -> int:
        return parse_lsn(self.manifest.start_lsn)

    @property
    def end_lsn(self) -> int:
        return parse_lsn(self.manifest.end_lsn)

    @property
    def timeline(self) -> int:
        return self.manifest.timeline

    @property
    def end_timeline(self) -> int:
        return self.manifest.wal_ranges[-1].timeline

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": m.id,
            "kind": f"physical-{m.kind}",
            "system": m.system,
            "chain": m.chain,
            "timeline": m.timeline,
            "start_lsn": m.start_lsn,
            "end_lsn": m.end_lsn,
            "started": m.started.isoformat(),
            "finished": m.finished.isoformat(),
            "size": m.size,
            "server_version": m.server_version,
            "system_identifier": m.system_identifier,
            "encrypted_to": m.recipients,
        }


def base_prefix(system: str) -> str:
    return f"postgres/{system}/{FOLDER}/"


# -- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerFacts:
    """What a base backup needs to know about the server first."""

    server_version: str
    server_version_num: int
    system_identifier: str
    timeline: int
    wal_segment_size: int
    archive_mode: str
    summarize_wal: bool
    in_recovery: bool
    tablespaces: list[str] = field(default_factory=list)


def server_facts(conninfo: ConnInfo) -> ServerFacts:
    with conninfo.connect(dbname=conninfo.dbname or "postgres") as conn:
        row = conn.execute(
            """SELECT current_setting('server_version'),
                      current_setting('server_version_num')::int,
                      (SELECT system_identifier::text FROM pg_control_system()),
                      (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
                      current_setting('archive_mode'),
                      coalesce(current_setting('summarize_wal', true), 'off'),
                      pg_is_in_recovery(),
                      CASE WHEN pg_is_in_recovery() THEN NULL
                           ELSE pg_walfile_name(pg_current_wal_lsn()) END"""
        ).fetchone()
        spaces = [
            str(r[0])
            for r in conn.execute(
                "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')"
            )
        ]
    assert row is not None
    timeline = int(str(row[7])[:8], 16) if row[7] else 0
    return ServerFacts(
        server_version=str(row[0]),
        server_version_num=int(row[1]),
        system_identifier=str(row[2]),
        timeline=timeline,
        wal_segment_size=int(row[3]),
        archive_mode=str(row[4]),
        summarize_wal=str(row[5]) == "on",
        in_recovery=bool(row[6]),
        tablespaces=spaces,
    )


def _server_clock(conninfo: ConnInfo) -> datetime:
    with conninfo.connect(dbname=conninfo.dbname or "postgres") as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment.astimezone(UTC)


# -- taking a backup ----------------------------------------------------------------------------


def take_base_backup(
    conninfo: ConnInfo,
    system: str,
    repository: Repository,
    incremental: bool = False,
    backup_id: str | None = None,
    compression_level: int = 3,
    wal_timeout: float = WAL_TIMEOUT,
) -> BaseBackupManifest:
    """Take a base backup of the cluster into ``repository`` and commit it.

    With ``incremental``, the backup is taken against the newest base backup of ``system`` from
    the same cluster and timeline; when there is none, a full backup is taken and its
    ``details["incremental_refused"]`` says why.

    A repository with ``encrypt_to`` gets the tar encrypted to those recipients (no identity
    is needed, for this backup or an incremental one).
    """
    facts = server_facts(conninfo)
    if facts.in_recovery:
        raise BadInput("take physical backups from the primary (this server is in recovery)")
    if facts.tablespaces:
        raise BadInput(
            "physical backups stream one tar of the data directory, which cannot hold "
            f"tablespaces ({', '.join(facts.tablespaces)}); use logical backups for this server"
        )
    parent: BaseBackup | None = None
    parent_manifest_bytes: bytes | None = None
    refused = None
    if incremental:
        parent, refused = _incremental_parent(facts, system, repository)
    if parent is not None:
        parent_manifest_bytes = _manifest_for_incremental(repository, parent)
        if parent_manifest_bytes is None:
            refused = f"the newest base backup {parent.id} keeps no manifest"
            parent = None
    recipients = repository.encrypt_to
    repository.store.create()
    _check_wal_reaches(conninfo, facts, system, repository.store, wal_timeout)
    started = _server_clock(conninfo)
    backup_id = backup_id or new_backup_id(started)
    prefix = repository.begin("postgres", system, FOLDER, backup_id)
    try:
        with tempfile.TemporaryDirectory(prefix="dr-basebackup-") as work:
            parent_manifest = None
            if parent_manifest_bytes is not None:
                parent_manifest = Path(work) / PG_MANIFEST
                parent_manifest.write_bytes(parent_manifest_bytes)
            data_name = DATA + crypto.SUFFIX if recipients else DATA
            streamed = _stream_base_backup(
                conninfo,
                repository.store,
                prefix + data_name,
                backup_id,
                parent_manifest,
                compression_level,
                recipients,
            )
        pg_manifest = streamed.manifest
        manifest_entry = _store_manifest(repository.store, prefix, pg_manifest, bool(recipients))
        finished = _server_clock(conninfo)
        ranges, system_id = _manifest_facts(pg_manifest)
        if system_id and system_id != facts.system_identifier:
            raise OperationFailed(
                f"pg_basebackup's manifest names system {system_id}, the server "
                f"{facts.system_identifier}"
            )
        _wait_for_segments(
            conninfo,
            repository.store,
            system,
            _needed_segments(ranges, facts.wal_segment_size),
            wal_timeout,
        )
        manifest = BaseBackupManifest(
            id=backup_id,
            kind="incremental" if parent is not None else "full",
            system=system,
            parent=parent.id if parent is not None else None,
            chain=[*parent.manifest.chain, backup_id] if parent is not None else [backup_id],
            server_version=facts.server_version,
            server_version_num=facts.server_version_num,
            system_identifier=facts.system_identifier,
            wal_segment_size=facts.wal_segment_size,
            timeline=ranges[0].timeline,
            start_lsn=ranges[0].start_lsn,
            end_lsn=ranges[-1].end_lsn,
            wal_ranges=ranges,
            started=started,
            finished=finished,
            tool_version=_tool_version(),
            objects=[
                ObjectEntry(
                    name=data_name,
                    size=streamed.stored.size,
                    sha256=streamed.stored.sha256,
                    raw_size=streamed.raw.size,
                    format="pg_basebackup tar",
                    encryption=ObjectEncryption(recipients=list(recipients))
                    if recipients
                    else None,
                ),
                *([manifest_entry] if manifest_entry is not None else []),
            ],
            details={"incremental_refused": refused} if refused else {},
        )
        _commit(repository, prefix, manifest)
    except BaseException:
        repository.abort(prefix)
        raise
    return manifest


def _tool_version() -> str:
    result = subprocess.run(
        [pg_tool("pg_basebackup"), "--version"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def _incremental_parent(
    facts: ServerFacts, system: str, repository: Repository
) -> tuple[BaseBackup | None, str | None]:
    if facts.server_version_num < 170000:
        return None, f"PostgreSQL {facts.server_version} has no incremental backups (17+)"
    if not facts.summarize_wal:
        raise BadInput(
            "incremental backups need summarize_wal = on: ALTER SYSTEM SET summarize_wal = on; "
            "SELECT pg_reload_conf();"
        )
    same = [
        b
        for b in base_backups(repository, system)
        if b.manifest.system_identifier == facts.system_identifier
    ]
    if not same:
        return None, "no earlier base backup of this cluster"
    newest = same[0]
    if newest.end_timeline != facts.timeline:
        return None, (
            f"the newest base backup {newest.id} is on timeline {newest.end_timeline}, the "
            f"server on {facts.timeline}"
        )
    return newest, None


def _manifest_for_incremental(repository: Repository, parent: BaseBackup) -> bytes | None:
    """The manifest an incremental backup is taken against: the parent's own in clear, or the
    one without checksums an encrypting repository keeps; None when it keeps neither."""
    for name in (PG_MANIFEST, INCREMENTAL_MANIFEST):
        if not any(entry.name == name for entry in parent.manifest.objects):
            continue
        entry = parent.manifest.object(name)
        data = repository.store.read_bytes(parent.prefix + name)
        digest = Digest()
        digest.update(data)
        if (digest.size, digest.sha256) != (entry.size, entry.sha256):
            raise ChecksumMismatch(f"base backup {parent.id}: {parent.prefix}{name} is corrupt")
        return data
    return None


def _store_manifest(
    store: Store, prefix: str, pg_manifest: bytes, encrypted: bool
) -> ObjectEntry | None:
    """Keep PostgreSQL's manifest beside the tar, for the next incremental backup: as it is,
    or, in an encrypting repository, without the files' checksums (None if it cannot be
    rewritten: the next backup is then a full one)."""
    name, data, form = PG_MANIFEST, pg_manifest, "backup_manifest"
    if encrypted:
        stripped = without_checksums(pg_manifest)
        if stripped is None:
            return None
        name, data, form = INCREMENTAL_MANIFEST, stripped, "backup_manifest without checksums"
    store.put_bytes(prefix + name, data)
    digest = Digest()
    digest.update(data)
    return ObjectEntry(name=name, size=digest.size, sha256=digest.sha256, format=form)


def without_checksums(pg_manifest: bytes) -> bytes | None:
    """PostgreSQL's ``backup_manifest`` with the files' checksums removed and its own checksum
    (the sha256 of every line but the last) made anew; None if it is not laid out as
    PostgreSQL writes it (one file per line, the checksum on the last line).

    An incremental backup's server reads only the names and sizes of the files and the WAL
    ranges from it (``basebackup_incremental.c``), and checks the manifest's own checksum.
    """
    lines = pg_manifest.split(b"\n")
    if len(lines) < 3 or lines[-1] != b"" or not lines[-2].startswith(b'"Manifest-Checksum"'):
        return None
    body: list[bytes] = []
    files = 0
    for line in lines[:-2]:
        if line.startswith((b'{ "Path"', b'{ "Encoded-Path"')):
            comma = line.endswith(b",")
            try:
                entry = json.loads(line[:-1] if comma else line)
            except ValueError:
                return None
            entry.pop("Checksum-Algorithm", None)
            entry.pop("Checksum", None)
            fields = ", ".join(
                f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
                for k, v in entry.items()
            )
            line = ("{ " + fields + " }" + ("," if comma else "")).encode()
            files += 1
        body.append(line)
    content = b"\n".join(body) + b"\n"
    result = (
        content + b'"Manifest-Checksum": "%s"}\n' % hashlib.sha256(content).hexdigest().encode()
    )
    try:
        parsed = json.loads(result)
    except ValueError:
        return None
    if len(parsed.get("Files", [])) != files or any("Checksum" in f for f in parsed["Files"]):
        return None
    return result


def _commit(repository: Repository, prefix: str, manifest: BaseBackupManifest) -> None:
    """Repository.commit's protocol under this folder's own commit record."""
    for entry in manifest.objects:
        info = repository.store.stat(prefix + entry.name)
        if info.size != entry.size:
            raise ChecksumMismatch(
                f"{prefix}{entry.name}: stored {info.size} bytes, wrote {entry.size}"
            )
    repository.store.put_bytes(prefix + COMMIT, manifest.model_dump_json(indent=2).encode())
    repository.store.delete([prefix + MARKER])


@dataclass
class _Streamed:
    raw: Digest
    stored: Digest
    manifest: bytes


def _stream_base_backup(
    conninfo: ConnInfo,
    store: Store,
    key: str,
    backup_id: str,
    parent_manifest: Path | None,
    level: int,
    recipients: tuple[str, ...] = (),
) -> _Streamed:
    """pg_basebackup's tar on stdout → sha256 → zstd (→ age, to ``recipients``) → sha256 →
    the store."""
    argv = [
        pg_tool("pg_basebackup"),
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        "--no-password",
        f"--label=dr-runbooks {backup_id}",
    ]
    if parent_manifest is not None:
        argv.append(f"--incremental={parent_manifest}")
    process = subprocess.Popen(
        argv,
        env=conninfo.child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    watcher = _ArchiveWaitWatcher(process)
    watcher.start()
    scanner = TarScanner({PG_MANIFEST})
    raw, stored = Digest(), Digest()
    try:
        chunks = scanner.scan(hashed(progress.counted("backup", read_chunks(process.stdout)), raw))
        sealed = compress(chunks, level=level)
        if recipients:
            sealed = crypto.encrypt(sealed, recipients)
        size = store.put(key, hashed(sealed, stored))
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        watcher.join(timeout=10)
    if watcher.gave_up:
        raise OperationFailed(
            "the backup's last WAL segment was not archived within a minute: archive_command "
            f"is failing or not keeping up ({error_lines(watcher.text())})"
        )
    if process.returncode != 0:
        raise DumpFailed(
            f"pg_basebackup exited {process.returncode}: {error_lines(watcher.text())}"
        )
    if size != stored.size:
        raise OperationFailed(f"{key}: stored {size} bytes, sent {stored.size}")
    manifest = scanner.members.get(PG_MANIFEST)
    if not scanner.finished or manifest is None:
        raise DumpFailed("pg_basebackup's tar ended without its backup_manifest")
    return _Streamed(raw, stored, manifest)


class _ArchiveWaitWatcher(StderrCollector):
    """Collects pg_basebackup's stderr, and stops it once the server says it has waited a
    minute for the WAL archive (it would wait for ever)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(process.stderr)
        self.process = process
        self.gave_up = False

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            self.data.extend(line)
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]
            if _STILL_WAITING.encode() in line and not self.gave_up:
                self.gave_up = True
                self.process.kill()


def _manifest_facts(pg_manifest: bytes) -> tuple[list[WalRange], str | None]:
    try:
        data = json.loads(pg_manifest)
        ranges = [
            WalRange(timeline=r["Timeline"], start_lsn=r["Start-LSN"], end_lsn=r["End-LSN"])
            for r in data["WAL-Ranges"]
        ]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise DumpFailed(f"pg_basebackup's backup_manifest is malformed: {exc}") from None
    if not ranges:
        raise DumpFailed("pg_basebackup's backup_manifest names no WAL range")
    # Ranges are listed newest timeline first; the backup starts on the last one listed.
    ranges.sort(key=lambda r: parse_lsn(r.start_lsn))
    system_id = data.get("System-Identifier")
    return ranges, str(system_id) if system_id is not None else None


def _needed_segments(ranges: list[WalRange], segment_size: int) -> list[str]:
    names: list[str] = []
    for r in ranges:
        first = parse_lsn(r.start_lsn) // segment_size
        last = max(parse_lsn(r.end_lsn) - 1, parse_lsn(r.start_lsn)) // segment_size
        names.extend(segment_name(r.timeline, n, segment_size) for n in range(first, last + 1))
    return names


def _check_wal_reaches(
    conninfo: ConnInfo, facts: ServerFacts, system: str, store: Store, timeout: float
) -> None:
    """Switch to a new WAL segment and wait for the finished one to reach the repository.

    This fails fast, before a long backup, when the archive is not set up (or set up for
    another repository or system name), and makes the archive's folders exist before the
    backup creates any: on a local repository they then belong to the server's OS user, who
    must keep writing into them.
    """
    try:
        with conninfo.connect(dbname=conninfo.dbname or "postgres") as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal() - 1)").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return  # not allowed to switch: the wait for the backup's own WAL still decides
    except psycopg.Error as exc:
        raise OperationFailed(f"cannot switch WAL segments: {first_line(exc)}") from None
    assert row is not None
    _wait_for_segments(conninfo, store, system, [str(row[0])], timeout)


def _wait_for_segments(
    conninfo: ConnInfo, store: Store, system: str, names: list[str], timeout: float
) -> None:
    missing = sorted(names)
    deadline = time.monotonic() + timeout
    while True:
        missing = [n for n in missing if not store.has(wal_key(system, n))]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"WAL segment {missing[0]} did not reach {store.location} for system {system} "
                f"within {timeout:.0f} s: set archive_command to 'dr wal push %p --system "
                f"{system} --repo …' (or run dr wal stream){_archiver_state(conninfo)}"
            )
        time.sleep(0.5)


def _archiver_state(conninfo: ConnInfo) -> str:
    try:
        with conninfo.connect(dbname=conninfo.dbname or "postgres") as conn:
            row = conn.execute(
                """SELECT current_setting('archive_mode'), last_archived_wal, last_failed_wal,
                          last_failed_time FROM pg_stat_archiver"""
            ).fetchone()
    except (OperationFailed, BadInput, psycopg.Error):
        return ""
    if row is None:
        return ""
    mode, archived, failed, failed_at = row
    text = f"; archive_mode = {mode}, last archived {archived or 'none'}"
    if failed:
        text += f", last failed {failed} at {failed_at:%Y-%m-%d %H:%M:%S} (see the server log)"
    return text


# -- listing -----------------------------------------------------------------------------------


def base_backups(repository: Repository, system: str) -> list[BaseBackup]:
    """Every complete base backup of ``system``, newest first."""
    found = []
    for info in repository.store.list(base_prefix(system)):
        if not info.key.endswith("/" + COMMIT):
            continue
        prefix = info.key[: -len(COMMIT)]
        raw = repository.store.read_bytes(info.key)
        try:
            manifest = BaseBackupManifest.model_validate_json(raw)
        except ValidationError as exc:
            raise OperationFailed(f"{info.key} is malformed: {exc.errors()[0]['msg']}") from None
        found.append(BaseBackup(prefix, manifest))
    found.sort(key=lambda b: (b.finished, b.end_lsn), reverse=True)
    return found


def backup_chain(backups: Iterable[BaseBackup], backup: BaseBackup) -> list[BaseBackup]:
    """The backups to combine for ``backup``: its full backup first, ``backup`` last."""
    by_id = {b.id: b for b in backups}
    chain = []
    for member in backup.manifest.chain:
        if member not in by_id:
            raise BackupNotFound(
                f"incremental base backup {backup.id} needs {member}, which is no longer in "
                "the repository"
            )
        chain.append(by_id[member])
    return chain


def copy_base_backup(
    source: Repository, backup: BaseBackup, target: Repository
) -> BaseBackupManifest:
    """Copy a base backup to another repository with the same protocol (marker first, commit
    record last), re-checking every object's sha256 on the way. The WAL it needs must reach
    that repository too: give ``archive_command`` both repositories.

    Objects are copied as stored, never decrypted; into a repository with ``encrypt_to``, a
    tar stored in clear is encrypted on the way and the manifest beside it loses its
    checksums, as if the backup had been taken there."""
    manifest = backup.manifest
    prefix = target.begin("postgres", manifest.system, FOLDER, manifest.id)
    try:
        entries = []
        for entry in manifest.objects:
            if target.encrypt_to and entry.name == PG_MANIFEST:
                pg_manifest = source.store.read_bytes(backup.prefix + entry.name)
                if hashlib.sha256(pg_manifest).hexdigest() != entry.sha256:
                    raise ChecksumMismatch(f"{backup.prefix}{entry.name} changed while copying")
                stripped = _store_manifest(target.store, prefix, pg_manifest, encrypted=True)
                entries.extend([stripped] if stripped is not None else [])
                continue
            seal = entry.encryption is None and bool(target.encrypt_to) and entry.name == DATA
            entries.append(copy_object(source.store, backup.prefix, entry, target, prefix, seal))
        copied = manifest.model_copy(update={"objects": entries})
        _commit(target, prefix, copied)
    except BaseException:
        target.abort(prefix)
        raise
    return copied


def delete_base_backup(repository: Repository, backup: BaseBackup) -> None:
    """Delete one base backup: its commit record first, so it stops being one at once."""
    keys = [info.key for info in repository.store.list(backup.prefix)]
    repository.store.delete([backup.prefix + COMMIT])
    repository.store.delete(k for k in keys if k != backup.prefix + COMMIT)


# -- restoring ---------------------------------------------------------------------------------


def identities_for(
    repository: Repository, backups: Iterable[BaseBackup]
) -> dict[str, crypto.Identity]:
    """The identity that decrypts each encrypted backup of ``backups``, by id (none for those
    stored in clear), from the repository's keyring: asked before a restore touches anything,
    so a missing one is :class:`~dr_runbooks.errors.IdentityRequired` naming the recipients."""
    found = {}
    for backup in backups:
        recipients = backup.manifest.recipients
        if recipients:
            found[backup.id] = repository.keyring.identity_for(
                recipients, f"base backup {backup.id}"
            )
    return found


def unpack_base_backup(
    repository: Repository,
    backup: BaseBackup,
    directory: Path,
    owner: tuple[int, int] | None = None,
    durable: bool = True,
    identity: crypto.Identity | None = None,
) -> None:
    """Download ``backup``'s tar into the empty ``directory``, verifying its sha256 (and
    decrypting it, with ``identity`` or one from the repository's keyring, when it is
    encrypted).

    Downloading and hashing run on one thread; decrypting, decompressing and writing files on
    this one (age's own worker thread aside). A sha256 that differs from the manifest raises
    :class:`ChecksumMismatch`, before any error of decryption, decompression or the tar format
    that the damage caused (the caller removes the directory).
    """
    entry = backup.manifest.object(DATA)
    key = backup.prefix + entry.name
    if entry.encryption is not None and identity is None:
        identity = identities_for(repository, [backup])[backup.id]
    digest = Digest()
    pending: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
    stop = threading.Event()

    def download() -> None:
        try:
            with repository.store.open(key) as handle:
                for chunk in hashed(progress.counted("download", read_chunks(handle)), digest):
                    if stop.is_set():
                        return
                    pending.put(chunk)
            pending.put(None)
        except BaseException as exc:  # re-raised on the unpacking thread
            pending.put(exc)

    def stored() -> Iterator[bytes]:
        while True:
            item = pending.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def content() -> Iterator[bytes]:
        chunks = stored()
        if entry.encryption is not None:
            assert identity is not None
            chunks = crypto.decrypt(chunks, identity, key)
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        for chunk in chunks:
            try:
                out = decompressor.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise ChecksumMismatch(f"{key} does not decompress: {exc}") from None
            if out:
                yield out

    def check() -> None:
        _check_digest(backup, digest, entry, key)

    progress.start("download", entry.size)
    thread = threading.Thread(target=download, name="dr-download", daemon=True)
    thread.start()
    try:
        try:
            unpack(content(), TarUnpacker(directory, owner=owner, durable=durable), check)
        except (ChecksumMismatch, InvalidArchive):
            # Damage in the repository explains any of these: read the object to its end and
            # let its checksum say so; else the error stands.
            if _download_rest(pending, thread):
                check()
            raise
    finally:
        stop.set()
        _drain(pending)
        thread.join()


def _download_rest(
    pending: queue.Queue[bytes | BaseException | None], thread: threading.Thread
) -> bool:
    """Take what the download still sends; True if it reached the end."""
    while True:
        try:
            item = pending.get(timeout=0.1)
        except queue.Empty:
            if thread.is_alive():
                continue
            return False
        if item is None:
            return True
        if isinstance(item, BaseException):
            return False


def _drain(pending: queue.Queue[bytes | BaseException | None]) -> None:
    while True:
        try:
            pending.get_nowait()
        except queue.Empty:
            return


def _check_digest(backup: BaseBackup, digest: Digest, entry: ObjectEntry, key: str) -> None:
    if digest.size != entry.size or digest.sha256 != entry.sha256:
        raise ChecksumMismatch(
            f"base backup {backup.id}: {key} is corrupt (size {digest.size}, sha256 "
            f"{digest.sha256[:16]}…; manifest: size {entry.size}, sha256 {entry.sha256[:16]}…)"
        )


def verify_directory(
    directory: Path,
    wal_directory: Path | None = None,
    run: Callable[[list[str]], subprocess.CompletedProcess[str]] | None = None,
) -> None:
    """``pg_verifybackup`` on an unpacked backup: every file against PostgreSQL's manifest,
    and, with ``wal_directory``, the WAL the backup needs parsed from there."""
    argv = [pg_tool("pg_verifybackup"), "--exit-on-error", "--quiet"]
    argv += [f"--wal-directory={wal_directory}"] if wal_directory else ["--no-parse-wal"]
    argv.append(str(directory))
    runner = run or (lambda a: subprocess.run(a, capture_output=True, text=True, check=False))
    result = runner(argv)
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
        raise RestoreVerificationFailed(
            f"pg_verifybackup refused {directory}: {'; '.join(lines[:3]) or 'no message'}"
        )


def describe(backup: BaseBackup) -> str:
    m = backup.manifest
    return (
        f"{m.kind} base backup {m.id} (timeline {m.timeline}, {format_lsn(backup.start_lsn)}"
        f" to {format_lsn(backup.end_lsn)}, finished {m.finished:%Y-%m-%d %H:%M:%S} UTC)"
    )
