"""The store interface every backup repository backend keeps.

A store is a flat namespace of objects under ``/``-separated keys (``postgres/app/app/<id>/
manifest.json``). The contract, which every backend passes in the shared contract tests
(``tests/store/test_contract.py``); the backends are :mod:`.local` and :mod:`.azure`:

- ``put`` makes an object appear **whole or not at all**: a reader never sees a half-written
  object, and a failed ``put`` leaves no object under the key (a previous object under the same
  key stays as it was).
- ``open``, ``read_bytes`` and ``stat`` raise :class:`~dr_runbooks.errors.ObjectNotFound` when
  the key holds no object.
- ``list`` yields every object whose key starts with ``prefix``, recursively, in no particular
  order; it never yields an object that is still being written.
- ``delete`` removes the objects named and ignores keys that hold none.
- Only ``create`` brings the store itself (a directory, a container) into being, and only a
  backup calls it. Every other method on a store that does not exist raises
  :class:`~dr_runbooks.errors.RepositoryNotFound`.
- ``try_lock(name, holder)`` takes a named lock, or returns None while another holder has it.
  A lock dies with its holder: released by the returned :class:`Lease`, and without it when the
  holder's process dies (a file lock) or stops renewing (a blob lease, within
  ``LEASE_SECONDS``). ``lock_holder(name)`` reads what the live holder wrote. Lock files live
  under ``.locks/``, outside every backup's folder.
- ``delete_partials(prefix)`` removes what failed writes left under a folder and no listing
  shows (a local hidden partial file, uncommitted Azure blocks).
- ``protection(prefix)`` says why the objects under a folder cannot be deleted now, when the
  store's own immutability (a retention period, a legal hold) protects them, so retention
  leaves them alone instead of failing; a ``delete`` the store refuses for that reason raises
  :class:`~dr_runbooks.errors.ObjectProtected`. Stores without such a policy protect nothing.
- A failure of the storage in the middle of an operation (a reset, a timeout, a 5xx) raises
  :class:`~dr_runbooks.errors.StoreUnavailable`, which is worth a retry; refused credentials
  raise :class:`~dr_runbooks.errors.AccessDenied`.

Backends translate their own errors into these at the edge, with the location in the message
and never a credential.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from dr_runbooks.errors import ObjectNotFound

__all__ = ["LOCKS", "Immutability", "Lease", "ObjectInfo", "Store", "check_key"]

#: The folder of lock objects in a store.
LOCKS = ".locks/"


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object."""

    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class Immutability:
    """What a store's own policy does against deleting or overwriting its objects."""

    #: A time-based retention policy on the whole container (locked or not).
    time_based: bool = False
    #: Version-level immutability: each blob version may carry its own retention and hold.
    version_level: bool = False
    legal_hold: bool = False

    @property
    def protects(self) -> bool:
        return self.time_based or self.version_level or self.legal_hold

    def describe(self) -> str:
        kinds = [
            text
            for on, text in (
                (self.time_based, "time-based retention policy"),
                (self.version_level, "version-level immutability"),
                (self.legal_hold, "legal hold"),
            )
            if on
        ]
        return ", ".join(kinds) or "none"


class Lease(ABC):
    """A lock held in a store (see :meth:`Store.try_lock`)."""

    @abstractmethod
    def alive(self) -> bool:
        """Whether the lock is still held (a blob lease that could not be renewed is not)."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up (idempotent)."""


class Store(ABC):
    """One repository's objects. See the module docstring for the contract."""

    #: Where the store is, for messages and reports; never holds a credential.
    location: str

    @abstractmethod
    def exists(self) -> bool:
        """Whether the store itself (directory, container) exists and can be reached."""

    @abstractmethod
    def create(self) -> None:
        """Create the store if it does not exist; only a backup calls this."""

    @abstractmethod
    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write the object ``key`` from ``chunks``, whole or not at all; return its size."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open the object ``key`` for streaming reads."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Return the size and modification time of the object ``key``."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every complete object whose key starts with ``prefix``."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects named; keys that hold no object are ignored."""

    def put_bytes(self, key: str, data: bytes) -> int:
        """Write a small object from memory."""
        return self.put(key, [data])

    def read_bytes(self, key: str) -> bytes:
        """Read a small object whole."""
        with self.open(key) as handle:
            return handle.read()

    def immutability(self) -> Immutability | None:
        """The store's immutability, or None when it has no such notion or this credential
        cannot read it."""
        return None

    def protection(self, prefix: str) -> str | None:
        """Why the objects under ``prefix`` cannot be deleted now, or None."""
        return None

    def has(self, key: str) -> bool:
        """Whether an object exists under ``key``."""
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    @abstractmethod
    def try_lock(self, name: str, holder: bytes) -> Lease | None:
        """Take the lock ``name``, recording ``holder``; None while another holder has it."""

    @abstractmethod
    def lock_holder(self, name: str) -> bytes | None:
        """What the live holder of ``name`` recorded, or None when nobody holds it."""

    @abstractmethod
    def delete_partials(self, prefix: str) -> None:
        """Remove what failed writes left under ``prefix`` that no listing shows. Only for a
        folder whose writer is known dead (its lock is held by the caller)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key
