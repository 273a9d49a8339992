"""Point-in-time recovery, planned from what a repository holds: timelines, the WAL chain and
its gaps, the recovery window, the base backup (chain) a target needs, and retention that
never deletes WAL a kept backup needs.

Nothing here starts a server (:mod:`.cluster` does). The functions read base backups
(:mod:`.basebackup`) and the WAL archive (:mod:`.wal.archive`) of one system:

- :func:`recovery_window`: the earliest and latest recoverable time of a system, the newest
  archived WAL (its age is the RPO achieved) and the first gap in the WAL chain, if any.
- :func:`plan_recovery`: for a target (a time, an LSN, a restore point's name, or the end of
  the archive), the newest base backup chain that ends before it, checked against the WAL:
  a target past the end of the archive names the last recoverable time, one before the oldest
  base backup the first, and a missing segment on the way is named.
- :func:`check_wal_chain`: every segment from the newest (or a given) base backup to the newest
  archived one, present.
- :func:`plan_physical_retention`: which base backups go (whole incremental chains), and which
  WAL files go with them (everything older than the oldest base backup kept; history files
  stay).

Timelines follow PostgreSQL's rules: the target timeline (by default the newest one with a
history file in the archive) and its ancestors, each segment read from the newest timeline on
the path that had begun by then.

An encrypted archive needs no key for listings, the WAL chain, timelines (a history file's
branch points are in its object's first line) or retention; only reading WAL records (the
last commit, for a precise window or a recovery plan) decrypts, with the repository's
keyring.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from dr_runbooks.crypto import Keyring
from dr_runbooks.errors import BackupNotFound, BadInput, ObjectNotFound, OperationFailed
from dr_runbooks.postgres.basebackup import BaseBackup, backup_chain, base_backups, describe
from dr_runbooks.postgres.tools import pg_tool
from dr_runbooks.postgres.wal.archive import ArchivedFile, list_archive, read, read_history
from dr_runbooks.postgres.wal.names import format_lsn, parse_lsn, segment_name
from dr_runbooks.repository import Repository, parse_time
from dr_runbooks.storage.base import Store

__all__ = [
    "PhysicalRetentionPlan",
    "Reach",
    "RecoveryPlan",
    "RecoveryTarget",
    "RecoveryWindow",
    "TimelineEntry",
    "WalChain",
    "apply_physical_retention",
    "check_wal_chain",
    "last_commit",
    "latest_timeline",
    "plan_physical_retention",
    "plan_recovery",
    "recovery_window",
    "timeline_path",
    "wal_chain",
]

#: How many segments back from the end of the archive to look for the last commit.
COMMIT_SEARCH_SEGMENTS = 32
_COMMIT = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: (?:COMMIT|ABORT)(?:_PREPARED \d+:)? "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


# -- timelines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One timeline on the way to the target: where it began, and where the next one branched
    off it (None for the target timeline itself)."""

    timeline: int
    begin: int
    end: int | None


def latest_timeline(files: Sequence[ArchivedFile]) -> int:
    """The newest timeline the archive knows: the highest history file, else the segments'."""
    histories = [f.wal.timeline for f in files if f.wal.kind == "history"]
    if histories:
        return max(histories)
    return max((f.wal.timeline for f in files), default=1)


def timeline_path(
    store: Store, system: str, timeline: int, keyring: Keyring | None = None
) -> list[TimelineEntry]:
    """The ancestors of ``timeline`` from its archived history file, oldest first (``keyring``
    decrypts an encrypted history file that does not record its branch points in clear)."""
    if timeline == 1:
        return [TimelineEntry(1, 0, None)]
    try:
        branches = read_history(timeline, system, [store], keyring)
    except ObjectNotFound:
        raise BackupNotFound(
            f"timeline {timeline} has no history file ({timeline:08X}.history) in the archive "
            f"of {system}"
        ) from None
    entries, begin = [], 0
    for parent, switch in branches:
        entries.append(TimelineEntry(parent, begin, switch))
        begin = switch
    entries.append(TimelineEntry(timeline, begin, None))
    return entries


def _timeline_of(path: Sequence[TimelineEntry], segno: int, segment_size: int) -> int:
    """The timeline PostgreSQL reads segment ``segno`` from: the newest one begun by then."""
    for entry in reversed(path):
        if entry.begin // segment_size <= segno:
            return entry.timeline
    return path[0].timeline


def _on_path(backup: BaseBackup, path: Sequence[TimelineEntry]) -> bool:
    """Whether recovery along ``path`` can start from ``backup``."""
    for entry in path:
        if entry.timeline == backup.end_timeline:
            return entry.end is None or backup.end_lsn <= entry.end
    return False


# -- the WAL chain -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalChain:
    """The WAL from a base backup's start to the newest archived segment on one timeline path."""

    timeline: int
    segment_size: int
    first: str
    #: The newest segment reachable without a gap, and whether only its .partial is archived.
    last: str | None
    last_is_partial: bool
    #: Segments absent before newer ones that are archived: a gap, first one first.
    missing: list[str]
    #: The newest archived WAL file on the path, and when it reached the repository.
    newest: str | None
    newest_archived: datetime | None

    @property
    def complete(self) -> bool:
        return not self.missing and self.last is not None

    @property
    def contiguous(self) -> list[str]:
        """Segment names from ``first`` to ``last``, in order."""
        if self.last is None:
            return []
        start, end = _segno(self.first, self.segment_size), _segno(self.last, self.segment_size)
        return [self._name(n) for n in range(start, end + 1)]

    def _name(self, segno: int) -> str:
        return self._names.get(segno) or segment_name(self.timeline, segno, self.segment_size)

    _names: dict[int, str] = field(default_factory=dict, repr=False, compare=False)


def _segno(name: str, segment_size: int) -> int:
    per_log = 0x1_0000_0000 // segment_size
    return int(name[8:16], 16) * per_log + int(name[16:24], 16)


def wal_chain(
    files: Sequence[ArchivedFile],
    path: Sequence[TimelineEntry],
    start_lsn: int,
    segment_size: int,
    max_missing: int = 100,
) -> WalChain:
    """Walk the archive from ``start_lsn`` along ``path`` to the newest archived segment."""
    whole: dict[tuple[int, int], ArchivedFile] = {}
    partial: dict[tuple[int, int], ArchivedFile] = {}
    for f in files:
        if f.wal.kind in ("segment", "partial"):
            slot = (f.wal.timeline, f.wal.segno(segment_size))
            (whole if f.wal.kind == "segment" else partial)[slot] = f
    start = start_lsn // segment_size
    on_path = [
        segno
        for (tli, segno) in (*whole, *partial)
        if segno >= start and _timeline_of(path, segno, segment_size) == tli
    ]
    target = path[-1].timeline
    first = segment_name(_timeline_of(path, start, segment_size), start, segment_size)
    if not on_path:
        return WalChain(target, segment_size, first, None, False, [first], None, None)
    top = max(on_path)
    missing: list[str] = []
    names: dict[int, str] = {}
    last, last_partial = None, False
    newest: ArchivedFile | None = None
    for segno in range(start, top + 1):
        tli = _timeline_of(path, segno, segment_size)
        name = segment_name(tli, segno, segment_size)
        names[segno] = name
        found = whole.get((tli, segno))
        is_partial = False
        if found is None and segno == top:
            found, is_partial = partial.get((tli, segno)), True
        if found is None:
            if len(missing) < max_missing:
                missing.append(name)
            continue
        newest = found
        if not missing:
            last, last_partial = name, is_partial
    return WalChain(
        timeline=target,
        segment_size=segment_size,
        first=first,
        last=last,
        last_is_partial=last_partial,
        missing=missing,
        newest=newest.name if newest else None,
        newest_archived=newest.archived if newest else None,
        _names=names,
    )


@dataclass(frozen=True)
class Reach:
    """The last commit (or abort) found in archived WAL: how far recovery can get."""

    time: datetime
    lsn: str
    segment: str


def last_commit(
    store: Store,
    system: str,
    chain: WalChain,
    search: int = COMMIT_SEARCH_SEGMENTS,
    keyring: Keyring | None = None,
) -> Reach | None:
    """The last transaction end in the contiguous part of ``chain``, read with pg_waldump from
    the newest segments backwards (at most ``search`` of them); encrypted WAL is decrypted
    with an identity from ``keyring``."""
    names = chain.contiguous[::-1][:search]
    # Decrypted WAL is written here for pg_waldump: a directory only this user can enter.
    with tempfile.TemporaryDirectory(prefix="dr-waldump-") as work:
        for name in names:
            data, _ = read(name, system, [store], allow_partial=True, keyring=keyring)
            path = Path(work) / name
            path.write_bytes(data)
            found = _commits(path)
            path.unlink()
            if found:
                when, lsn = found[-1]
                return Reach(when, lsn, name)
    return None


def _commits(segment: Path) -> list[tuple[datetime, str]]:
    env = {**os.environ, "TZ": "UTC"}
    result = subprocess.run(
        [pg_tool("pg_waldump"), f"--path={segment.parent}", "--rmgr=Transaction", segment.name],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    found = []
    for match in _COMMIT.finditer(result.stdout):
        when = datetime.fromisoformat(match.group(2)).replace(tzinfo=UTC)
        found.append((when, format_lsn(parse_lsn(match.group(1)))))
    return found


# -- targets and windows -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryTarget:
    """Where to recover to: a time, an LSN, a named restore point, or the end of the archive."""

    kind: Literal["time", "lsn", "name", "latest"]
    time: datetime | None = None
    lsn: int | None = None
    name: str | None = None

    @classmethod
    def parse(
        cls, at: str | None = None, at_lsn: str | None = None, at_name: str | None = None
    ) -> RecoveryTarget:
        """Exactly one of ``at`` (ISO 8601, UTC without a zone; ``latest`` for the end of the
        archive), ``at_lsn`` or ``at_name``."""
        given = [v for v in (at, at_lsn, at_name) if v]
        if len(given) != 1:
            raise BadInput("give one recovery target: --at TIME, --at-lsn LSN or --at-name NAME")
        if at_lsn:
            return cls("lsn", lsn=parse_lsn(at_lsn))
        if at_name:
            return cls("name", name=at_name)
        assert at is not None
        if at.strip().lower() in ("latest", "end"):
            return cls("latest")
        return cls("time", time=parse_time(at))

    def describe(self) -> str:
        if self.kind == "time" and self.time is not None:
            return f"{self.time:%Y-%m-%d %H:%M:%S.%f} UTC"
        if self.kind == "lsn" and self.lsn is not None:
            return f"LSN {format_lsn(self.lsn)}"
        if self.kind == "name":
            return f"restore point {self.name!r}"
        return "the end of the archive"

    def settings(self) -> dict[str, str]:
        """PostgreSQL's recovery target settings (none for the end of the archive)."""
        if self.kind == "time" and self.time is not None:
            return {"recovery_target_time": self.time.isoformat()}
        if self.kind == "lsn" and self.lsn is not None:
            return {"recovery_target_lsn": format_lsn(self.lsn)}
        if self.kind == "name" and self.name is not None:
            return {"recovery_target_name": self.name}
        return {}


@dataclass(frozen=True)
class RecoveryWindow:
    """What a system can be recovered to from one repository."""

    system: str
    timeline: int
    base_backups: int
    earliest: datetime | None = None
    earliest_backup: str | None = None
    latest: datetime | None = None
    latest_lsn: str | None = None
    newest_wal: str | None = None
    newest_wal_archived: datetime | None = None
    gap: str | None = None

    def summary(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "system": self.system,
            "timeline": self.timeline,
            "base_backups": self.base_backups,
            "earliest": iso(self.earliest),
            "earliest_backup": self.earliest_backup,
            "latest": iso(self.latest),
            "latest_lsn": self.latest_lsn,
            "newest_wal": self.newest_wal,
            "newest_wal_archived": iso(self.newest_wal_archived),
            "gap": self.gap,
        }


@dataclass
class _Archive:
    """One read of a system's backups and WAL, shared by the functions below."""

    backups: list[BaseBackup]
    files: list[ArchivedFile]
    timeline: int
    path: list[TimelineEntry]
    usable: list[BaseBackup]

    @classmethod
    def read(cls, repository: Repository, system: str, timeline: int | None) -> _Archive:
        backups = base_backups(repository, system)
        files = list_archive(repository.store, system)
        target = timeline or latest_timeline(files)
        path = timeline_path(repository.store, system, target, repository.keyring)
        ids = {b.id for b in backups}
        usable = [
            b for b in backups if _on_path(b, path) and all(m in ids for m in b.manifest.chain)
        ]
        return cls(backups, files, target, path, usable)

    def chain_from(self, backup: BaseBackup) -> WalChain:
        return wal_chain(self.files, self.path, backup.start_lsn, backup.manifest.wal_segment_size)


def recovery_window(
    repository: Repository, system: str, timeline: int | None = None, precise: bool = True
) -> RecoveryWindow:
    """Earliest and latest recoverable time of ``system`` on its newest (or a given) timeline.

    The latest is the last archived commit, read with pg_waldump (``precise``); without it,
    only the newest WAL file and its arrival time are given, which cost a listing.
    """
    archive = _Archive.read(repository, system, timeline)
    if not archive.usable:
        newest = max(archive.files, key=lambda f: f.archived, default=None)
        return RecoveryWindow(
            system,
            archive.timeline,
            0,
            newest_wal=newest.name if newest else None,
            newest_wal_archived=newest.archived if newest else None,
        )
    oldest, newest_backup = archive.usable[-1], archive.usable[0]
    gap = archive.chain_from(oldest).missing
    chain = archive.chain_from(newest_backup)
    reach = (
        last_commit(repository.store, system, chain, keyring=repository.keyring)
        if precise
        else None
    )
    return RecoveryWindow(
        system=system,
        timeline=archive.timeline,
        base_backups=len(archive.usable),
        earliest=oldest.finished,
        earliest_backup=oldest.id,
        latest=reach.time if reach else None,
        latest_lsn=reach.lsn if reach else None,
        newest_wal=chain.newest,
        newest_wal_archived=chain.newest_archived,
        gap=gap[0] if gap else None,
    )


def check_wal_chain(
    repository: Repository,
    system: str,
    backup: BaseBackup | None = None,
    timeline: int | None = None,
) -> WalChain:
    """The WAL chain from ``backup`` (default: the newest usable one) to the newest archived
    segment; ``missing`` lists the gaps (verify-backups fails on any)."""
    archive = _Archive.read(repository, system, timeline)
    if backup is None:
        if not archive.usable:
            raise BackupNotFound(f"no base backup of {system} in {repository.name}")
        backup = archive.usable[0]
    return archive.chain_from(backup)


@dataclass(frozen=True)
class RecoveryPlan:
    """What a restore to ``target`` uses, chosen and checked before anything is downloaded."""

    system: str
    target: RecoveryTarget
    timeline: int
    chain: list[BaseBackup]
    wal: WalChain
    reach: Reach | None
    window: RecoveryWindow
    notes: list[str] = field(default_factory=list)

    @property
    def backup(self) -> BaseBackup:
        return self.chain[-1]

    def summary(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "target": self.target.describe(),
            "timeline": self.timeline,
            "backups": [b.id for b in self.chain],
            "wal_from": self.wal.first,
            "wal_to": self.wal.last,
            "window": self.window.summary(),
            "notes": self.notes,
        }


def plan_recovery(
    repository: Repository,
    system: str,
    target: RecoveryTarget,
    timeline: int | None = None,
) -> RecoveryPlan:
    """Choose the newest base backup (chain) that ends before ``target`` and check that the
    archive holds the WAL to reach it; every refusal names what is possible instead."""
    archive = _Archive.read(repository, system, timeline)
    where = f"{system} in {repository.name}"
    if not archive.backups:
        raise BackupNotFound(f"no base backup of {where} (dr backup postgres --physical)")
    if not archive.usable:
        raise BackupNotFound(
            f"no complete base backup of {where} lies on timeline {archive.timeline}"
        )
    oldest = archive.usable[-1]
    notes: list[str] = []
    if target.kind == "time":
        assert target.time is not None
        candidates = [b for b in archive.usable if b.finished <= target.time]
        if not candidates:
            raise BackupNotFound(
                f"{target.describe()} is before the first recoverable time of {where}: "
                f"{oldest.finished:%Y-%m-%d %H:%M:%S} UTC (the end of {describe(oldest)})"
            )
    elif target.kind == "lsn":
        assert target.lsn is not None
        candidates = [b for b in archive.usable if b.end_lsn <= target.lsn]
        if not candidates:
            raise BackupNotFound(
                f"{target.describe()} is before the first recoverable LSN of {where}: "
                f"{format_lsn(oldest.end_lsn)} (the end of {describe(oldest)})"
            )
    elif target.kind == "name":
        candidates = [oldest]
        notes.append(
            "a restore point's position is not known in advance: recovery starts from the "
            "oldest base backup"
        )
    else:
        candidates = archive.usable
    chosen = candidates[0]
    chain = backup_chain(archive.backups, chosen)
    wal = archive.chain_from(chosen)
    reach = last_commit(repository.store, system, wal, keyring=repository.keyring)
    window = RecoveryWindow(
        system=system,
        timeline=archive.timeline,
        base_backups=len(archive.usable),
        earliest=oldest.finished,
        earliest_backup=oldest.id,
        latest=reach.time if reach else None,
        latest_lsn=reach.lsn if reach else None,
        newest_wal=wal.newest,
        newest_wal_archived=wal.newest_archived,
        gap=wal.missing[0] if wal.missing else None,
    )
    _check_reachable(target, wal, reach, chosen, where)
    if wal.last_is_partial:
        notes.append(f"the last segment, {wal.last}, is archived only as .partial")
    return RecoveryPlan(system, target, archive.timeline, chain, wal, reach, window, notes)


def _check_reachable(
    target: RecoveryTarget, wal: WalChain, reach: Reach | None, backup: BaseBackup, where: str
) -> None:
    def gap() -> OperationFailed:
        end = f"{reach.time:%Y-%m-%d %H:%M:%S.%f} UTC" if reach else "no commit at all"
        return OperationFailed(
            f"WAL segment {wal.missing[0]} is missing from the archive of {where}: recovery "
            f"from {describe(backup)} reaches {end} at most"
        )

    if wal.last is None:
        raise gap()
    last = (
        f"{reach.time:%Y-%m-%d %H:%M:%S.%f} UTC (LSN {reach.lsn})"
        if reach
        else "the end of the base backup"
    )
    if target.kind == "time":
        assert target.time is not None
        if reach is not None and target.time < reach.time:
            return
        if wal.missing:
            raise gap()
        if reach is not None and target.time == reach.time:
            return
        raise BackupNotFound(
            f"{target.describe()} is past the end of the archive of {where}: the last "
            f"recoverable time is {last}"
        )
    if target.kind == "lsn":
        assert target.lsn is not None
        if reach is not None and target.lsn <= parse_lsn(reach.lsn):
            return
        if wal.missing:
            raise gap()
        raise BackupNotFound(
            f"{target.describe()} is past the end of the archive of {where}: the last "
            f"recoverable point is {last}"
        )
    if wal.missing:
        raise gap()


# -- retention -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhysicalRetentionPlan:
    """Base backups to keep and delete (whole chains), and the WAL that goes with them."""

    keep: list[BaseBackup]
    delete: list[BaseBackup]
    wal_delete: list[ArchivedFile]
    #: The first segment every kept backup needs; nothing from it on is deleted.
    wal_kept_from: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "keep": [b.id for b in self.keep],
            "delete": [b.id for b in self.delete],
            "wal_kept_from": self.wal_kept_from,
            "wal_delete": len(self.wal_delete),
            "wal_delete_bytes": sum(f.size for f in self.wal_delete),
            "wal_delete_first": self.wal_delete[0].name if self.wal_delete else None,
            "wal_delete_last": self.wal_delete[-1].name if self.wal_delete else None,
        }


def plan_physical_retention(
    repository: Repository,
    system: str,
    now: datetime | None = None,
    retention_days: int | None = None,
    min_keep: int | None = None,
) -> PhysicalRetentionPlan:
    """Keep every chain (a full backup and its incrementals) with a member newer than the
    retention, and at least ``min_keep`` chains; delete the others whole, and every WAL file
    older than the start of the oldest backup kept. History files are always kept.

    Defaults come from the repository's own retention (days, minimum kept).
    """
    now = now or datetime.now(UTC)
    days = repository.retention_days if retention_days is None else retention_days
    at_least = repository.min_keep if min_keep is None else min_keep
    backups = base_backups(repository, system)
    by_id = {b.id: b for b in backups}
    chains: dict[str, list[BaseBackup]] = {}
    orphans = []
    for backup in backups:
        root = backup.manifest.chain[0]
        if root not in by_id:
            orphans.append(backup)  # its full backup is gone: it cannot be restored
            continue
        chains.setdefault(root, []).append(backup)
    ordered = sorted(chains.values(), key=lambda c: max(b.finished for b in c), reverse=True)
    cutoff = now - timedelta(days=days)
    keep: list[BaseBackup] = []
    delete: list[BaseBackup] = list(orphans)
    for index, chain in enumerate(ordered):
        if index < at_least or max(b.finished for b in chain) >= cutoff:
            keep.extend(chain)
        else:
            delete.extend(chain)
    keep.sort(key=lambda b: b.finished, reverse=True)
    delete.sort(key=lambda b: b.finished, reverse=True)
    wal_delete: list[ArchivedFile] = []
    kept_from = None
    if keep:
        oldest = min(keep, key=lambda b: b.start_lsn)
        size = oldest.manifest.wal_segment_size
        first = oldest.start_lsn // size
        kept_from = segment_name(oldest.timeline, first, size)
        for f in list_archive(repository.store, system):
            if f.wal.kind != "history" and f.wal.segno(size) < first:
                wal_delete.append(f)
    return PhysicalRetentionPlan(keep, delete, wal_delete, kept_from)


def apply_physical_retention(repository: Repository, plan: PhysicalRetentionPlan) -> None:
    """Delete what ``plan`` says: the backups first (newest chain members first, so a chain is
    never left with a gap in the middle), then the WAL."""
    from dr_runbooks.postgres.basebackup import delete_base_backup

    for backup in plan.delete:
        delete_base_backup(repository, backup)
    keys = [f.key for f in plan.wal_delete]
    for start in range(0, len(keys), 256):
        repository.store.delete(keys[start : start + 256])
