"""The repository format: where a backup's objects live and what its manifest says.

A backup is a folder ``<engine>/<system>/<database>/<backup-id>/`` in a :class:`Store`::

    postgres/app-db/shop/20261128T020000Z-7f3a/
        _in_progress.json      written first: who started the attempt, and when
        data.dump.zst          the data objects (the dump format is the engine's)
        roles.json ...
        manifest.json          written LAST: the commit point
        verifications/*.json   records of test restores, added later

A repository with ``encrypt_to`` (age recipients) stores each object compressed, then
encrypted, named with ``.age`` (``data.dump.zst.age``); the manifest records, per object, that
it is encrypted and to which recipients (public keys), and its checksums are of the stored
bytes, so checking them needs no key (see :mod:`dr_runbooks.crypto`). Plain and encrypted
backups live side by side: each manifest says what its objects are. ``rekey`` writes a backup's
objects again for other recipients under ``rekey-<stamp>/``, switches the manifest to them in
one write, then deletes the old ones; until then, objects its manifest does not name are what
a rekey that died left (:meth:`Repository.unreferenced`).

A folder without ``manifest.json`` is not a backup: listing, restore and retention ignore it.
It is a leftover of an attempt that did not finish (with our in-progress marker) or of one that
died before writing it (an orphan). A run that holds the lock of a system's database removes
that database's leftovers at once (:meth:`Repository.remove_leftovers`: no live run can own
them); any run removes others' once more than a day old (:meth:`Repository.remove_abandoned`).
Nothing else is ever deleted except complete backups, by :meth:`Repository.plan_retention`.

A manifest that cannot be read or parsed makes *that* backup damaged: listed as such, never
restored or chosen, never deleted by retention, and never in the way of the others.

"Latest" is the newest *consistent point*, never the listing order, and never a point more than
:data:`CLOCK_SKEW_TOLERANCE` in the future (a database server with a wrong clock): such a backup
is restored only when named by its id, and ages for retention from when it was written.

Backups written by the plan's shell scripts (``backup_YYYYMMDD_HHMMSS.sql.gz`` and
``backup_YYYYMMDD_HHMMSS.tar.gz``) are listed as legacy backups with the time from their name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dr_runbooks import crypto, progress
from dr_runbooks.errors import (
    BackupDamaged,
    BackupNotFound,
    BadInput,
    ChecksumMismatch,
    ObjectNotFound,
    ObjectProtected,
    OperationFailed,
)
from dr_runbooks.storage.base import ObjectInfo, Store
from dr_runbooks.streams import Digest, hashed, read_chunks

__all__ = [
    "Backup",
    "Manifest",
    "ObjectEncryption",
    "ObjectEntry",
    "Repository",
    "RetentionPlan",
    "copy_backup",
    "copy_object",
    "new_backup_id",
    "parse_time",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MARKER = "_in_progress.json"
VERIFICATIONS = "verifications/"
ABANDONED_AFTER = timedelta(days=1)
#: A consistent point further ahead than this is a wrong clock, not a backup from the future.
CLOCK_SKEW_TOLERANCE = timedelta(minutes=5)

_ID = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{4,8})$")
_LEGACY = re.compile(r"(?:^|/)backup_(\d{8})_(\d{6})\.(sql\.gz|tar\.gz)$")
_LEGACY_FOLDERS = {"postgres": ("postgres-backups/", ""), "mongodb": ("mongodb-backups/", "")}


def new_backup_id(now: datetime | None = None) -> str:
    """``20261128T020000Z-7f3a``: the UTC start time and a short random suffix."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def _described(backup: Backup) -> str:
    return f"{backup.id} ({backup.consistent_point:%Y-%m-%d %H:%M} UTC)"


def _nearest(backup_id: str, backups: list[Backup], count: int = 3) -> str:
    """``; nearest: …`` — the backups closest in time to an id that matched none (the newest
    when the id carries no time), for a person who mistyped or misremembered one."""
    if not backups:
        return "; the repository holds none"
    match = _ID.match(backup_id)
    if match:
        wanted = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        ranked = sorted(backups, key=lambda b: abs((b.consistent_point - wanted).total_seconds()))
    else:
        ranked = backups  # newest first
    return "; nearest: " + ", ".join(_described(b) for b in ranked[:count])


def parse_time(value: str) -> datetime:
    """Parse an ISO 8601 time; without a zone it is read as UTC. Malformed: :class:`BadInput`."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"malformed time {value!r} (use ISO 8601, e.g. 2026-11-28T05:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class ObjectEncryption(BaseModel):
    """How a stored object is encrypted: the format and its recipients (public keys only)."""

    model_config = ConfigDict(extra="allow")

    format: Literal["age"] = "age"
    recipients: list[str]


class ObjectEntry(BaseModel):
    """One data object of a backup, as the manifest records it: ``size`` and ``sha256`` are
    of the bytes stored (encrypted, when it is)."""

    model_config = ConfigDict(extra="allow")

    name: str
    size: int
    sha256: str
    raw_size: int | None = Field(default=None, description="Bytes before compression")
    encryption: ObjectEncryption | None = Field(
        default=None, description="Encrypted, and to whom; None: stored in clear"
    )

    @property
    def logical_name(self) -> str:
        """What the object is, wherever a rekey put it and however it is stored:
        ``rekey-…/data.dump.zst.age`` is ``data.dump.zst``."""
        base = self.name.rsplit("/", 1)[-1]
        if self.encryption is not None and base.endswith(crypto.SUFFIX):
            base = base[: -len(crypto.SUFFIX)]
        return base


class Manifest(BaseModel):
    """The commit record of one backup; present only when the backup is complete."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    id: str
    kind: str = "full"
    engine: Literal["postgres", "mongodb"]
    system: str
    database: str
    server_version: str | None = None
    tool_version: str | None = None
    started: datetime
    finished: datetime
    consistent_point: datetime
    consistency: str = "snapshot"
    compression: str = "zstd"
    objects: list[ObjectEntry]
    tables: dict[str, int] = Field(default_factory=dict, description="Rows per table/collection")
    details: dict[str, Any] = Field(default_factory=dict)

    def object(self, name: str) -> ObjectEntry:
        """The object ``name`` (``data.dump.zst``), stored in clear or encrypted."""
        for entry in self.objects:
            if entry.name == name or entry.logical_name == name:
                return entry
        raise OperationFailed(f"backup {self.id} has no object {name!r}")

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
    def encrypted(self) -> bool:
        return any(entry.encryption is not None for entry in self.objects)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def total_rows(self) -> int:
        """Rows (documents) in all, each counted once: a partitioned table's own count, which
        repeats its partitions', is left out."""
        parents = set(self.details.get("partitioned") or [])
        return sum(n for table, n in self.tables.items() if table not in parents)


@dataclass(frozen=True)
class Backup:
    """A complete backup found in a repository (ours, or a legacy script's file)."""

    engine: str
    system: str
    database: str
    id: str
    prefix: str
    consistent_point: datetime
    size: int
    manifest: Manifest | None = None
    legacy_key: str | None = None
    #: Why the backup cannot be used (its manifest cannot be read); None for a good one.
    problem: str | None = None

    @property
    def legacy(self) -> bool:
        return self.legacy_key is not None

    @property
    def damaged(self) -> bool:
        return self.problem is not None

    def skewed(self, now: datetime | None = None) -> bool:
        """Whether the consistent point is further in the future than a clock can be wrong."""
        return self.consistent_point > (now or datetime.now(UTC)) + CLOCK_SKEW_TOLERANCE

    def written(self) -> datetime:
        """When the backup was taken by this side's clock (the manifest's start), for ages
        that must not trust a database server's clock."""
        return self.manifest.started if self.manifest is not None else self.consistent_point

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "engine": self.engine,
            "system": self.system,
            "database": self.database,
            "consistent_point": self.consistent_point.isoformat(),
            "size": self.size,
            "legacy": self.legacy,
            "kind": "DAMAGED"
            if self.damaged
            else self.manifest.kind
            if self.manifest
            else "legacy",
            "problem": self.problem,
            "clock_skew": self.skewed(),
            "encrypted_to": self.manifest.recipients if self.manifest else [],
        }


@dataclass(frozen=True)
class RetentionPlan:
    keep: list[Backup]
    delete: list[Backup]
    #: Backups retention leaves alone and reports: damaged ones, and those dated ahead.
    damaged: list[Backup] = field(default_factory=list)
    skewed: list[Backup] = field(default_factory=list)
    #: Backups old enough to go that the store's own immutability protects, with why.
    protected: list[tuple[Backup, str]] = field(default_factory=list)


class Repository:
    """Backups in one store, with that store's retention policy and encryption.

    ``encrypt_to``: the age recipients new backups are encrypted to (empty: stored in clear).
    ``keyring``: where identities come from when an encrypted backup is read.
    """

    def __init__(
        self,
        store: Store,
        name: str = "",
        retention_days: int = 7,
        min_keep: int = 3,
        encrypt_to: tuple[str, ...] | list[str] = (),
        keyring: crypto.Keyring | None = None,
    ) -> None:
        self.store = store
        self.name = name or store.location
        self.retention_days = retention_days
        self.min_keep = min_keep
        self.encrypt_to = crypto.parse_recipients(encrypt_to, f"{self.name}: encrypt_to")
        self.keyring = keyring or crypto.Keyring()

    def identity_for(self, backup: Backup) -> crypto.Identity | None:
        """The identity that decrypts ``backup``, None when it is stored in clear; else
        :class:`~dr_runbooks.errors.IdentityRequired` naming its recipients. Called before a
        restore touches anything."""
        if backup.manifest is None or not backup.manifest.encrypted:
            return None
        return self.keyring.identity_for(backup.manifest.recipients, f"backup {backup.id}")

    def __repr__(self) -> str:
        return f"Repository({self.name!r}, {self.store!r})"

    @staticmethod
    def prefix(engine: str, system: str, database: str, backup_id: str) -> str:
        for part in (system, database, backup_id):
            if not part or "/" in part or part in (".", ".."):
                raise BadInput(f"invalid name in backup path: {part!r}")
        return f"{engine}/{system}/{database}/{backup_id}/"

    # -- writing ------------------------------------------------------------------------------

    def begin(
        self,
        engine: str,
        system: str,
        database: str,
        backup_id: str,
        now: datetime | None = None,
    ) -> str:
        """Create the store if needed and write the in-progress marker; return the folder."""
        self.store.create()
        prefix = self.prefix(engine, system, database, backup_id)
        if any(True for _ in self.store.list(prefix)):
            raise OperationFailed(f"backup folder {prefix} already exists in {self.name}")
        started = (now or datetime.now(UTC)).isoformat()
        marker = {"started": started, "tool": "dr-runbooks", "host": socket.gethostname()}
        self.store.put_bytes(prefix + MARKER, json.dumps(marker).encode())
        return prefix

    def commit(self, prefix: str, manifest: Manifest) -> None:
        """Check every object's size against the store, then write the manifest (commit). A
        consistent point ahead of this machine's clock is recorded as ``clock_skew_seconds``
        (the database server's clock is wrong; see :data:`CLOCK_SKEW_TOLERANCE`)."""
        ahead = (manifest.consistent_point - manifest.finished).total_seconds()
        if ahead > CLOCK_SKEW_TOLERANCE.total_seconds():
            manifest.details["clock_skew_seconds"] = round(ahead)
        for entry in manifest.objects:
            info = self.store.stat(prefix + entry.name)
            if info.size != entry.size:
                raise ChecksumMismatch(
                    f"{prefix}{entry.name}: stored {info.size} bytes, wrote {entry.size}"
                )
        self.store.put_bytes(prefix + MANIFEST, manifest.model_dump_json(indent=2).encode())
        self.store.delete([prefix + MARKER])

    def abort(self, prefix: str) -> None:
        """Remove everything an unfinished attempt wrote (never a committed backup)."""
        keys = [info.key for info in self.store.list(prefix)]
        if prefix + MANIFEST in keys:
            raise OperationFailed(f"refusing to remove committed backup {prefix}")
        objects = [k for k in keys if k != prefix + MARKER]
        self.store.delete(objects)
        self.store.delete([prefix + MARKER])
        self.store.delete_partials(prefix)

    # -- reading ------------------------------------------------------------------------------

    def _folders(
        self, engine: str, system: str | None, database: str | None
    ) -> dict[str, dict[str, ObjectInfo]]:
        base = f"{engine}/"
        if system:
            base += f"{system}/"
            if database:
                base += f"{database}/"
        folders: dict[str, dict[str, ObjectInfo]] = {}
        for info in self.store.list(base):
            parts = info.key.split("/")
            if len(parts) < 5 or parts[0] != engine:
                continue
            folder = "/".join(parts[:4]) + "/"
            folders.setdefault(folder, {})[info.key[len(folder) :]] = info
        return folders

    def read_manifest(self, prefix: str) -> Manifest:
        raw = self.store.read_bytes(prefix + MANIFEST)
        try:
            return Manifest.model_validate_json(raw)
        except ValidationError as exc:
            raise BackupDamaged(
                f"{prefix}{MANIFEST} is malformed: {exc.errors()[0]['msg']}"
            ) from None

    def backups(
        self,
        engine: str,
        system: str | None = None,
        database: str | None = None,
        include_legacy: bool = True,
    ) -> list[Backup]:
        """Every complete backup, newest consistent point first."""
        found: list[Backup] = []
        for prefix, objects in self._folders(engine, system, database).items():
            if MANIFEST not in objects:
                continue
            try:
                manifest = self.read_manifest(prefix)
            except ObjectNotFound:
                continue  # deleted since the listing (retention elsewhere)
            except BackupDamaged as exc:
                found.append(self._damaged(engine, prefix, objects, exc))
                continue
            found.append(
                Backup(
                    engine=engine,
                    system=manifest.system,
                    database=manifest.database,
                    id=manifest.id,
                    prefix=prefix,
                    consistent_point=manifest.consistent_point,
                    size=manifest.size,
                    manifest=manifest,
                )
            )
        if include_legacy:
            found.extend(self.legacy_backups(engine, system, database))
        found.sort(key=lambda b: b.consistent_point, reverse=True)
        return found

    def unreferenced(self, backup: Backup) -> list[str]:
        """Objects in a committed backup's folder that its manifest does not name (a rekey
        that died before or after switching the manifest left them); never its verification
        records."""
        assert backup.manifest is not None
        named = {backup.prefix + entry.name for entry in backup.manifest.objects}
        named.add(backup.prefix + MANIFEST)
        return sorted(
            info.key
            for info in self.store.list(backup.prefix)
            if info.key not in named and not info.key.startswith(backup.prefix + VERIFICATIONS)
        )

    @staticmethod
    def _damaged(
        engine: str, prefix: str, objects: dict[str, ObjectInfo], exc: BaseException
    ) -> Backup:
        """A backup whose manifest cannot be used: known by its folder, dated by the file."""
        _, system, database, backup_id = prefix.rstrip("/").split("/")
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Backup(
            engine=engine,
            system=system,
            database=database,
            id=backup_id,
            prefix=prefix,
            consistent_point=objects[MANIFEST].last_modified,
            size=sum(info.size for info in objects.values()),
            problem=message,
        )

    def legacy_backups(
        self, engine: str, system: str | None = None, database: str | None = None
    ) -> list[Backup]:
        """Backups the plan's shell scripts wrote: ``[postgres-backups/]backup_<date>_<time>.*``."""
        folder, _ = _LEGACY_FOLDERS.get(engine, ("", ""))
        wanted = "sql.gz" if engine == "postgres" else "tar.gz"
        found = []
        for prefix in {folder, ""}:
            for info in self.store.list(prefix + "backup_"):
                match = _LEGACY.search(info.key)
                if not match or match.group(3) != wanted or info.key.count("/") > 1:
                    continue
                when = datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
                name = info.key.rsplit("/", 1)[-1]
                found.append(
                    Backup(
                        engine=engine,
                        system=system or "legacy",
                        database=database or "legacy",
                        id=name,
                        prefix=info.key,
                        consistent_point=when.replace(tzinfo=UTC),
                        size=info.size,
                        legacy_key=info.key,
                    )
                )
        return found

    def find(
        self,
        engine: str,
        system: str | None,
        database: str | None,
        backup_id: str | None = None,
        before: datetime | None = None,
        include_legacy: bool = True,
    ) -> Backup:
        """The backup to restore: by id, the latest before a time, or the latest (never a
        damaged one, and a future-dated one only by its id)."""
        everything = self.backups(engine, system, database, include_legacy=include_legacy)
        where = f"{engine}/{system or '*'}/{database or '*'} in {self.name}"
        if backup_id:
            for backup in everything:
                if backup.id == backup_id:
                    if backup.problem is not None:
                        raise BackupDamaged(f"backup {backup_id} is damaged: {backup.problem}")
                    return backup
            raise BackupNotFound(
                f"no complete backup with id {backup_id!r} for {where}"
                + _nearest(backup_id, [b for b in everything if not b.damaged])
            )
        good = [b for b in everything if not b.damaged]
        now = datetime.now(UTC)
        candidates = [b for b in good if not b.skewed(now)]
        if before is not None:
            candidates = [b for b in candidates if b.consistent_point < before]
            if not candidates:
                oldest = sorted(good, key=lambda b: b.consistent_point)[:3]
                raise BackupNotFound(
                    f"no complete backup before {before.isoformat()} for {where}"
                    + (
                        "; the oldest: " + ", ".join(_described(b) for b in oldest)
                        if oldest
                        else ""
                    )
                )
        if not candidates:
            ahead = [b.id for b in good if b.skewed(now)]
            if ahead:
                raise BackupNotFound(
                    f"no complete backup for {where} but {', '.join(ahead)}, dated in the future "
                    "(the database server's clock is wrong?); name one with --backup-id"
                )
            raise BackupNotFound(f"no complete backup for {where}")
        return candidates[0]

    # -- checking -----------------------------------------------------------------------------

    def verify_objects(self, backup: Backup) -> list[str]:
        """Re-read every object and compare size and sha256; return a list of problems."""
        problems = []
        assert backup.manifest is not None
        for entry in backup.manifest.objects:
            digest = hashlib.sha256()
            size = 0
            with self.store.open(backup.prefix + entry.name) as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            if size != entry.size or digest.hexdigest() != entry.sha256:
                problems.append(
                    f"{entry.name}: size {size} sha256 {digest.hexdigest()[:12]}…, manifest says "
                    f"size {entry.size} sha256 {entry.sha256[:12]}…"
                )
        return problems

    # -- retention ----------------------------------------------------------------------------

    def plan_retention(
        self,
        engine: str,
        system: str,
        database: str,
        now: datetime | None = None,
        retention_days: int | None = None,
        min_keep: int | None = None,
        include_legacy: bool = False,
        kind: str | None = None,
    ) -> RetentionPlan:
        """Backups older than the retention, keeping at least ``min_keep`` complete ones.

        With ``kind``, only backups of that kind are considered (hourly backups can have a
        shorter retention than the daily full ones beside them).
        """
        now = now or datetime.now(UTC)
        days = self.retention_days if retention_days is None else retention_days
        keep_at_least = self.min_keep if min_keep is None else min_keep
        everything = self.backups(engine, system, database, include_legacy=include_legacy)
        damaged = [b for b in everything if b.damaged]
        backups = [b for b in everything if not b.damaged]
        if kind is not None:
            backups = [b for b in backups if b.manifest is not None and b.manifest.kind == kind]
        # A consistent point dated ahead is a wrong clock: such a backup ages from when it was
        # written, and does not count as one of the newest it stands in for.
        skewed = [b for b in backups if b.skewed(now)]
        backups.sort(key=lambda b: b.written() if b.skewed(now) else b.consistent_point)
        backups.reverse()
        cutoff = now - timedelta(days=days)
        keep, delete = [], []
        protected: list[tuple[Backup, str]] = []
        kept_good = 0
        for backup in backups:  # newest first
            young = (backup.written() if backup in skewed else backup.consistent_point) >= cutoff
            if young or (kept_good < keep_at_least and backup not in skewed):
                keep.append(backup)
                kept_good += backup not in skewed
            elif reason := self.store.protection(backup.legacy_key or backup.prefix):
                protected.append((backup, reason))
            else:
                delete.append(backup)
        return RetentionPlan(
            keep=keep, delete=delete, damaged=damaged, skewed=skewed, protected=protected
        )

    def delete_backup(self, backup: Backup) -> str | None:
        """Delete one complete backup: the manifest first, so it stops being a backup at once.

        Returns None once deleted, or why the store's immutability protects it: a refusal of
        the manifest (the first object deleted) leaves the backup whole and complete.
        """
        try:
            if backup.legacy_key:
                self.store.delete([backup.legacy_key])
                return None
            keys = [info.key for info in self.store.list(backup.prefix)]
            self.store.delete([backup.prefix + MANIFEST])
        except ObjectProtected as exc:
            return str(exc)
        self.store.delete(k for k in keys if k != backup.prefix + MANIFEST)
        return None

    def abandoned(self, engine: str, now: datetime | None = None) -> list[str]:
        """Folders without a manifest (an attempt with our marker, or an orphan without one)
        older than a day: whoever wrote them is long gone."""
        now = now or datetime.now(UTC)
        found = []
        for prefix, objects in self._folders(engine, None, None).items():
            if MANIFEST in objects:
                continue
            marker = objects.get(MARKER)
            if marker is not None:
                started = self._marker_time(prefix, marker)
            else:
                started = max(info.last_modified for info in objects.values())
            if now - started > ABANDONED_AFTER:
                found.append(prefix)
        return sorted(found)

    def leftovers(self, engine: str, system: str, database: str) -> list[str]:
        """Every folder of ``system``/``database`` without a manifest, whatever its age. Only
        for a caller that holds the database's lock: no live run can own one then."""
        return sorted(
            prefix
            for prefix, objects in self._folders(engine, system, database).items()
            if MANIFEST not in objects
        )

    def remove_leftovers(self, engine: str, system: str, database: str) -> list[str]:
        """Remove :meth:`leftovers` and what their failed writes left (see there)."""
        if not self.store.exists():
            return []
        removed = self.leftovers(engine, system, database)
        for prefix in removed:
            self.abort(prefix)
        self.store.delete_partials(f"{engine}/{system}/{database}/")
        return removed

    def _marker_time(self, prefix: str, marker: ObjectInfo) -> datetime:
        """When the attempt started: the marker's own record, else the object's mtime."""
        try:
            started = json.loads(self.store.read_bytes(prefix + MARKER))["started"]
            return datetime.fromisoformat(started)
        except (ValueError, KeyError, TypeError, OperationFailed):
            return marker.last_modified

    def remove_abandoned(self, engine: str, now: datetime | None = None) -> list[str]:
        removed = self.abandoned(engine, now)
        for prefix in removed:
            self.abort(prefix)
        return removed

    # -- verification records -------------------------------------------------------------------

    def record_verification(self, backup: Backup, record: dict[str, Any]) -> str:
        """Store a verification record next to the backup; return its key."""
        when = datetime.now(UTC)
        if backup.legacy_key:
            key = f"{backup.legacy_key}.verifications/{when:%Y%m%dT%H%M%S%fZ}.json"
        else:
            key = f"{backup.prefix}{VERIFICATIONS}{when:%Y%m%dT%H%M%S%fZ}.json"
        self.store.put_bytes(key, json.dumps(record, indent=2, default=str).encode())
        return key

    def verifications(self, backup: Backup) -> list[dict[str, Any]]:
        """Verification records of a backup, oldest first."""
        prefix = (
            f"{backup.legacy_key}.verifications/"
            if backup.legacy_key
            else backup.prefix + VERIFICATIONS
        )
        records = []
        for info in sorted(self.store.list(prefix), key=lambda i: i.key):
            try:
                records.append(json.loads(self.store.read_bytes(info.key)))
            except (ValueError, OperationFailed):
                continue
        return records


def copy_object(
    source: Store,
    source_prefix: str,
    entry: ObjectEntry,
    target: Repository,
    target_prefix: str,
    seal: bool,
) -> ObjectEntry:
    """Copy one object of a backup as stored, re-checking its size and sha256 on the way; with
    ``seal`` (an object stored in clear going into a repository with ``encrypt_to``) encrypt
    it on the way and return the entry of what was stored."""
    name = entry.logical_name + crypto.SUFFIX if seal else entry.name
    digest, stored = Digest(), Digest()
    with source.open(source_prefix + entry.name) as handle:
        chunks = hashed(progress.counted("copy", read_chunks(handle)), digest)
        if seal:
            chunks = crypto.encrypt(chunks, target.encrypt_to)
        target.store.put(target_prefix + name, hashed(chunks, stored))
    if digest.sha256 != entry.sha256 or digest.size != entry.size:
        raise ChecksumMismatch(f"{source_prefix}{entry.name} changed while copying")
    if not seal:
        return entry
    return entry.model_copy(
        update={
            "name": name,
            "size": stored.size,
            "sha256": stored.sha256,
            "encryption": ObjectEncryption(recipients=list(target.encrypt_to)),
        }
    )


def copy_backup(source: Repository, backup: Backup, target: Repository) -> Manifest:
    """Copy a complete backup to another repository, re-checking every checksum on the way.

    Objects are copied as stored, except that an object stored in clear is encrypted on the
    way into a repository with ``encrypt_to`` (which needs no identity); the copy's manifest
    then records the new checksums. An encrypted object is never decrypted here.
    """
    assert backup.manifest is not None
    manifest = backup.manifest
    prefix = target.begin(manifest.engine, manifest.system, manifest.database, manifest.id)
    try:
        entries = []
        for entry in manifest.objects:
            seal = entry.encryption is None and bool(target.encrypt_to)
            entries.append(copy_object(source.store, backup.prefix, entry, target, prefix, seal))
        copied = manifest.model_copy(update={"objects": entries})
        target.commit(prefix, copied)
    except BaseException:
        # What the failure left (storage down?) goes with the next run; the failure is
        # what must surface.
        with contextlib.suppress(Exception):
            target.abort(prefix)
        raise
    return copied
