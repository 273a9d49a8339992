"""Preserving evidence: the plan's ``tar czf`` of logs and volumes, with a sha256 manifest and a
chain-of-custody record.

Each configured path becomes one ``.tar.gz`` in the evidence store, every file inside hashed as
it is read (the archive's own sha256 too). The manifest lists them; the custody record (who
launched the run, when, what was taken, the hashes) is kept in a *different* place, so whoever
could alter the evidence cannot quietly alter its record too. :func:`verify_evidence` downloads
every archive again and compares its hash with the custody record.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from dr_runbooks.storage.base import Store

__all__ = [
    "EvidenceItem",
    "EvidenceManifest",
    "archive_path",
    "make_immutable",
    "preserve",
    "verify_evidence",
]

CHUNK = 1 << 20


@dataclass
class EvidenceItem:
    """One configured path, archived (or why not)."""

    source: str
    archive: str | None = None
    size: int = 0
    sha256: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    #: Files that could not be read (permissions, vanished), with the reason.
    unreadable: list[dict[str, str]] = field(default_factory=list)
    missing: bool = False


@dataclass
class EvidenceManifest:
    case: str
    system: str
    created: str
    location: str
    items: list[EvidenceItem]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvidenceManifest:
        items = [EvidenceItem(**item) for item in data["items"]]
        return cls(data["case"], data["system"], data["created"], data["location"], items)


class _Hashing(io.RawIOBase):
    """Reads through ``raw``, hashing what passes."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.digest.update(data)
        buffer[: len(data)] = data
        return len(data)


def _walk(source: Path) -> Iterator[Path]:
    if not source.is_dir() or source.is_symlink():
        yield source
        return
    yield source
    for root, dirs, files in os.walk(source, onerror=None, followlinks=False):
        dirs.sort()
        for name in sorted(dirs):
            yield Path(root) / name
        for name in sorted(files):
            yield Path(root) / name


def archive_path(source: Path, destination: Path) -> EvidenceItem:
    """``tar czf destination source``, hashing every regular file as it is added."""
    item = EvidenceItem(source=str(source))
    if not source.exists() and not source.is_symlink():
        item.missing = True
        return item
    base = source.parent
    with tarfile.open(destination, "w:gz") as tar:
        for path in _walk(source):
            name = str(path.relative_to(base))
            try:
                info = tar.gettarinfo(str(path), arcname=name)
                if info.isreg():
                    with open(path, "rb") as raw:
                        hashing = _Hashing(raw)
                        tar.addfile(info, io.BufferedReader(hashing, CHUNK))
                    item.files.append(
                        {"name": name, "size": info.size, "sha256": hashing.digest.hexdigest()}
                    )
                else:
                    tar.addfile(info)
            except OSError as exc:
                item.unreadable.append({"name": name, "reason": exc.strerror or str(exc)})
    item.size = destination.stat().st_size
    item.sha256 = _file_sha256(destination)
    return item


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_.") or "root"


def preserve(
    store: Store,
    system: str,
    case: str,
    sources: list[str],
    work_dir: str | None = None,
) -> EvidenceManifest:
    """Archive each of ``sources`` into ``store`` under ``<system>/<case>/``, then the manifest
    (``manifest.json``) last. An archive already in the store for this case (a run that
    crashed after uploading it) is kept as it is, its hash read back, not replaced."""
    store.create()
    prefix = f"{_slug(system)}/{case}/"
    items: list[EvidenceItem] = []
    with tempfile.TemporaryDirectory(prefix="dr-evidence-", dir=work_dir) as tmp:
        for index, source in enumerate(sources, 1):
            key = f"{prefix}{index:02d}-{_slug(Path(source).name or source)}.tar.gz"
            local = Path(tmp) / "archive.tar.gz"
            item = archive_path(Path(source), local)
            if not item.missing:
                if store.has(key):
                    item.sha256, item.size = _stored_sha256(store, key)
                else:
                    store.put(key, _chunks(local))
                item.archive = key
            local.unlink(missing_ok=True)
            items.append(item)
    manifest = EvidenceManifest(
        case=case,
        system=system,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        location=store.location,
        items=items,
    )
    store.put_bytes(prefix + "manifest.json", manifest.to_bytes())
    return manifest


def _stored_sha256(store: Store, key: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with store.open(key) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify_evidence(store: Store, expected: dict[str, str]) -> list[dict[str, Any]]:
    """Download every archive named in ``expected`` (key → sha256, from the custody record)
    and compare; one row per archive with ``ok``."""
    rows = []
    for key, sha256 in sorted(expected.items()):
        try:
            actual, size = _stored_sha256(store, key)
        except Exception as exc:  # a missing or unreadable archive fails its row, not the rest
            rows.append({"archive": key, "ok": False, "detail": str(exc).splitlines()[0]})
            continue
        rows.append(
            {
                "archive": key,
                "ok": actual == sha256,
                "detail": f"{size} bytes, sha256 {actual[:16]}…"
                + ("" if actual == sha256 else f" (custody record: {sha256[:16]}…)"),
            }
        )
    return rows


def make_immutable(store: Store, keys: list[str]) -> str:
    """Protect the archives from change where the store allows it: a legal hold on Azure blobs
    (the account needs version-level immutability), read-only files on a local disk. Returns
    what was done, or why not."""
    container = getattr(store, "container", None)
    if container is not None:
        try:
            for key in keys:
                container.get_blob_client(key).set_legal_hold(True)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"not immutable: this account refused a legal hold ({reason[:160]})"
        return f"legal hold set on {len(keys)} blob(s)"
    root = getattr(store, "root", None)
    if root is not None:
        for key in keys:
            path = Path(root) / key
            mode = path.stat().st_mode
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        return f"{len(keys)} file(s) made read-only"
    return "not immutable: this store offers no protection"
