"""The pieces every handler of the loopback Azure endpoint shares: the state, the answer, the
long-running operations and the faults a test injects.

State is a :class:`ResourceStore` keyed by ARM resource id (case-insensitive, as ARM is); a
resource is the JSON ARM returns for it. A long-running operation is an :class:`Operation`
that finishes after a number of polls, then runs its completion once.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiError",
    "Call",
    "Fault",
    "Operation",
    "ResourceStore",
    "Response",
    "new_etag",
]


@dataclass
class Response:
    """What the endpoint answers: a status, a JSON body (or none) and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An error answer in ARM's shape: ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return Response(self.status, body, dict(self.headers))


def new_etag() -> str:
    return uuid.uuid4().hex


def _key(resource_id: str) -> str:
    return resource_id.rstrip("/").lower()


class ResourceStore:
    """Every resource the endpoint holds, by ARM id; thread-safe, and copies in and out so a
    caller never holds the live state."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def get(self, resource_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(_key(resource_id))
            return copy.deepcopy(item) if item is not None else None

    def put(self, resource_id: str, resource: dict[str, Any]) -> None:
        with self._lock:
            self._items[_key(resource_id)] = copy.deepcopy(resource)

    def update(self, resource_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Change a stored resource in place, under the lock."""
        with self._lock:
            item = self._items.get(_key(resource_id))
            if item is not None:
                change(item)

    def delete(self, resource_id: str) -> bool:
        with self._lock:
            return self._items.pop(_key(resource_id), None) is not None

    def children(self, parent_id: str, child_type: str) -> list[dict[str, Any]]:
        """The resources directly under ``parent_id`` whose last type segment is ``child_type``
        (``…/networkSecurityGroups/nsg`` and ``securityRules``)."""
        prefix = _key(parent_id) + "/" + child_type.lower() + "/"
        with self._lock:
            return [
                copy.deepcopy(item)
                for key, item in sorted(self._items.items())
                if key.startswith(prefix) and "/" not in key[len(prefix) :]
            ]

    def ids(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(
                item["id"] for key, item in self._items.items() if key.startswith(_key(prefix))
            )


@dataclass
class Operation:
    """A long-running operation: in progress for ``polls`` status reads, then ``complete`` runs
    once and its result (a body for a ``Location`` poll) is kept."""

    id: str
    polls: int
    complete: Callable[[], Any]
    #: The resource the operation works on: reading it also advances the operation, as Azure
    #: goes on in the background when nobody polls.
    resource_id: str | None = None
    error: ApiError | None = None
    result: Any = None
    done: bool = False
    status_reads: int = 0

    def advance(self) -> bool:
        """Count one status read; finish when the polls are used up. Returns whether done."""
        self.status_reads += 1
        if not self.done and self.status_reads > self.polls:
            self.done = True
            if self.error is None:
                self.result = self.complete()
        return self.done


@dataclass
class Fault:
    """An error the endpoint answers instead of (or, with ``after``, after applying) a
    matching request, ``times`` times."""

    method: str
    pattern: re.Pattern[str]
    status: int
    code: str
    times: int = 1
    retry_after: int | None = None
    after: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.hits < self.times
            and self.method in ("*", method)
            and self.pattern.search(path) is not None
        )

    def error(self) -> ApiError:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return ApiError(self.status, self.code, f"injected {self.status}", headers)


@dataclass(frozen=True)
class Call:
    """One request the endpoint received, and what it answered."""

    method: str
    path: str
    status: int


class Operations:
    """The endpoint's long-running operations, by id."""

    def __init__(self) -> None:
        self._items: dict[str, Operation] = {}
        self._ids: Iterator[int] = itertools.count(1)
        self._lock = threading.Lock()

    def start(
        self, polls: int, complete: Callable[[], Any], resource_id: str | None = None
    ) -> Operation:
        with self._lock:
            operation = Operation(
                f"op-{next(self._ids)}-{uuid.uuid4().hex[:8]}", polls, complete, resource_id
            )
            self._items[operation.id] = operation
            return operation

    def on(self, resource_id: str) -> list[Operation]:
        """The operations started on ``resource_id``, oldest first."""
        key = resource_id.rstrip("/").lower()
        with self._lock:
            return [
                op
                for op in self._items.values()
                if op.resource_id and op.resource_id.rstrip("/").lower() == key
            ]

    def get(self, operation_id: str) -> Operation | None:
        with self._lock:
            return self._items.get(operation_id)
