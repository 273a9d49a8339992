"""Restore a container, a prefix or one blob to the state of a file backup.

::

    plan = plan_restore(account, catalog, catalog.find(before=incident), "uploads",
                        prefix="2026/11/")
    result = restore_files(account, catalog, plan)       # into a new container

The target is a new container by default (``<container>-restore-<backup time>``); an
existing one is accepted only when it holds nothing under what is restored but blobs exactly
as the backup has them (content, metadata, content type): what a restore killed half-way
wrote, which the next run keeps and does not write again. In place (the
target is the source container) needs ``approved=True`` — the runbook's gate — and first
takes a ``pre-restore`` backup of the container, so everything the restore overwrites or
removes is kept, restorable by that backup's id. In place, the blobs under the restored
prefix that the backup does not hold are removed: the prefix is returned to the backup's
state (a single blob's restore touches that blob alone).

Every blob's content is read from the repository into a local spool and checked against the
manifest's sha256 before it is uploaded; once all are written, every restored blob is read
back from the target and compared again (content, metadata, content type), and the target
is checked to hold nothing else under the prefix. Blobs are written, and read back, eight at
a time (``parallel``), as the backup reads them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dr_runbooks.errors import BadInput, ChecksumMismatch, RestoreVerificationFailed
from dr_runbooks.files.backup import DEFAULT_PARALLEL, backup_files, spooled
from dr_runbooks.files.catalog import BlobEntry, FileBackup, FileCatalog
from dr_runbooks.files.source import BlobAccount, SourceBlob

__all__ = [
    "FileRestorePlan",
    "FileRestoreResult",
    "default_target",
    "plan_restore",
    "restore_files",
    "verify_restore",
]

_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class FileRestorePlan:
    """What a restore will do, shown to a person before it is approved."""

    backup: FileBackup
    container: str
    target: str
    prefix: str | None
    blob: str | None
    entries: list[BlobEntry]
    in_place: bool
    #: In place: blobs now under the prefix that the backup does not hold (removed, kept in
    #: the pre-restore backup).
    remove: list[str] = field(default_factory=list)
    #: In place: blobs now there that the restore replaces.
    overwrite: list[str] = field(default_factory=list)
    #: Into another container: blobs already there exactly as the backup has them (an
    #: interrupted restore's), not written again.
    present: list[str] = field(default_factory=list)

    @property
    def scope(self) -> str:
        if self.blob is not None:
            return f"{self.container}/{self.blob}"
        return f"{self.container}/{self.prefix or ''}*"

    def markdown(self) -> str:
        assert self.backup.manifest is not None
        size = sum(e.size for e in self.entries)
        lines = [
            f"Restore **{self.scope}** to backup `{self.backup.id}` "
            f"({self.backup.consistent_point:%Y-%m-%d %H:%M} UTC)",
            "",
            f"- target container: `{self.target}`"
            + (" (in place: the source itself)" if self.in_place else ""),
            f"- blobs written: {len(self.entries)} ({size} bytes)",
        ]
        if self.in_place:
            lines += [
                f"- blobs overwritten: {len(self.overwrite)}; removed: {len(self.remove)} "
                "(both kept first in a pre-restore backup)",
            ]
        if self.present:
            lines += [
                f"- already there as in the backup (an interrupted restore's), not written "
                f"again: {len(self.present)}",
            ]
        return "\n".join(lines)


@dataclass(frozen=True)
class FileRestoreResult:
    backup_id: str
    container: str
    target: str
    restored: int
    bytes: int
    removed: list[str]
    #: The pre-restore backup that keeps what an in-place restore replaced.
    kept_in: str | None
    verified: int
    #: Pre-restore backups that earlier runs of this restore took (one killed half-way kept
    #: there what it overwrote), newest first.
    earlier_kept_in: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "container": self.container,
            "target": self.target,
            "restored": self.restored,
            "bytes": self.bytes,
            "removed": len(self.removed),
            "kept_in": self.kept_in,
            "earlier_kept_in": self.earlier_kept_in,
            "verified": self.verified,
        }


def default_target(container: str, backup: FileBackup) -> str:
    """``uploads-restore-20261130t013000z-7f3a``: a new container named after the backup."""
    suffix = f"-restore-{backup.id.lower()}"
    return f"{container[: 63 - len(suffix)].rstrip('-')}{suffix}"


def plan_restore(
    account: BlobAccount,
    catalog: FileCatalog,
    backup: FileBackup,
    container: str,
    *,
    prefix: str | None = None,
    blob: str | None = None,
    target: str | None = None,
    in_place: bool = False,
) -> FileRestorePlan:
    """Decide what to write where; refuses (:class:`BadInput`) before anything is touched."""
    if backup.manifest is None:
        raise BadInput(f"backup {backup.id} is damaged: {backup.problem}")
    if prefix and blob:
        raise BadInput("give a prefix or a single blob, not both")
    record = backup.manifest.container(container)
    if blob is not None:
        entry = record.entry(blob)
        if entry is None:
            raise BadInput(f"backup {backup.id} holds no blob {container}/{blob}")
        entries = [entry]
    else:
        entries = [e for e in record.blobs if e.name.startswith(prefix or "")]
        if not entries and prefix:
            raise BadInput(f"backup {backup.id} holds no blob under {container}/{prefix}")
    if in_place:
        if target not in (None, container):
            raise BadInput(f"in place restores into {container} itself, not into {target}")
        target = container
    else:
        target = target or default_target(container, backup)
        if target == container:
            raise BadInput(f"restoring into {container} itself is an in-place restore")
    if not _CONTAINER.match(target):
        raise BadInput(f"invalid container name for the target: {target!r}")
    now = (
        {b.name: b for b in account.list_blobs(target, blob or prefix)}
        if account.container_exists(target)
        else {}
    )
    if blob is not None:
        now = {name: b for name, b in now.items() if name == blob}
    wanted = {e.name: e for e in entries}
    if now and not in_place:
        differing = sorted(
            name
            for name, found in now.items()
            if name not in wanted or _differences(account, found, wanted[name])
        )
        if differing:
            raise BadInput(
                f"the target container {target} already holds {len(differing)} blobs under "
                f"{blob or prefix or 'its root'} that differ from backup {backup.id} or are not "
                f"in it ({', '.join(differing[:3])}); restore into a new container, or in place"
            )
    return FileRestorePlan(
        backup=backup,
        container=container,
        target=target,
        prefix=prefix,
        blob=blob,
        entries=entries,
        in_place=in_place,
        remove=sorted(name for name in now if name not in wanted),
        overwrite=sorted(
            name for name, b in now.items() if name in wanted and b.etag != wanted[name].etag
        ),
        present=[] if in_place else sorted(now),
    )


def restore_files(
    account: BlobAccount,
    catalog: FileCatalog,
    plan: FileRestorePlan,
    *,
    approved: bool = False,
    parallel: int = DEFAULT_PARALLEL,
) -> FileRestoreResult:
    """Carry the plan out (``parallel`` blobs at a time) and verify the target against the
    manifest."""
    if plan.in_place and not approved:
        raise BadInput(f"restoring {plan.scope} in place needs approval")
    identity = catalog.identity_for(plan.backup)  # before anything is touched
    assert plan.backup.manifest is not None
    content = plan.backup.manifest.content
    unreferenced = [e.name for e in plan.entries if e.sha256 not in content]
    if unreferenced:
        raise ChecksumMismatch(
            f"backup {plan.backup.id} references no content for {', '.join(unreferenced[:3])}"
        )
    kept_in, earlier = None, []
    if plan.in_place:
        restoring = {"restoring": plan.backup.id, "into": plan.target, "scope": plan.scope}
        earlier = [
            b.id
            for b in catalog.backups()
            if b.manifest is not None
            and b.manifest.kind == "pre-restore"
            and all(b.manifest.details.get(k) == v for k, v in restoring.items())
        ]
        kept = backup_files(
            account, catalog, [plan.container], kind="pre-restore", details=restoring
        )
        kept_in = kept.id
    else:
        account.create_container(plan.target)
    present = set(plan.present)
    todo = [entry for entry in plan.entries if entry.name not in present]

    def write(entry: BlobEntry) -> int:
        stored = content[entry.sha256]
        copy = spooled(catalog.read_content(stored, identity))
        with copy.file:
            if copy.sha256 != entry.sha256 or copy.size != entry.size:
                raise ChecksumMismatch(
                    f"{plan.container}/{entry.name}: content {stored.key} has sha256 "
                    f"{copy.sha256[:12]}… ({copy.size} bytes), the manifest says "
                    f"{entry.sha256[:12]}… ({entry.size} bytes)"
                )
            account.write(
                plan.target,
                entry.name,
                copy.file,
                copy.size,
                metadata=entry.metadata,
                content_type=entry.content_type,
                content_md5=entry.content_md5,
            )
        return entry.size

    written = sum(_each(write, todo, parallel))
    for name in plan.remove:
        account.delete_blob(plan.target, name)
    verified = verify_restore(account, plan, parallel)
    return FileRestoreResult(
        backup_id=plan.backup.id,
        container=plan.container,
        target=plan.target,
        restored=len(plan.entries),
        bytes=written,
        removed=plan.remove,
        kept_in=kept_in,
        verified=verified,
        earlier_kept_in=earlier,
    )


T = TypeVar("T")
R = TypeVar("R")


def _each(call: Callable[[T], R], items: Iterable[T], parallel: int) -> list[R]:
    """``call`` on every item, ``parallel`` at a time; results in the items' order. The first
    failure is raised once the calls already running have ended (the others never start)."""
    with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="dr-files") as pool:
        futures = [pool.submit(call, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _differences(account: BlobAccount, blob: SourceBlob, entry: BlobEntry) -> list[str]:
    """How the blob as it is now differs from the backup's entry (read whole: its content's
    sha256, its metadata and content type); empty when it is the same."""
    problems = []
    digest = hashlib.sha256()
    for chunk in account.read(blob):
        digest.update(chunk)
    if digest.hexdigest() != entry.sha256:
        problems.append(f"{blob.name}: content differs (sha256 {digest.hexdigest()[:12]}…)")
    if blob.metadata != entry.metadata:
        problems.append(f"{blob.name}: metadata {blob.metadata} differs from {entry.metadata}")
    if entry.content_type and blob.content_type != entry.content_type:
        problems.append(f"{blob.name}: content type {blob.content_type} != {entry.content_type}")
    return problems


def verify_restore(
    account: BlobAccount, plan: FileRestorePlan, parallel: int = DEFAULT_PARALLEL
) -> int:
    """Read every restored blob back and compare it with the manifest; the target must
    hold nothing else under the restored prefix. Returns the count verified;
    :class:`RestoreVerificationFailed` lists what differs."""
    problems: list[str] = []
    listed = {b.name: b for b in account.list_blobs(plan.target, plan.blob or plan.prefix)}
    if plan.blob is not None:
        listed = {n: b for n, b in listed.items() if n == plan.blob}
    wanted = {e.name: e for e in plan.entries}
    for name in sorted(set(listed) - set(wanted)):
        problems.append(f"{name}: in the target, not in backup {plan.backup.id}")
    for name in sorted(set(wanted) - set(listed)):
        problems.append(f"{name}: missing from the target")
    there = [(listed[name], entry) for name, entry in sorted(wanted.items()) if name in listed]
    for found in _each(lambda pair: _differences(account, *pair), there, parallel):
        problems += found
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise RestoreVerificationFailed(
            f"the restore of {plan.scope} into {plan.target} differs from backup "
            f"{plan.backup.id}: {shown}{more}"
        )
    return len(wanted)
