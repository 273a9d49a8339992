"""Pushing WAL files into repositories and fetching them back, verified.

Each archived file is ONE object, ``postgres/<system>/wal/<timeline>/<name>.zst``::

    DRWAL1 {"name": "0000000100000000000000A3", "size": 16777216, "sha256": "…", …}\\n
    <one zstd frame, with its content size and checksum>

The first line records the file's size and sha256 before compression, and the size and
sha256 of the bytes stored after it, so an object and its checksums appear together, whole or
not at all (the store's contract), and a reader needs one request.

Pushed with ``encrypt_to`` (age recipients), the body is the zstd frame encrypted to them
(:mod:`dr_runbooks.crypto`), and the first line says so: ``"encryption": {"format": "age",
"recipients": ["age1…"]}``. The object keeps its name (a fetch finds a file by its name alone,
whichever way it was stored); ``stored_sha256`` is of the encrypted bytes, so checking an
archive needs no key (:func:`verify`), and ``sha256`` stays that of the file's content, so a
repeated push is recognised without decrypting anything. With the standard tools::

    tail -n +2 OBJECT | age --decrypt -i IDENTITY | zstd -d > SEGMENT

A timeline history file's first line also records its branch points (``"branches": [[1,
"0/3000148"]]``: each parent timeline and where the next one left it), without the reasons
the file gives: planning a recovery, the recovery window and ``dr status`` follow timelines
without any key (:func:`read_history`).

pyrage is imported only when a file is encrypted or decrypted: ``dr wal push`` runs once per
WAL segment, and a push in clear pays nothing for encryption.

Rules, as PostgreSQL's ``archive_command``/``restore_command`` need them:

- :func:`push` returns only once the object is in every repository given, with the size that
  was written. A file already archived with the same content is a success (PostgreSQL repeats
  a push whose exit status it did not see); with different content it is an error, and the
  object stays as it was. Only ``.partial`` files may be replaced: the one ``dr wal stream``
  keeps pushing grows.
- A segment's first page must say it is that segment (its address and size), so a wrong file
  is refused before it is stored under the segment's name.
- :func:`fetch` writes the file only after its sha256 and size match the header; a damaged
  object raises :class:`~dr_runbooks.errors.ChecksumMismatch` (checked on the stored bytes
  first, before any decryption) and nothing is written. An encrypted one needs an identity
  from the keyring given (by default ``DR_AGE_IDENTITY_FILE``); without one that matches,
  :class:`~dr_runbooks.errors.IdentityRequired` names the recipients. A file archived nowhere
  raises :class:`~dr_runbooks.errors.ObjectNotFound`, the one answer that tells PostgreSQL
  "not in the archive".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zstandard

from dr_runbooks.errors import (
    BadInput,
    ChecksumMismatch,
    IdentityRequired,
    ObjectNotFound,
    OperationFailed,
)
from dr_runbooks.postgres.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    WalName,
    format_lsn,
    parse_lsn,
    parse_wal_name,
    wal_key,
    wal_prefix,
)
from dr_runbooks.storage.base import Store

if TYPE_CHECKING:
    from dr_runbooks.crypto import Keyring

__all__ = [
    "ArchivedFile",
    "FetchResult",
    "PushResult",
    "WalHeader",
    "fetch",
    "list_archive",
    "push",
    "read",
    "read_header",
    "read_history",
    "segment_identity",
    "verify",
]

MAGIC = b"DRWAL1 "
MAX_HEADER = 4096
COMPRESSION_LEVEL = 3

# XLogLongPageHeaderData, the first page header of every segment: magic, info, timeline, page
# address, remaining length, padding to 8 bytes, system identifier, segment size, block size.
_LONG_HEADER = struct.Struct("=HHIQI4xQII")
_XLP_LONG_HEADER = 0x0002

#: ``crypto.FORMAT``, spelt out so that reading a header imports no cipher.
ENCRYPTION_FORMAT = "age"


@dataclass(frozen=True)
class WalHeader:
    """The first line of an archived WAL object."""

    name: str
    #: The file's size and sha256 (its content, before compression and encryption).
    size: int
    sha256: str
    compression: str = "zstd"
    segment_size: int | None = None
    system_identifier: str | None = None
    pushed: str | None = None
    host: str | None = None
    #: The bytes stored after this line (absent from objects archived before they were kept).
    stored_size: int | None = None
    stored_sha256: str | None = None
    #: ``{"format": "age", "recipients": [...]}``: the body is encrypted; None: in clear.
    encryption: dict[str, Any] | None = None
    #: A history file's branch points, ``[[parent timeline, "LSN"], ...]`` (see the module).
    branches: list[list[Any]] | None = None

    @property
    def recipients(self) -> list[str]:
        return list((self.encryption or {}).get("recipients") or [])

    def encode(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return MAGIC + json.dumps(fields, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, raw: bytes, key: str) -> tuple[WalHeader, int]:
        """The header and the offset of the body; a damaged header is a
        :class:`ChecksumMismatch`."""
        end = raw.find(b"\n", 0, MAX_HEADER)
        if not raw.startswith(MAGIC) or end < 0:
            raise ChecksumMismatch(f"{key} is not an archived WAL file (damaged header)")
        try:
            fields = json.loads(raw[len(MAGIC) : end])
            header = cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError) as exc:
            raise ChecksumMismatch(f"{key}: damaged header ({exc})") from None
        if header.encryption is not None and (
            header.encryption.get("format") != ENCRYPTION_FORMAT or not header.recipients
        ):
            raise OperationFailed(
                f"{key} is encrypted as {header.encryption.get('format')!r}, which this version "
                "of dr cannot read"
            )
        return header, end + 1


@dataclass(frozen=True)
class PushResult:
    name: str
    key: str
    size: int
    stored_size: int
    sha256: str
    #: Repositories the file was written to, and those that already held it unchanged.
    written: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    #: Whom what was written is encrypted to (empty: in clear).
    recipients: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FetchResult:
    name: str
    source: str
    size: int
    #: The segment was not archived whole; its ``.partial`` was served, padded to a segment.
    partial: bool = False


@dataclass(frozen=True)
class ArchivedFile:
    """One object in a system's WAL archive, as a listing shows it."""

    key: str
    wal: WalName
    size: int
    archived: datetime

    @property
    def name(self) -> str:
        return self.wal.name


def segment_identity(name: WalName, data: bytes) -> tuple[int, str]:
    """Check a segment's first page against its name; return its segment size and the
    cluster's system identifier."""
    if len(data) < _LONG_HEADER.size:
        raise BadInput(f"{name.name}: {len(data)} bytes is too short for a WAL segment")
    _magic, info, _tli, pageaddr, _rem, sysid, seg_size, _blcksz = _LONG_HEADER.unpack_from(data)
    if not info & _XLP_LONG_HEADER or seg_size <= 0 or seg_size & (seg_size - 1):
        raise BadInput(f"{name.name} does not start with a WAL segment header")
    expected = name.start_lsn(seg_size)
    if pageaddr != expected:
        raise BadInput(
            f"{name.name} holds WAL from {format_lsn(pageaddr)}, not {format_lsn(expected)}: "
            "refusing to archive it under this name"
        )
    if name.kind == "segment" and len(data) != seg_size:
        raise BadInput(f"{name.name} is {len(data)} bytes; the cluster's segments are {seg_size}")
    return seg_size, str(sysid)


def push(
    path: str | os.PathLike[str],
    system: str,
    stores: Sequence[Store],
    name: str | None = None,
    level: int = COMPRESSION_LEVEL,
    encrypt_to: Sequence[str] = (),
) -> PushResult:
    """Archive the WAL file at ``path`` (named ``name``, by default the file's own name) into
    every store; return only once it is in each of them. With ``encrypt_to``, the object is
    encrypted to those recipients (one object for every store: whoever can read one copy can
    read them all)."""
    if not stores:
        raise BadInput("no repository to push to")
    recipients: tuple[str, ...] = ()
    if encrypt_to:
        from dr_runbooks.crypto import parse_recipients

        recipients = parse_recipients(encrypt_to, "--encrypt-to")
    source = Path(path)
    wal = parse_wal_name(name or source.name)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise OperationFailed(f"cannot read {source}: {exc.strerror or exc}") from None
    segment_size, system_id = None, None
    if wal.kind in ("segment", "partial"):
        segment_size, system_id = segment_identity(wal, data)
    header = WalHeader(
        name=wal.name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        segment_size=segment_size,
        system_identifier=system_id,
        pushed=datetime.now(UTC).isoformat(),
        host=socket.gethostname(),
        branches=_branches(data) if wal.kind == "history" else None,
    )
    key = wal_key(system, wal.name)
    blob: bytes | None = None
    written, already = [], []
    for store in stores:
        existing = _existing_header(store, key)
        if existing is not None and (existing.sha256, existing.size) == (header.sha256, len(data)):
            already.append(store.location)
            continue
        if existing is not None and wal.kind != "partial":
            raise ChecksumMismatch(
                f"{wal.name} is already archived in {store.location} with different content "
                f"(archived sha256 {existing.sha256[:16]}…, {existing.size} bytes; this one "
                f"{header.sha256[:16]}…, {len(data)} bytes): refusing to overwrite it"
            )
        if blob is None:
            blob = _seal(header, data, level, recipients)
        store.put(key, [blob])
        stored = store.stat(key).size
        if stored != len(blob):
            raise OperationFailed(
                f"{key} in {store.location}: stored {stored} bytes, wrote {len(blob)}"
            )
        written.append(store.location)
    return PushResult(
        name=wal.name,
        key=key,
        size=len(data),
        stored_size=len(blob) if blob is not None else 0,
        sha256=header.sha256,
        written=written,
        already=already,
        recipients=list(recipients) if written else [],
    )


def _seal(header: WalHeader, data: bytes, level: int, recipients: Sequence[str]) -> bytes:
    """The object: the header line, then the file compressed (and encrypted)."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    body = compressor.compress(data)
    encryption = None
    if recipients:
        from dr_runbooks.crypto import encrypt_bytes

        body = encrypt_bytes(body, recipients)
        encryption = {"format": ENCRYPTION_FORMAT, "recipients": list(recipients)}
    line = replace(
        header,
        stored_size=len(body),
        stored_sha256=hashlib.sha256(body).hexdigest(),
        encryption=encryption,
    ).encode()
    if len(line) > MAX_HEADER:
        raise BadInput(f"too many recipients: the header of {header.name} exceeds {MAX_HEADER} B")
    return line + body


def _branches(data: bytes) -> list[list[Any]] | None:
    """The branch points of a timeline history file (``<parent>\t<LSN>\t<reason>`` lines);
    None if it is not laid out so (a reader then decrypts the file itself)."""
    found: list[list[Any]] = []
    try:
        for line in data.decode().splitlines():
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            found.append([int(fields[0]), format_lsn(parse_lsn(fields[1]))])
    except (UnicodeDecodeError, ValueError, IndexError, BadInput):
        return None
    return found


def _existing_header(store: Store, key: str) -> WalHeader | None:
    try:
        with store.open(key) as handle:
            raw = handle.read(MAX_HEADER)
    except ObjectNotFound:
        return None
    return WalHeader.decode(raw, f"{store.location}/{key}")[0]


def read_header(store: Store, key: str) -> WalHeader:
    """The header of an archived object (its sha256 and size before compression)."""
    with store.open(key) as handle:
        raw = handle.read(MAX_HEADER)
    return WalHeader.decode(raw, f"{store.location}/{key}")[0]


def fetch(
    name: str,
    destination: str | os.PathLike[str],
    system: str,
    stores: Sequence[Store],
    allow_partial: bool = True,
    keyring: Keyring | None = None,
) -> FetchResult:
    """Write the archived WAL file ``name`` to ``destination``, verified (decrypted with an
    identity from ``keyring`` when it is encrypted).

    The stores are tried in order; a damaged copy is skipped for an intact one elsewhere, and
    if there is none the damage is the error. A segment archived only as ``.partial`` (the end
    of a timeline, or the segment ``dr wal stream`` was writing) is served, padded with zeros to
    a whole segment as PostgreSQL expects, when ``allow_partial``.
    """
    data, result = read(name, system, stores, allow_partial, keyring)
    _write(Path(destination), data)
    return result


def read(
    name: str,
    system: str,
    stores: Sequence[Store],
    allow_partial: bool = True,
    keyring: Keyring | None = None,
) -> tuple[bytes, FetchResult]:
    """The verified content of the archived WAL file ``name`` (see :func:`fetch`); an
    encrypted one is decrypted with an identity from ``keyring`` (by default, the file
    ``DR_AGE_IDENTITY_FILE`` names)."""
    if not stores:
        raise BadInput("no repository to fetch from")
    wal = parse_wal_name(name)
    candidates = [wal_key(system, name)]
    if allow_partial and wal.kind == "segment":
        candidates.append(wal_key(system, name + ".partial"))
    damage: ChecksumMismatch | None = None
    locked: IdentityRequired | None = None
    for key in candidates:
        for store in stores:
            try:
                with store.open(key) as handle:
                    raw = handle.read()
            except ObjectNotFound:
                continue
            try:
                header, data = _decode(raw, f"{store.location}/{key}", name, keyring)
            except ChecksumMismatch as exc:
                damage = damage or exc
                continue
            except IdentityRequired as exc:  # an intact copy elsewhere may be in clear
                locked = locked or exc
                continue
            partial = key.endswith(".partial.zst")
            if partial:
                size = header.segment_size or DEFAULT_SEGMENT_SIZE
                data = data + bytes(max(0, size - len(data)))
            return data, FetchResult(name, store.location, len(data), partial)
    if locked is not None:
        raise locked
    if damage is not None:
        raise damage
    where = ", ".join(s.location for s in stores)
    raise ObjectNotFound(f"{name} (not archived for system {system} in {where})")


def read_history(
    timeline: int, system: str, stores: Sequence[Store], keyring: Keyring | None = None
) -> list[tuple[int, int]]:
    """The branch points of ``timeline``'s history file, oldest first: each parent timeline
    and the LSN where the next one left it. Read from the object's first line where it records
    them (no key needed, even for an encrypted file), else from the file itself (see
    :func:`read`); a timeline with no history file archived is :class:`ObjectNotFound`."""
    name = f"{timeline:08X}.history"
    key = wal_key(system, name)
    for store in stores:
        try:
            header = read_header(store, key)
        except ObjectNotFound:
            continue
        if header.branches is not None:
            try:
                return [(int(tli), parse_lsn(str(lsn))) for tli, lsn in header.branches]
            except (TypeError, ValueError, BadInput):
                break  # a malformed record: the file itself decides
    data, _ = read(name, system, stores, allow_partial=False, keyring=keyring)
    found = _branches(data)
    if found is None:
        raise ChecksumMismatch(f"{name} of {system} is not a timeline history file")
    return [(int(tli), parse_lsn(str(lsn))) for tli, lsn in found]


def verify(store: Store, key: str) -> WalHeader:
    """Check an archived object without any key: the stored bytes against the sha256 its first
    line records (an object archived before that was recorded is decompressed and its content
    checked instead). A damaged one raises :class:`ChecksumMismatch`."""
    with store.open(key) as handle:
        raw = handle.read()
    where = f"{store.location}/{key}"
    header, offset = WalHeader.decode(raw, where)
    if header.stored_sha256 is not None:
        _check_stored(header, raw[offset:], where)
    elif header.encryption is None:
        _decompressed(header, raw[offset:], where)
    else:
        raise ChecksumMismatch(f"{where} is encrypted and records no checksum of its bytes")
    return header


def _check_stored(header: WalHeader, body: bytes, where: str) -> None:
    digest = hashlib.sha256(body).hexdigest()
    if len(body) != header.stored_size or digest != header.stored_sha256:
        raise ChecksumMismatch(
            f"{where} is damaged: {len(body)} bytes stored with sha256 {digest[:16]}…, "
            f"archived as {header.stored_size} bytes with sha256 "
            f"{(header.stored_sha256 or '')[:16]}…"
        )


def _decode(raw: bytes, where: str, name: str, keyring: Keyring | None) -> tuple[WalHeader, bytes]:
    header, offset = WalHeader.decode(raw, where)
    if header.name not in (name, name + ".partial"):
        raise ChecksumMismatch(f"{where} holds {header.name}, not {name}")
    body = raw[offset:]
    if header.stored_sha256 is not None:
        _check_stored(header, body, where)  # damage is told apart before any decryption
    if header.encryption is not None:
        from dr_runbooks.crypto import Keyring, decrypt_bytes

        keyring = keyring or Keyring()
        identity = keyring.identity_for(header.recipients, f"WAL file {header.name}")
        body = decrypt_bytes(body, identity, where)
    return header, _decompressed(header, body, where)


def _decompressed(header: WalHeader, body: bytes, where: str) -> bytes:
    try:
        data = zstandard.ZstdDecompressor().decompress(body, max_output_size=header.size)
    except zstandard.ZstdError as exc:
        raise ChecksumMismatch(f"{where} is damaged: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != header.size or digest != header.sha256:
        raise ChecksumMismatch(
            f"{where} is damaged: {len(data)} bytes with sha256 {digest[:16]}…, archived as "
            f"{header.size} bytes with sha256 {header.sha256[:16]}…"
        )
    return data


def _write(destination: Path, data: bytes) -> None:
    """Write next to the destination and rename, so PostgreSQL never sees half a file."""
    partial = destination.with_name(f".{destination.name}.dr-{os.getpid()}")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, destination)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise OperationFailed(f"cannot write {destination}: {exc.strerror or exc}") from None


def list_archive(store: Store, system: str, timeline: int | None = None) -> list[ArchivedFile]:
    """Every archived WAL file of ``system`` (or of one timeline), sorted by name."""
    found = []
    for info in store.list(wal_prefix(system, timeline)):
        leaf = info.key.rsplit("/", 1)[-1]
        if not leaf.endswith(".zst"):
            continue
        try:
            wal = parse_wal_name(leaf[:-4])
        except BadInput:
            continue
        found.append(ArchivedFile(info.key, wal, info.size, info.last_modified))
    found.sort(key=lambda f: f.name)
    return found
