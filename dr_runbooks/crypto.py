"""Client-side encryption of backup objects in the age format (age-encryption.org/v1).

A repository with ``encrypt_to`` stores every object of a backup compressed, then encrypted to
one or more X25519 recipients (public keys, ``age1…``): whoever holds the storage, or the
machine that wrote the backup, cannot read it. Any one of the matching identities (private
keys, ``AGE-SECRET-KEY-1…``) decrypts it, here or with the ``age`` command-line tool::

    age --decrypt -i identity.txt data.dump.zst.age | zstd -d > data.dump

The cipher is not ours: pyrage binds rage, the Rust implementation of age. pyrage encrypts
between two file objects in one blocking call; :func:`encrypt` and :func:`decrypt` run that
call on a worker thread while the caller's thread keeps pulling the source, so the source's
progress reports, Prefect context and child processes stay where they were, and memory holds
a few chunks whatever the object's size. :func:`encrypt_bytes` and :func:`decrypt_bytes` do
the same for an object small enough to hold whole (a roles file, a WAL segment).

Identities come from a :class:`Keyring`, a list of sources tried in order when an encrypted
backup is read, never before: a file (``--identity FILE``, ``DR_AGE_IDENTITY_FILE``), a
Prefect Secret block, an Azure Key Vault secret. The blocks and Key Vault are read through a
:class:`SecretReader` the caller passes (this package imports neither Prefect nor the Azure
SDK's clients). An identity is registered for redaction the moment it is read and lives only
in memory: never in argv, a log line, an artifact, a work directory or an error message.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyrage
from pyrage import x25519

from dr_runbooks.errors import (
    BadInput,
    DecryptionFailed,
    DRError,
    IdentityRequired,
    OperationFailed,
)
from dr_runbooks.redaction import register_secret
from dr_runbooks.text import first_line

__all__ = [
    "FORMAT",
    "IDENTITY_FILE_ENV",
    "SUFFIX",
    "FileIdentity",
    "Identity",
    "IdentitySource",
    "Keyring",
    "SecretIdentity",
    "SecretReader",
    "decrypt",
    "decrypt_bytes",
    "encrypt",
    "encrypt_bytes",
    "parse_recipients",
]

#: What a manifest calls the format of an encrypted object.
FORMAT = "age"
#: Appended to an encrypted object's name: ``data.dump.zst.age``.
SUFFIX = ".age"
#: A file holding the identity, for processes that get it from their environment.
IDENTITY_FILE_ENV = "DR_AGE_IDENTITY_FILE"

_SECRET_PREFIX = "AGE-SECRET-KEY-1"
# Chunks waiting for the worker; what the worker wrote waits for the caller's next turn, so
# the bytes in flight stay within a few chunks.
_PENDING = 4
_END = object()


def parse_recipients(values: Iterable[str], where: str = "") -> tuple[str, ...]:
    """X25519 recipients (``age1…``), checked and without repeats; a malformed one is
    :class:`BadInput` naming it (a public key: safe to show)."""
    found: list[str] = []
    for value in values:
        text = str(value).strip()
        if text.upper().startswith(_SECRET_PREFIX):
            # Someone pasted the private key where the public one belongs: never echo it.
            register_secret(text)
            raise BadInput(
                f"{where or 'encrypt_to'}: that is an identity (a private key), not a "
                "recipient: give its public key, age1… (age-keygen -y prints it)"
            )
        try:
            x25519.Recipient.from_str(text)
        except Exception:
            raise BadInput(
                f"{where or 'encrypt_to'}: {text!r} is not an age recipient (age1…, as "
                "age-keygen prints it)"
            ) from None
        if text not in found:
            found.append(text)
    return tuple(found)


# -- identities -------------------------------------------------------------------------------


class Identity:
    """One or more age identities read from one source; ``str()`` never shows them."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        keys = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            register_secret(line)
            try:
                keys.append(x25519.Identity.from_str(line))
            except Exception:
                raise BadInput(
                    f"{source} holds something that is not an age identity "
                    f"(expected lines {_SECRET_PREFIX}…, as age-keygen writes them)"
                ) from None
        if not keys:
            raise BadInput(f"{source} holds no age identity ({_SECRET_PREFIX}…)")
        self._keys = tuple(keys)
        self.public_keys = tuple(str(key.to_public()) for key in keys)

    def matches(self, recipients: Iterable[str]) -> bool:
        return bool(set(self.public_keys) & set(recipients))

    def write_private(self, path: Path, owner: tuple[int, int] | None = None) -> None:
        """Write these keys to a new file that only its owner can read (mode 0600, given to
        ``owner`` when set): how a process of another OS user (``restore_command``) gets the
        identity without it passing through argv or the environment. The file must not exist;
        a symbolic link in its place is refused."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(path, flags, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
            if owner is not None:
                os.fchown(descriptor, *owner)
            text = "".join(f"{key}\n" for key in self._keys)
            os.write(descriptor, text.encode())
            os.fsync(descriptor)
        except BaseException:
            os.close(descriptor)
            path.unlink(missing_ok=True)
            raise
        os.close(descriptor)

    def __repr__(self) -> str:
        return f"Identity({self.source}, public keys {', '.join(self.public_keys)})"

    __str__ = __repr__


class IdentitySource(Protocol):
    """Where an identity may be found; :meth:`read` is called only when one is needed."""

    def describe(self) -> str:
        """What the source is, for messages (never the identity)."""

    def read(self) -> str | None:
        """The identity file's text, or None when this source is not set up here."""


@dataclass(frozen=True)
class FileIdentity:
    """An identity file (``age-keygen -o``); with no path, the one ``DR_AGE_IDENTITY_FILE``
    names when it is read, if any."""

    path: str | None = None

    def _path(self) -> str | None:
        return self.path or os.environ.get(IDENTITY_FILE_ENV) or None

    def describe(self) -> str:
        path = self._path()
        return f"identity file {path}" if path else f"{IDENTITY_FILE_ENV} (not set)"

    def read(self) -> str | None:
        path = self._path()
        if path is None:
            return None
        try:
            return Path(path).expanduser().read_text()
        except OSError as exc:
            raise BadInput(f"cannot read identity file {path}: {exc.strerror or exc}") from None


class SecretReader(Protocol):
    """Reads secrets where the engine cannot: Prefect Secret blocks, Azure Key Vault."""

    def prefect_secret(self, block: str) -> str:
        """The value of the Prefect Secret block ``block``."""

    def key_vault_secret(self, secret: str, vault_url: str | None, site: str | None) -> str:
        """The latest value of ``secret`` in the vault at ``vault_url`` (signed in with
        ``DefaultAzureCredential``) or in the vault of the AzureSite block ``site``."""


@dataclass(frozen=True)
class SecretIdentity:
    """An identity kept as a secret: a Prefect Secret block, or a Key Vault secret."""

    kind: str  # "prefect" or "key-vault"
    name: str
    reader: SecretReader | None = field(default=None, compare=False)
    vault_url: str | None = None
    site: str | None = None

    def describe(self) -> str:
        if self.kind == "prefect":
            return f"Prefect Secret block {self.name}"
        where = self.vault_url or f"the vault of site {self.site}"
        return f"Key Vault secret {self.name} in {where}"

    def read(self) -> str | None:
        if self.reader is None:
            raise BadInput(f"{self.describe()} cannot be read here (no Prefect or Azure access)")
        if self.kind == "prefect":
            return self.reader.prefect_secret(self.name)
        return self.reader.key_vault_secret(self.name, self.vault_url, self.site)


class Keyring:
    """The identity sources of one repository, tried in order when an encrypted backup is
    read; what each gave is kept for the rest of the run (in memory only)."""

    def __init__(self, sources: Sequence[IdentitySource] = ()) -> None:
        self.sources: tuple[IdentitySource, ...] = (FileIdentity(), *sources)
        self._loaded: dict[int, Identity | str] = {}
        self._lock = threading.Lock()

    @classmethod
    def merged(cls, keyrings: Iterable[Keyring]) -> Keyring:
        """One keyring trying the sources of several in turn (a WAL file may be in any of a
        system's repositories), each source once."""
        sources: list[IdentitySource] = []
        for keyring in keyrings:
            for source in keyring.sources:
                if source != FileIdentity() and source not in sources:
                    sources.append(source)
        return cls(sources)

    def identity_for(self, recipients: Sequence[str], what: str) -> Identity:
        """An identity that can decrypt what was encrypted to ``recipients``, else
        :class:`IdentityRequired`: one line naming the recipients and what was tried."""
        tried: list[str] = []
        for index, source in enumerate(self.sources):
            loaded = self._load(index, source)
            if loaded is None:
                continue
            if isinstance(loaded, str):
                tried.append(loaded)
            elif loaded.matches(recipients):
                return loaded
            else:
                tried.append(f"{loaded.source} is {', '.join(loaded.public_keys)}")
        encrypted = f"{what} is encrypted to {', '.join(recipients)}"
        if not tried:
            raise IdentityRequired(
                f"{encrypted}: give an identity that decrypts it (--identity FILE, "
                f"{IDENTITY_FILE_ENV}, or the repository's identity: in dr.yaml)"
            )
        raise IdentityRequired(f"{encrypted}, and no identity given matches: {'; '.join(tried)}")

    def _load(self, index: int, source: IdentitySource) -> Identity | str | None:
        with self._lock:
            if index not in self._loaded:
                try:
                    text = source.read()
                except DRError as exc:
                    self._loaded[index] = first_line(exc)
                else:
                    if text is None:
                        return None
                    register_secret(text.strip())
                    try:
                        self._loaded[index] = Identity(text, source.describe())
                    except BadInput as exc:
                        self._loaded[index] = first_line(exc)
            return self._loaded[index]


# -- streams ----------------------------------------------------------------------------------


class _Feed:
    """The worker's input: reads chunks the caller's thread puts in a queue."""

    def __init__(self, pending: queue.Queue[Any]) -> None:
        self._pending = pending
        self._chunk = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._chunk and not self._ended:
            item = self._pending.get()
            if item is _END:
                self._ended = True
            elif isinstance(item, BaseException):
                raise item  # the caller gave up: make the library stop
            else:
                self._chunk = memoryview(item)
        size = len(self._chunk) if size is None or size < 0 else size
        piece, self._chunk = self._chunk[:size], self._chunk[size:]
        return bytes(piece)


class _Sink:
    """The worker's output: never refuses a write (pyrage ignores errors of its last
    flush), the caller's thread takes what arrived between its own turns."""

    def __init__(self) -> None:
        self.ready: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self.ready.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class _Stopped(Exception):
    """Put in the worker's input when the consumer stops early."""


def _run(chunks: Iterable[bytes], work: Any, failure: type[DRError], what: str) -> Iterator[bytes]:
    """Pump ``chunks`` through ``work(reader, writer)`` on a worker thread; yield its output."""
    pending: queue.Queue[Any] = queue.Queue(maxsize=_PENDING)
    feed, sink = _Feed(pending), _Sink()
    outcome: list[BaseException | None] = []

    def worker() -> None:
        try:
            work(feed, sink)
            outcome.append(None)
        except BaseException as exc:  # reported on the caller's thread
            outcome.append(exc)
        sink.ready.put(_END)

    thread = threading.Thread(target=worker, name="dr-age", daemon=True)
    thread.start()

    ended: list[bool] = []

    def drain(block: bool) -> Iterator[bytes]:
        while not ended:
            try:
                item = sink.ready.get(block=block)
            except queue.Empty:
                return
            if item is _END:
                ended.append(True)
                return
            yield item

    def offer(item: object) -> Iterator[bytes]:
        """Queue ``item`` for the worker, passing on its output meanwhile; give up if the
        worker has stopped (its error is in ``outcome``)."""
        while thread.is_alive():
            try:
                pending.put(item, timeout=0.05)
                break
            except queue.Full:
                yield from drain(block=False)
        yield from drain(block=False)

    finished = False
    try:
        for chunk in chunks:
            yield from offer(chunk)
            if not thread.is_alive():
                break
        else:
            yield from offer(_END)
        yield from drain(block=True)
        thread.join()
        finished = True
    finally:
        if not finished:
            _stop(pending, thread)
    error = outcome[0] if outcome else None
    if error is not None:
        raise failure(f"{what}: {first_line(error) or type(error).__name__}") from None


def _stop(pending: queue.Queue[Any], thread: threading.Thread) -> None:
    while thread.is_alive():
        try:
            pending.put(_Stopped("stopped"), timeout=0.05)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                pending.get_nowait()  # make room: what was pending is not wanted any more
    thread.join()


def encrypt(chunks: Iterable[bytes], recipients: Sequence[str]) -> Iterator[bytes]:
    """Encrypt a stream to ``recipients`` (at least one); the age format, binary."""
    keys = [x25519.Recipient.from_str(r) for r in parse_recipients(recipients)]
    if not keys:
        raise BadInput("encryption needs at least one recipient")

    def work(reader: Any, writer: Any) -> None:
        pyrage.encrypt_io(reader, writer, keys)

    return _run(chunks, work, OperationFailed, "encryption failed")


def decrypt(chunks: Iterable[bytes], identity: Identity, what: str) -> Iterator[bytes]:
    """Decrypt an age stream; a wrong identity, damaged or truncated input raises
    :class:`DecryptionFailed` (nothing it yielded before then can be trusted)."""

    def work(reader: Any, writer: Any) -> None:
        pyrage.decrypt_io(reader, writer, list(identity._keys))

    return _run(chunks, work, DecryptionFailed, f"{what} does not decrypt")


def encrypt_bytes(data: bytes, recipients: Sequence[str]) -> bytes:
    """:func:`encrypt` for a small object held whole."""
    keys = [x25519.Recipient.from_str(r) for r in parse_recipients(recipients)]
    if not keys:
        raise BadInput("encryption needs at least one recipient")
    return bytes(pyrage.encrypt(data, keys))


def decrypt_bytes(data: bytes, identity: Identity, what: str) -> bytes:
    """:func:`decrypt` for a small object held whole."""
    try:
        return bytes(pyrage.decrypt(data, list(identity._keys)))
    except Exception as exc:
        raise DecryptionFailed(f"{what} does not decrypt: {first_line(exc)}") from None
