"""Configuration backups: check the remote cheaply, bundle it when it changed, verify, restore.

The check (:func:`compare`) is one ``git ls-remote``: the remote's refs against the newest
bundle's manifest. Only a difference makes :func:`backup_config` fetch the refs into a
scratch bare repository and bundle them, so running it every 15 minutes costs one request
while nothing changes. The manifest records what the bundle holds (``git bundle
list-heads``), not what ``ls-remote`` said a moment before.

Scratch work happens under ``DR_WORK_DIR`` (default: the system's temporary directory) and is
removed when the step ends; what a run killed with ``kill -9`` left there is removed by the
next one (:func:`_scratch`). A restore killed half-way can be run again: a clone is moved into
its path only once complete and verified, and a push goes on into a remote that holds nothing
but refs of the backup, as the backup has them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dr_runbooks.config import GitConfig
from dr_runbooks.errors import BadInput, ConfigError, DRError, RestoreVerificationFailed
from dr_runbooks.gitconfig.catalog import ConfigBackup, ConfigCatalog, ConfigManifest
from dr_runbooks.gitconfig.git import (
    GitRemote,
    bundle_heads,
    clone_bundle,
    create_bundle,
    ls_remote,
    push_refs,
    verify_bundle,
)
from dr_runbooks.processes import owned_workdir, remove_stale_workdirs
from dr_runbooks.repository import new_backup_id
from dr_runbooks.text import first_line

__all__ = [
    "Drift",
    "backup_config",
    "compare",
    "push_backup",
    "remote_from_config",
    "restore_clone",
    "verify_backup",
]


def remote_from_config(git: GitConfig, environ: Mapping[str, str] | None = None) -> GitRemote:
    """The remote dr.yaml names, with its credential from the environment variable it names."""
    env = os.environ if environ is None else environ
    password = None
    if git.password_env:
        password = env.get(git.password_env)
        if not password:
            raise ConfigError(f"the environment variable {git.password_env} is not set")
    return GitRemote.parse(git.url, password=password, username=git.username)


@dataclass(frozen=True)
class Drift:
    """The remote's refs against the newest bundle's: what was added, changed and removed."""

    newest: ConfigBackup | None
    remote: dict[str, str]
    head: str | None = None
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return self.newest is not None and not (self.added or self.changed or self.removed)

    def describe(self) -> str:
        if self.newest is None:
            return "no configuration backup"
        parts = [
            f"{label} {', '.join(names[:3])}{'…' if len(names) > 3 else ''}"
            for label, names in (
                ("new", self.added),
                ("moved", self.changed),
                ("deleted", self.removed),
            )
            if names
        ]
        return "; ".join(parts) or "the remote matches the newest bundle"


def compare(remote: GitRemote, catalog: ConfigCatalog, patterns: Sequence[str]) -> Drift:
    """The remote's refs (one ``ls-remote``) against the newest bundle."""
    found = ls_remote(remote, patterns)
    newest = catalog.latest()
    if newest is None or newest.manifest is None:
        return Drift(None, found.refs, found.head)
    kept = newest.manifest.refs
    return Drift(
        newest,
        found.refs,
        found.head,
        added=sorted(set(found.refs) - set(kept)),
        changed=sorted(r for r in found.refs if r in kept and kept[r] != found.refs[r]),
        removed=sorted(set(kept) - set(found.refs)),
    )


#: Scratch directories (a fetched mirror, a downloaded bundle) start with this.
SCRATCH_PREFIX = "dr-config-"


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """A private directory under ``DR_WORK_DIR`` (default: the system's temporary directory),
    removed at the end. Those that runs killed with ``kill -9`` left (no ``finally`` runs
    then) are removed first."""
    base = Path(os.environ.get("DR_WORK_DIR") or tempfile.gettempdir())
    remove_stale_workdirs(SCRATCH_PREFIX, base)
    directory = owned_workdir(SCRATCH_PREFIX, base)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def backup_config(
    remote: GitRemote,
    catalog: ConfigCatalog,
    patterns: Sequence[str],
    head: str | None = None,
    now: Callable[[], datetime] | None = None,
    holder: str = "config-backup",
) -> ConfigManifest:
    """Bundle the remote's refs into a new backup (under the system's lock): marker,
    bundle, then the manifest. A failure removes the attempt's folder."""
    clock = now or (lambda: datetime.now(UTC))
    with (
        catalog.locked(holder),
        _scratch() as scratch,
    ):
        leftovers = catalog.remove_leftovers()
        started = clock()
        backup_id = new_backup_id(started)
        prefix = catalog.begin(backup_id, started)
        try:
            bundle = Path(scratch) / "config.bundle"
            refs = create_bundle(remote, patterns, head, Path(scratch) / "mirror.git", bundle)
            stored = catalog.put_bundle(prefix, bundle)
            manifest = ConfigManifest(
                id=backup_id,
                system=catalog.system,
                source=remote.url,
                started=started,
                finished=clock(),
                refs=refs,
                head=head,
                bundle=stored,
                leftovers_removed=leftovers,
            )
            catalog.commit(prefix, manifest)
        except BaseException:
            catalog.abort(prefix)
            raise
    return manifest


def verify_backup(catalog: ConfigCatalog, backup: ConfigBackup) -> dict[str, Any]:
    """Check a backup's bundle (stored size and sha256, ``git bundle verify``, its refs
    against the manifest) and record the result beside it; return the record."""
    assert backup.manifest is not None
    problems: list[str] = []
    with _scratch() as scratch:
        bundle = Path(scratch) / "config.bundle"
        try:
            catalog.fetch_bundle(backup, bundle)
            verify_bundle(bundle, Path(scratch) / "verify.git")
            if bundle_heads(bundle) != backup.manifest.refs:
                problems.append("the bundle's refs differ from the manifest's")
        except DRError as exc:
            problems.append(first_line(exc))
    record = {
        "kind": "bundle",
        "backup": backup.id,
        "ok": not problems,
        "problems": problems,
        "refs": len(backup.manifest.refs),
        "finished": datetime.now(UTC).isoformat(),
    }
    catalog.record_verification(backup, record)
    return record


def restore_clone(catalog: ConfigCatalog, backup: ConfigBackup, path: Path) -> dict[str, str]:
    """Clone ``backup`` into ``path`` (which must not exist, or be empty) as a bare mirror,
    and check that it holds exactly the manifest's refs; return them.

    The clone is made beside ``path`` and moved into it once verified, so ``path`` never
    holds half a clone: a restore killed half-way leaves it as it was, and the next one
    removes the partial clone."""
    assert backup.manifest is not None
    if path.exists() and any(path.iterdir()):
        raise BadInput(f"{path} exists and is not empty: restore into a new path")
    parent = path.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    partials = f".{path.name}.dr-partial-"
    remove_stale_workdirs(partials, parent)
    partial = owned_workdir(partials, parent)
    try:
        with _scratch() as scratch:
            bundle = catalog.fetch_bundle(backup, scratch / "config.bundle")
            refs = clone_bundle(bundle, partial / "clone", backup.manifest.head)
        if refs != backup.manifest.refs:
            raise RestoreVerificationFailed(
                f"the clone for {path} holds {len(refs)} refs, backup {backup.id} "
                f"{len(backup.manifest.refs)}: " + _difference(backup.manifest.refs, refs)
            )
        try:
            # Atomic, and refused unless the path is missing or an empty directory.
            os.rename(partial / "clone", path)
        except OSError:
            raise BadInput(f"{path} exists and is not empty: restore into a new path") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return refs


def push_backup(catalog: ConfigCatalog, backup: ConfigBackup, target: GitRemote) -> dict[str, str]:
    """Push ``backup``'s refs to ``target``, which must hold no refs but the backup's own at
    the backup's commits (what a push killed half-way made: the restore goes on); any other
    ref there is reported, never overwritten. Afterwards the target's refs must equal the
    manifest's."""
    assert backup.manifest is not None
    present = ls_remote(target, ("refs/*",)).refs
    foreign = sorted(name for name, obj in present.items() if backup.manifest.refs.get(name) != obj)
    if foreign:
        raise BadInput(
            f"{target} already holds {len(foreign)} ref(s) that backup {backup.id} does not "
            f"hold as they are ({', '.join(foreign[:3])}): a configuration restore pushes only "
            "to a new, empty repository"
        )
    with _scratch() as scratch:
        bundle = catalog.fetch_bundle(backup, scratch / "config.bundle")
        mirror = scratch / "mirror.git"
        clone_bundle(bundle, mirror, backup.manifest.head)
        push_refs(mirror, target, backup.manifest.refs)
    pushed = ls_remote(target, ("refs/*",)).refs
    if pushed != backup.manifest.refs:
        raise RestoreVerificationFailed(
            f"{target} differs from backup {backup.id} after the push: "
            + _difference(backup.manifest.refs, pushed)
        )
    return pushed


def _difference(expected: Mapping[str, str], found: Mapping[str, str]) -> str:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    moved = sorted(r for r in expected if r in found and found[r] != expected[r])
    parts = [
        f"{label} {', '.join(names[:3])}"
        for label, names in (("missing", missing), ("extra", extra), ("at other commits", moved))
        if names
    ]
    return "; ".join(parts) or "no difference"
