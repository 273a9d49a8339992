"""An Azure Blob Storage container as a backup repository.

Three ways to reach a container, each built by :func:`container_client_from`:

=============================  ===========================================================
connection string + container  the account key (or a SAS) travels in the connection string
container URL with a SAS       ``https://acct.blob.core.windows.net/backups?sv=...&sig=...``
account URL + container        signs in with ``DefaultAzureCredential`` (``az login``, a
                               managed identity, ``AZURE_CLIENT_ID``/``..._SECRET``, ...)
=============================  ===========================================================

:func:`parse_container_url` maps a ``--repo`` argument onto one of them::

    store = AzureBlobStore(parse_container_url("https://acct.blob.core.windows.net/backups"))
    store.create()
    store.put("postgres/app/manifest.json", [b"{}"])

How the contract in :mod:`dr_runbooks.storage.base` is kept:

- ``put`` stages blocks and commits the block list last; Azure makes a blob visible only on
  that commit, so a failed ``put`` leaves at most uncommitted blocks, which listings, reads
  and ``stat`` never see and Azure discards after a week. A small object (one block or less)
  is written with a single Put Blob, which is just as atomic.
- ``open`` pins every ranged read to the ETag of the first one, so a reader gets one version
  of an object or an error, never a mix of two.
- SDK errors are translated at the edge; messages carry the container URL without its query
  string, and never a key or a SAS token.
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import itertools
import os
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient, ExponentialRetry

from dr_runbooks.errors import (
    AccessDenied,
    ConfigError,
    DRError,
    ObjectNotFound,
    ObjectProtected,
    OperationFailed,
    RepositoryNotFound,
    StoreUnavailable,
)
from dr_runbooks.storage.base import LOCKS, Immutability, Lease, ObjectInfo, Store, check_key

__all__ = [
    "CONNECTION_STRING_ENV",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_READ_SIZE",
    "AzureBlobStore",
    "SoftDeletePolicy",
    "container_client_from",
    "parse_container_url",
]

MiB = 1024 * 1024
#: A lock's blob lease lasts this long unless renewed (Azure allows 15 to 60 s); the holder
#: renews it every third of that, so a dead holder's lock is free again within this time.
LEASE_SECONDS = 15
DEFAULT_BLOCK_SIZE = 8 * MiB
#: Bytes per ranged read; the SDK's own download chunk size.
DEFAULT_READ_SIZE = 4 * MiB
DEFAULT_CONCURRENCY = 4
#: Azure's limit on committed blocks per blob: with 8 MiB blocks an object can hold ~390 GiB.
MAX_BLOCKS = 50_000
#: The environment variable an ``azure://<container>`` repository takes its account from.
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"

_CONTAINER_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class _Retry(ExponentialRetry):
    """Exponential retry that gives up at once when no credential yields a token.

    The credential policy runs inside the retry loop, so a missing ``az login`` would
    otherwise be retried like a network blip (60 s seen here for two calls).
    """

    def increment(
        self,
        settings: dict[str, Any],
        request: Any,
        response: Any = None,
        error: AzureError | None = None,
    ) -> bool:
        if isinstance(error, ClientAuthenticationError):
            return False
        return super().increment(settings, request, response, error)


def _client_options() -> dict[str, Any]:
    """Client settings that make an unreachable endpoint fail in seconds, not minutes.

    The SDK's default retry waits 15 s, 18 s, 24 s... between attempts (88 s seen here against
    a closed port). These sleep ~2 s and ~4 s between connection attempts (retry_connect=2),
    and up to ~30 s in all for a server that answers 500/503, which a long upload should
    ride out.
    """
    return {
        "retry_policy": _Retry(
            initial_backoff=0,
            increment_base=2,
            retry_total=4,
            retry_connect=2,
            retry_read=3,
            retry_status=4,
            random_jitter_range=1,
        ),
        "connection_timeout": 4,
        "read_timeout": 60,
    }


def container_client_from(
    *,
    connection_string: str | None = None,
    container_url: str | None = None,
    account_url: str | None = None,
    container_name: str | None = None,
    credential: TokenCredential | None = None,
) -> ContainerClient:
    """Build a :class:`ContainerClient` from exactly one of three sources.

    - ``connection_string`` and ``container_name``;
    - ``container_url`` carrying a SAS token as its query string;
    - ``account_url`` and ``container_name``, signed in with ``credential`` (by default
      ``DefaultAzureCredential()``, which finds ``az login``, a managed identity, or a service
      principal in the environment). Bearer tokens are only sent over https.

    Raises :class:`ConfigError` for a missing, extra or malformed setting; the message never
    repeats a secret. No request is made here.
    """
    given = [
        name
        for name, value in (
            ("connection_string", connection_string),
            ("container_url", container_url),
            ("account_url", account_url),
        )
        if value
    ]
    if len(given) != 1:
        got = " and ".join(given) if given else "none"
        raise ConfigError(
            f"give exactly one of connection_string, container_url or account_url (got {got})"
        )
    if credential is not None and not account_url:
        raise ConfigError("a credential goes with account_url; the other forms carry their own")

    if connection_string:
        name = _check_container_name(container_name)
        try:
            return ContainerClient.from_connection_string(
                connection_string, name, **_client_options()
            )
        except ValueError:
            # The SDK's message is safe, but keep ours uniform and never echo the string itself.
            raise ConfigError("the Azure Storage connection string is malformed") from None

    if container_url:
        if container_name is not None:
            raise ConfigError("container_url already names the container; drop container_name")
        parts = urlsplit(container_url)
        _check_scheme(parts.scheme, parts.hostname, what="container_url")
        if "sig=" not in parts.query:
            raise ConfigError(
                f"container_url has no SAS token: {_without_query(container_url)}; "
                "to sign in with DefaultAzureCredential pass account_url and container_name"
            )
        _split_container_path(container_url)
        return ContainerClient.from_container_url(container_url, **_client_options())

    assert account_url  # exactly one source was given, and it was not the other two
    name = _check_container_name(container_name)
    parts = urlsplit(account_url)
    if parts.query:
        raise ConfigError(
            "account_url must not carry a SAS token; pass the container URL with its SAS "
            "as container_url"
        )
    if parts.scheme != "https":
        raise ConfigError(
            f"account_url must use https to sign in with a token: {_without_query(account_url)}"
        )
    return ContainerClient(
        account_url,
        name,
        credential=credential if credential is not None else DefaultAzureCredential(),
        **_client_options(),
    )


def parse_container_url(url: str, *, environ: Mapping[str, str] | None = None) -> ContainerClient:
    """Turn a ``--repo`` argument naming a container into a client.

    Accepted forms:

    ``azure://<container>``
        The container in the account of the connection string in the environment variable
        ``AZURE_STORAGE_CONNECTION_STRING``.
    ``https://<account>.blob.core.windows.net/<container>?<sas>``
        The container, authorised by the SAS token in the query string.
    ``https://<account>.blob.core.windows.net/<container>``
        The container, signed in with ``DefaultAzureCredential``.
    ``http://127.0.0.1:<port>/<account>/<container>[?<sas>]``
        An emulator (Azurite) on a loopback address, which puts the account in the path.

    Any other host suffix (sovereign clouds, custom domains) works the same way as
    ``blob.core.windows.net``. A path inside the container (``.../<container>/<prefix>``) is
    refused, as are plain ``http`` URLs to hosts other than loopback. ``environ`` defaults to
    ``os.environ``.
    """
    parts = urlsplit(url)
    if parts.scheme == "azure":
        if parts.query or parts.fragment or parts.path.strip("/"):
            raise ConfigError(
                f"azure://<container> takes only a container name, got {_without_query(url)}"
            )
        connection_string = (os.environ if environ is None else environ).get(CONNECTION_STRING_ENV)
        if not connection_string:
            raise ConfigError(
                f"{_without_query(url)} uses the account in {CONNECTION_STRING_ENV}, "
                "which is not set"
            )
        return container_client_from(
            connection_string=connection_string, container_name=parts.netloc
        )

    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"not a container URL: {_without_query(url)} "
            "(expected azure://<container> or https://<account>.blob.core.windows.net/<container>)"
        )
    _check_scheme(parts.scheme, parts.hostname, what="the repository URL")
    account_path, container = _split_container_path(url)
    if parts.query:
        return container_client_from(container_url=urlunsplit(parts._replace(fragment="")))
    return container_client_from(
        account_url=f"{parts.scheme}://{parts.netloc}{account_path}", container_name=container
    )


class SoftDeletePolicy(NamedTuple):
    """The account's blob soft-delete setting: whether it is on, and for how many days."""

    enabled: bool
    days: int | None


class AzureBlobStore(Store):
    """A store in one blob container; each key is a blob name.

    Memory follows the settings, not the object: a ``put`` uploads ``concurrency`` blocks of
    ``block_size`` bytes at once while it fills the next, and a reader fetches ``concurrency``
    ranges of ``read_size`` bytes ahead of the one being read. At the defaults, a 200 MiB put
    grew the process by ~65 MiB and reading it back by ~55 MiB (tests/store). The largest
    object is ``MAX_BLOCKS * block_size``, ~390 GiB at the default 8 MiB.
    """

    def __init__(
        self,
        container: ContainerClient,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        read_size: int = DEFAULT_READ_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if min(block_size, read_size, concurrency) < 1:
            raise ValueError("block_size, read_size and concurrency must be positive")
        self.container = container
        self.block_size = block_size
        self.read_size = read_size
        self.concurrency = concurrency
        # The client's URL carries the SAS token, if any, as its query string.
        self.location = _without_query(container.url)
        #: Whether the account ever answered: before that, an unreachable address is bad
        #: input; after it, a failure is a storage outage mid-operation (transient).
        self._reached = False
        self._immutability: tuple[Immutability | None] | None = None

    def exists(self) -> bool:
        # Refused credentials and an unreachable account raise: they are not "no store".
        return self._container_exists()

    def create(self) -> None:
        # Listing first, not creating: a SAS scoped to the container may list it but is
        # refused Create Container even when the container is there.
        if self._container_exists():
            return
        with self._errors("creating the container"):
            try:
                self.container.create_container()
            except ResourceExistsError as exc:
                # Another backup created it meanwhile; ContainerBeingDeleted is not fine.
                if _error_code(exc) != "ContainerAlreadyExists":
                    raise

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        blob = self.container.get_blob_client(check_key(key))
        with self._errors(f"writing {key}"):
            blocks = _regroup(chunks, self.block_size)
            first = next(blocks, b"")
            if len(first) < self.block_size:
                # The input ended inside the first block: one Put Blob, as atomic as a commit.
                blob.upload_blob(first, overwrite=True)
                return len(first)
            return self._put_blocks(blob, key, itertools.chain([first], blocks))

    def _put_blocks(self, blob: BlobClient, key: str, blocks: Iterator[bytes]) -> int:
        # Per-put ids: a failed or concurrent put of the same key stages blocks under other
        # ids, so the list committed here names only this put's bytes.
        upload_id = secrets.token_hex(8)
        block_ids: list[str] = []
        in_flight: set[Future[Any]] = set()
        size = 0
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="blob-put")
        try:
            for block in blocks:
                if len(block_ids) == MAX_BLOCKS:
                    raise OperationFailed(
                        f"writing {key} to {self.location}: the object exceeds {MAX_BLOCKS} "
                        f"blocks of {self.block_size} bytes; use a larger block_size"
                    )
                # Wait for a free slot, and surface a failed upload now rather than after
                # reading the whole input.
                finished = {future for future in in_flight if future.done()}
                if len(in_flight) - len(finished) >= self.concurrency:
                    finished |= wait(in_flight, return_when=FIRST_COMPLETED).done
                for future in finished:
                    future.result()
                in_flight -= finished
                block_id = f"{upload_id}-{len(block_ids):06d}"
                block_ids.append(block_id)
                size += len(block)
                in_flight.add(executor.submit(blob.stage_block, block_id, block, len(block)))
                del block  # the upload holds the only reference, and frees it when done
            for future in wait(in_flight).done:
                future.result()
            blob.commit_block_list([BlobBlock(block_id) for block_id in block_ids])
        finally:
            # On failure, wait for uploads already running so none outlives the call.
            executor.shutdown(wait=True, cancel_futures=True)
        return size

    def open(self, key: str) -> BinaryIO:
        blob = self.container.get_blob_client(check_key(key))
        first, size, etag = self._read_first(blob, key)
        if size <= len(first):
            return io.BufferedReader(_BlobReader(first, size, None, self.read_size, 1))

        def read_range(offset: int, length: int) -> bytes:
            with self._errors(f"reading {key}", key):
                downloader = blob.download_blob(
                    offset,
                    length,
                    max_concurrency=1,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
                return downloader.readall()

        reader = _BlobReader(first, size, read_range, self.read_size, self.concurrency)
        return io.BufferedReader(reader)

    def _read_first(self, blob: BlobClient, key: str) -> tuple[bytes, int, str]:
        """Read the first range; return it, the object's size and its ETag."""
        with self._errors(f"reading {key}", key):
            try:
                downloader = blob.download_blob(0, self.read_size, max_concurrency=1)
            except HttpResponseError as exc:
                # A range request on an empty blob is refused with 416; nothing else is.
                if exc.status_code == 416:
                    return b"", 0, ""
                raise
            data = downloader.readall()
            content_range = downloader.properties.content_range
            size = int(content_range.rsplit("/", 1)[1]) if content_range else len(data)
            return data, size, downloader.properties.etag

    def stat(self, key: str) -> ObjectInfo:
        blob = self.container.get_blob_client(check_key(key))
        with self._errors(f"reading the properties of {key}", key):
            properties = blob.get_blob_properties()
        return ObjectInfo(key, properties.size, properties.last_modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # The default listing holds committed blobs only, never a put still in progress.
        with self._errors("listing"):
            for blob in self.container.list_blobs(name_starts_with=prefix or None):
                if not blob.name.startswith(LOCKS):  # lock blobs are not objects
                    yield ObjectInfo(blob.name, blob.size, blob.last_modified)

    def try_lock(self, name: str, holder: bytes) -> Lease | None:
        blob = self.container.get_blob_client(self._lock_key(name))
        with self._errors(f"taking the lock {name}"):
            # The lock blob may be there from an earlier run: its lease decides, not the blob.
            with contextlib.suppress(ResourceExistsError):
                blob.upload_blob(b"", overwrite=False)
            try:
                lease = blob.acquire_lease(lease_duration=LEASE_SECONDS)
            except HttpResponseError as exc:
                if _error_code(exc) in ("LeaseAlreadyPresent", "LeaseIdMismatchWithLeaseOperation"):
                    return None
                raise
            # Metadata must be ASCII: the holder's record travels base64-encoded.
            blob.set_blob_metadata({"holder": base64.b64encode(holder).decode()}, lease=lease)
        return _BlobLease(lease, self.location, name)

    def lock_holder(self, name: str) -> bytes | None:
        blob = self.container.get_blob_client(self._lock_key(name))
        with self._errors(f"reading the lock {name}"):
            try:
                properties = blob.get_blob_properties()
            except HttpResponseError as exc:
                if exc.status_code == 404 and _error_code(exc) != "ContainerNotFound":
                    return None
                raise
        if properties.lease.state != "leased":
            return None
        encoded = (properties.metadata or {}).get("holder", "")
        return base64.b64decode(encoded) if encoded else b""

    def delete_partials(self, prefix: str) -> None:
        """Discard the uncommitted blocks of failed puts under ``prefix`` (Azure would keep
        them for a week): a blob name with uncommitted blocks only gets an empty commit,
        which drops them, and is deleted."""
        with self._errors(f"removing partial uploads under {prefix}"):
            committed = {b.name for b in self.container.list_blobs(name_starts_with=prefix)}
            everything = self.container.list_blobs(
                name_starts_with=prefix, include=["uncommittedblobs"]
            )
            for name in sorted({b.name for b in everything} - committed):
                self.container.upload_blob(name, b"", overwrite=True)
                self.container.delete_blob(name)

    def _lock_key(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid lock name {name!r}")
        return check_key(f"{LOCKS}{name}")

    def delete(self, keys: Iterable[str]) -> None:
        names = [check_key(key) for key in keys]
        if not names:
            # Keep the contract even when there is nothing to send.
            if not self._container_exists():
                raise RepositoryNotFound(f"container does not exist: {self.location}")
            return
        for name in names:
            with self._errors(f"deleting {name}"):
                try:
                    self.container.delete_blob(name, delete_snapshots="include")
                except HttpResponseError as exc:
                    code = _error_code(exc) or ""
                    if code.startswith("BlobImmutable") or "LegalHold" in code:
                        raise ObjectProtected(
                            f"{name} in {self.location} is protected by the container's "
                            f"immutability ({code})"
                        ) from None
                    if code != "BlobNotFound":
                        raise

    def soft_delete_policy(self) -> SoftDeletePolicy | None:
        """The account's blob soft-delete policy, or None when this credential cannot read it.

        Reading it needs account-level access: a SAS scoped to the container, or a role that
        grants only data access, is refused and gives None.
        """
        # Private, but what the SDK's own samples use: it reaches the account with this
        # client's credential and pipeline (retry policy, timeouts), whatever built it.
        service = self.container._get_blob_service_client()
        with self._errors("reading the blob service properties"):
            try:
                properties = service.get_service_properties()
            except HttpResponseError as exc:
                if exc.status_code in (401, 403):
                    return None
                raise
        policy = properties.get("delete_retention_policy")
        if policy is None:
            return None
        return SoftDeletePolicy(bool(policy.enabled), policy.days if policy.enabled else None)

    def immutability(self) -> Immutability | None:
        """The container's immutability, or None when this credential cannot read the
        container's properties (a SAS scoped to the container is refused them)."""
        if self._immutability is None:
            with self._errors("reading the container's properties"):
                try:
                    properties = self.container.get_container_properties()
                except HttpResponseError as exc:
                    if exc.status_code in (401, 403):
                        self._immutability = (None,)
                        return None
                    raise
            self._immutability = (
                Immutability(
                    time_based=bool(properties.has_immutability_policy),
                    version_level=bool(
                        getattr(properties, "immutable_storage_with_versioning_enabled", False)
                    ),
                    legal_hold=bool(properties.has_legal_hold),
                ),
            )
        return self._immutability[0]

    def protection(self, prefix: str) -> str | None:
        """A legal hold on the container, or a blob under ``prefix`` whose own retention
        (version-level immutability) has not expired. A container-level time-based policy
        does not tell its period to the data plane: a delete it refuses is reported by
        :meth:`delete` as :class:`ObjectProtected`, and nothing is lost, since a backup's
        manifest is deleted first."""
        policy = self.immutability()
        if policy is None or not policy.protects:
            return None
        if policy.legal_hold:
            return f"the container {self.location} has a legal hold"
        now = datetime.now(UTC)
        with self._errors(f"reading the immutability of {prefix}"):
            blobs = self.container.list_blobs(
                name_starts_with=prefix, include=["immutabilitypolicy", "legalhold"]
            )
            for blob in blobs:
                if blob.has_legal_hold:
                    return f"{blob.name} has a legal hold"
                expiry = getattr(blob.immutability_policy, "expiry_time", None)
                if expiry is not None and expiry.astimezone(UTC) > now:
                    return f"immutable until {expiry.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        return None

    def _container_exists(self) -> bool:
        """Whether the container exists; raises if it cannot be reached or read.

        Lists one blob instead of reading container properties: a SAS scoped to the
        container is allowed the former and refused the latter.
        """
        with self._errors("checking the container"):
            try:
                next(self.container.list_blobs(results_per_page=1).by_page(), None)
            except HttpResponseError as exc:
                if _error_code(exc) == "ContainerNotFound":
                    return False
                raise
        return True

    @contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Translate SDK errors raised inside into ours; ``key`` names the object read."""
        try:
            yield
            self._reached = True
        except AzureError as exc:
            if not isinstance(exc, ServiceRequestError):
                self._reached = True  # it answered, if only to refuse
            # ``from None``: the SDK's own text may hold the request URL with its SAS token,
            # and Prefect logs chained exceptions in full.
            raise self._translate(exc, action, key) from None

    def _translate(self, exc: AzureError, action: str, key: str | None) -> DRError:
        where = self.location
        if isinstance(exc, ServiceRequestError):
            if not self._reached:
                # Nothing was done yet: an address that does not answer is bad input.
                return RepositoryNotFound(f"cannot reach {where}: {_network_reason(exc)}")
            return StoreUnavailable(f"{action} at {where} failed: {_network_reason(exc)}")
        if isinstance(exc, ServiceResponseError):
            return StoreUnavailable(
                f"{action} at {where} failed: the connection broke ({_network_reason(exc)})"
            )
        if not isinstance(exc, HttpResponseError):
            return OperationFailed(f"{action} at {where} failed: {_first_line(str(exc))}")
        code = _error_code(exc)
        if isinstance(exc, ClientAuthenticationError) and exc.response is None:
            # azure-identity found no usable credential; no request reached storage.
            return RepositoryNotFound(
                f"cannot sign in to {where}: {_first_line(str(exc))} (run `az login`, use a "
                f"managed identity, or give a SAS URL or {CONNECTION_STRING_ENV})"
            )
        if code == "ContainerNotFound":
            return RepositoryNotFound(f"container does not exist: {where}")
        if exc.status_code == 404 and key is not None:
            return ObjectNotFound(key)
        if isinstance(exc, ResourceModifiedError) and key is not None:
            return OperationFailed(f"{key} in {where} was replaced while it was being read")
        reason = _first_line(exc.reason or exc.message or "")
        detail = f"{reason} ({code or 'no error code'}, HTTP {exc.status_code})"
        if exc.status_code in (401, 403):
            return AccessDenied(f"access to {where} denied while {action}: {detail}")
        if (exc.status_code or 0) >= 500 or exc.status_code in (408, 429):
            return StoreUnavailable(f"{action} at {where} failed: {detail}")
        return OperationFailed(f"{action} at {where} failed: {detail}")


class _BlobReader(io.RawIOBase):
    """Reads one blob version in order, fetching up to ``concurrency`` ranges ahead."""

    def __init__(
        self,
        first: bytes,
        size: int,
        read_range: Callable[[int, int], bytes] | None,
        read_size: int,
        concurrency: int,
    ) -> None:
        super().__init__()
        self._current = memoryview(first)
        self._size = size
        self._next_offset = len(first)
        self._read_range = read_range
        self._read_size = read_size
        self._concurrency = concurrency
        self._ahead: deque[Future[bytes]] = deque()
        self._executor = (
            ThreadPoolExecutor(concurrency, thread_name_prefix="blob-read")
            if read_range is not None
            else None
        )
        self._fetch_ahead()

    def readable(self) -> bool:
        return True

    def _fetch_ahead(self) -> None:
        if self._executor is None or self._read_range is None:
            return
        while len(self._ahead) < self._concurrency and self._next_offset < self._size:
            length = min(self._read_size, self._size - self._next_offset)
            self._ahead.append(self._executor.submit(self._read_range, self._next_offset, length))
            self._next_offset += length

    def _advance(self) -> bool:
        """Move to the next fetched block; False at the end of the object."""
        if not self._ahead:
            return False
        self._current = memoryview(self._ahead.popleft().result())
        self._fetch_ahead()
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        while not self._current:
            if not self._advance():
                return 0
        with memoryview(buffer) as target:
            view = target.cast("B")
            count = min(len(view), len(self._current))
            view[:count] = self._current[:count]
        self._current = self._current[count:]
        return count

    def readall(self) -> bytes:
        parts = [self._current.tobytes()]
        self._current = memoryview(b"")
        while self._advance():
            parts.append(self._current.tobytes())
            self._current = memoryview(b"")
        return b"".join(parts)

    def close(self) -> None:
        if self._executor is not None:
            # Fetches already running finish in the background and are dropped.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._ahead.clear()
        self._current = memoryview(b"")
        super().close()


def _regroup(chunks: Iterable[bytes], block_size: int) -> Iterator[bytes]:
    """Regroup chunks of any size into blocks of ``block_size`` (the last may be shorter).

    Each byte is copied once, by the join that makes its block.
    """
    pieces: list[memoryview] = []
    filled = 0
    for chunk in chunks:
        # Views wait in ``pieces`` until their block is full: a mutable buffer the caller
        # refills between chunks would change under them, so only bytes are kept uncopied.
        view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk)).cast("B")
        while len(view) >= block_size - filled:
            take = block_size - filled
            pieces.append(view[:take])
            yield b"".join(pieces)
            pieces, filled, view = [], 0, view[take:]
        if view:
            pieces.append(view)
            filled += len(view)
    if pieces:
        yield b"".join(pieces)


def _check_container_name(name: str | None) -> str:
    if not name:
        raise ConfigError("container_name is required with connection_string or account_url")
    if not _CONTAINER_NAME.match(name):
        raise ConfigError(
            f"invalid container name {name!r}: 3-63 lowercase letters, digits and single "
            "hyphens, starting and ending with a letter or digit"
        )
    return name


def _is_ip_address(host: str | None) -> bool:
    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return True


def _is_loopback(host: str | None) -> bool:
    return host == "localhost" or (
        _is_ip_address(host) and ipaddress.ip_address(host or "").is_loopback
    )


def _split_container_path(url: str) -> tuple[str, str]:
    """Split a container URL's path into the account path (emulators only) and the container.

    Emulators on an IP address or localhost put the account in the path (``/acct/container``);
    Azure puts it in the host name (``acct.blob.core.windows.net/container``).
    """
    parts = urlsplit(url)
    path_style = parts.hostname == "localhost" or _is_ip_address(parts.hostname)
    segments = [segment for segment in parts.path.split("/") if segment]
    expected = 2 if path_style else 1
    if len(segments) != expected:
        shape = "<account>/<container>" if path_style else "<container>"
        raise ConfigError(
            f"a container URL names {parts.netloc}/{shape} and nothing inside the container: "
            f"{_without_query(url)}"
        )
    account_path = f"/{segments[0]}" if path_style else ""
    return account_path, _check_container_name(segments[-1])


def _check_scheme(scheme: str, host: str | None, *, what: str) -> None:
    if scheme == "https" or (scheme == "http" and _is_loopback(host)):
        return
    raise ConfigError(
        f"{what} must use https (plain http only to a local emulator), got {scheme}://{host}"
    )


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment=""))


def _error_code(exc: HttpResponseError) -> str | None:
    # Set by the storage SDK, not by azure-core; enum members in some code paths.
    code = getattr(exc, "error_code", None)
    if isinstance(code, Enum):
        return str(code.value)
    return str(code) if code is not None else None


_SECRET_PATTERNS = (
    # A query string anywhere (absolute or relative URL) may be a SAS token.
    (re.compile(r"\?(?=[^\s'\"<>]*=)[^\s'\"<>]*"), "?<redacted>"),
    (re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|sig)=[^\s;&'\"]*"), r"\1=<redacted>"),
)


def _first_line(text: str) -> str:
    """The first line of an SDK message, with anything that may be a secret blanked out."""
    line = text.strip().splitlines()[0] if text.strip() else "no details"
    for pattern, replacement in _SECRET_PATTERNS:
        line = pattern.sub(replacement, line)
    return line


def _network_reason(exc: BaseException) -> str:
    """A short cause for a failed connection ("Connection refused"), found in the chain."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if isinstance(current, TimeoutError) or "Timeout" in type(current).__name__:
            return "timed out"
        inner = getattr(current, "inner_exception", None)
        todo.extend([current.__cause__, current.__context__])
        if isinstance(inner, BaseException):
            todo.append(inner)
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return _first_line(str(exc))


class _BlobLease(Lease):
    """A blob lease renewed by a thread of its own every third of ``LEASE_SECONDS``; a holder
    that dies stops renewing, and the lease lapses."""

    def __init__(self, lease: Any, location: str, name: str) -> None:
        self._lease = lease
        self._name = f"{name} in {location}"
        self._stop = threading.Event()
        self._lost = False
        self._thread = threading.Thread(target=self._renew, name="dr-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                self._lease.renew()
            except AzureError:
                self._lost = True  # another holder may take it once it lapses
                return

    def alive(self) -> bool:
        return not self._lost and not self._stop.is_set()

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=LEASE_SECONDS)
        with contextlib.suppress(AzureError):
            self._lease.release()
