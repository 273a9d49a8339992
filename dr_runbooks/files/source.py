"""The application's storage account, as the file backups read and the restores write it.

:class:`BlobAccount` wraps one ``BlobServiceClient`` (built by a block, from a connection
string, or an account URL with ``DefaultAzureCredential``) and speaks in :class:`SourceBlob`
records. Every read of a blob is pinned to the ETag it was listed with: when the blob is
replaced in the middle of a read, the next ranged GET is refused (HTTP 412) and the read
raises :class:`BlobChanged`, so a backup never stores half of one version and half of
another. SDK errors are translated here, at the edge, into ours.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings

from dr_runbooks.errors import (
    AzureRequestFailed,
    BadInput,
    ConfigError,
    ConnectionFailed,
    DRError,
    ServerUnreachable,
)
from dr_runbooks.redaction import redact

__all__ = ["CLIENT_OPTIONS", "BlobAccount", "BlobChanged", "SourceBlob"]

#: An unreachable account fails in seconds; a server answering 5xx is retried a few times.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_connect": 2,
    "connection_timeout": 4,
    "read_timeout": 60,
}


class BlobChanged(Exception):
    """The blob was replaced (or deleted) while it was being read: read it again."""


@dataclass(frozen=True)
class SourceBlob:
    """One blob as the account lists it."""

    container: str
    name: str
    size: int
    etag: str
    last_modified: datetime
    #: The MD5 Azure keeps for the blob, hex; None when the uploader set none (block uploads).
    content_md5: str | None = None
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class BlobAccount:
    """One storage account's blob service: list, read, write and read its properties."""

    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service
        parts = urlsplit(service.url)
        # The client's URL may carry a SAS token as its query string.
        self.location = urlunsplit(parts._replace(query="", fragment="")).rstrip("/")
        self.account_name = str(service.account_name or "")

    def __repr__(self) -> str:
        return f"BlobAccount({self.location!r})"

    @classmethod
    def from_connection_string(cls, connection_string: str) -> BlobAccount:
        """The account of a connection string (an account key or a SAS in it)."""
        try:
            service = BlobServiceClient.from_connection_string(connection_string, **CLIENT_OPTIONS)
        except ValueError:
            # Never echo the string itself: it holds the key.
            raise ConfigError("the storage account's connection string is malformed") from None
        return cls(service)

    @classmethod
    def from_url(cls, account_url: str, credential: Any) -> BlobAccount:
        """The account at ``https://ACCOUNT.blob.core.windows.net``, signed in with
        ``credential`` (a ``TokenCredential``, or a SAS token)."""
        if urlsplit(account_url).scheme != "https":
            raise ConfigError(f"the account URL must use https: {account_url}")
        return cls(BlobServiceClient(account_url, credential=credential, **CLIENT_OPTIONS))

    # -- reading ------------------------------------------------------------------------------

    def container_exists(self, container: str) -> bool:
        with self._errors(f"checking the container {container}"):
            try:
                self.service.get_container_client(container).get_container_properties()
            except ResourceNotFoundError:
                return False
        return True

    def list_blobs(self, container: str, prefix: str | None = None) -> Iterator[SourceBlob]:
        """Every blob of ``container`` (under ``prefix``), with its metadata."""
        client = self.service.get_container_client(container)
        with self._errors(f"listing {container}", container=container):
            for item in client.list_blobs(name_starts_with=prefix, include=["metadata"]):
                yield _source_blob(container, item)

    def properties(self, container: str, name: str) -> SourceBlob | None:
        """The blob as it is now, or None when it is gone."""
        blob = self.service.get_blob_client(container, name)
        with self._errors(f"reading the properties of {container}/{name}", container=container):
            try:
                item = blob.get_blob_properties()
            except ResourceNotFoundError:
                return None
        return _source_blob(container, item)

    def read(self, blob: SourceBlob) -> Iterator[bytes]:
        """The content of exactly the version listed as ``blob``; :class:`BlobChanged` when it
        was replaced or deleted before or during the read."""
        client = self.service.get_blob_client(blob.container, blob.name)
        where = f"reading {blob.container}/{blob.name}"
        try:
            with self._errors(where, container=blob.container, gone_is_change=True):
                downloader = client.download_blob(
                    etag=blob.etag, match_condition=MatchConditions.IfNotModified
                )
                yield from downloader.chunks()
        except _Changed:
            raise BlobChanged(f"{blob.container}/{blob.name}") from None

    def versioning_seen(self, container: str) -> bool | None:
        """Whether the container's newest blobs carry version ids (blob versioning is on for
        the account): None for an empty container, where the data plane cannot tell."""
        client = self.service.get_container_client(container)
        with self._errors(f"listing {container}", container=container):
            for item in client.list_blobs(results_per_page=5):
                return bool(getattr(item, "version_id", None))
        return None

    def account_information(self) -> dict[str, Any]:
        """The account's SKU (``Standard_ZRS``…) and kind."""
        with self._errors("reading the account information"):
            return dict(self.service.get_account_information())

    def service_properties(self) -> dict[str, Any]:
        """The blob service's properties (the soft-delete retention policy among them)."""
        with self._errors("reading the blob service properties"):
            return dict(self.service.get_service_properties())

    # -- writing ------------------------------------------------------------------------------

    def create_container(self, container: str) -> bool:
        """Create ``container``; False when it already exists."""
        with self._errors(f"creating the container {container}"):
            try:
                self.service.get_container_client(container).create_container()
            except ResourceExistsError:
                return False
        return True

    def write(
        self,
        container: str,
        name: str,
        data: IO[bytes],
        size: int,
        *,
        metadata: dict[str, str],
        content_type: str | None,
        content_md5: str | None,
    ) -> str:
        """Upload a blob whole (replacing one of the same name); return its new ETag."""
        settings = ContentSettings(
            content_type=content_type,
            content_md5=bytearray(bytes.fromhex(content_md5)) if content_md5 else None,
        )
        blob = self.service.get_blob_client(container, name)
        with self._errors(f"writing {container}/{name}", container=container):
            result = blob.upload_blob(
                data,
                length=size,
                overwrite=True,
                metadata=metadata,
                content_settings=settings,
            )
        return str(result["etag"])

    def delete_blob(self, container: str, name: str) -> None:
        blob = self.service.get_blob_client(container, name)
        with (
            self._errors(f"deleting {container}/{name}", container=container),
            suppress(ResourceNotFoundError),
        ):
            blob.delete_blob(delete_snapshots="include")

    # -- errors -------------------------------------------------------------------------------

    @contextmanager
    def _errors(
        self, action: str, container: str | None = None, *, gone_is_change: bool = False
    ) -> Iterator[None]:
        try:
            yield
        except ResourceModifiedError:
            raise _Changed() from None
        except ResourceNotFoundError as exc:
            if gone_is_change and _error_code(exc) == "BlobNotFound":
                raise _Changed() from None
            raise self._translate(exc, action, container) from None
        except AzureError as exc:
            # ``from None``: the SDK's text may hold the request URL with a SAS token.
            raise self._translate(exc, action, container) from None

    def _translate(self, exc: AzureError, action: str, container: str | None) -> DRError:
        where = self.location
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return ServerUnreachable(f"{action} at {where} failed: {_first_line(exc)}")
        if isinstance(exc, ClientAuthenticationError) and getattr(exc, "response", None) is None:
            return ConnectionFailed(f"cannot sign in to {where}: {_first_line(exc)}")
        if not isinstance(exc, HttpResponseError):
            return AzureRequestFailed(f"{action} at {where} failed: {_first_line(exc)}")
        code = _error_code(exc)
        if code == "ContainerNotFound":
            return BadInput(f"the container {container} does not exist in {where}")
        detail = f"{_first_line(exc)} ({code or 'no error code'}, HTTP {exc.status_code})"
        if exc.status_code in (401, 403):
            return ConnectionFailed(f"{where} refused {action}: {detail}")
        if (exc.status_code or 0) >= 500 or exc.status_code in (408, 429):
            return ServerUnreachable(f"{action} at {where} failed: {detail}")
        return AzureRequestFailed(f"{action} at {where} failed: {detail}")


class _Changed(Exception):
    """An ETag condition failed inside :meth:`BlobAccount._errors`."""


def _source_blob(container: str, item: Any) -> SourceBlob:
    settings = item.content_settings
    md5 = getattr(settings, "content_md5", None)
    return SourceBlob(
        container=container,
        name=str(item.name),
        size=int(item.size or 0),
        etag=str(item.etag).strip('"'),
        last_modified=item.last_modified,
        content_md5=bytes(md5).hex() if md5 else None,
        content_type=getattr(settings, "content_type", None) or None,
        metadata=dict(item.metadata or {}),
    )


def _error_code(exc: HttpResponseError) -> str | None:
    code = getattr(exc, "error_code", None)
    value = getattr(code, "value", code)
    return str(value) if value is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or getattr(exc, "message", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return redact(line)
