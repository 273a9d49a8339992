"""Immutability: retention leaves what the store's policy protects and says so; ``dr status``
reports an Azure container's immutability and warns when its backups are in clear.

Azurite has no immutability, so an HTTP seam in front of it answers as a container with a
time-based retention policy and version-level immutability does: the container's properties
say so, every blob's listing carries a retention date in 2100, and a delete is refused with
``BlobImmutableDueToPolicy``. The SDK parses the real headers and XML."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import ContainerClient

from dr_runbooks.errors import ObjectProtected
from dr_runbooks.repository import Repository
from dr_runbooks.status import repository_protection
from dr_runbooks.storage import LocalStore
from dr_runbooks.storage.azure import AzureBlobStore
from tests.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite
from tests.test_repository import fake_backup

_REFUSAL = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobImmutableDueToPolicy</Code>'
    b"<Message>This operation is not permitted as the blob is immutable due to a policy."
    b"</Message></Error>"
)
_RETAINED = (
    b"<ImmutabilityPolicyUntilDate>Fri, 01 Jan 2100 00:00:00 GMT</ImmutabilityPolicyUntilDate>"
    b"<ImmutabilityPolicyMode>Unlocked</ImmutabilityPolicyMode></Properties>"
)


class ImmutableContainers:
    """A proxy to Azurite whose containers all have an immutability policy."""

    def __init__(self, azurite: Azurite) -> None:
        upstream = azurite.port

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                blob = self.path.count("/") >= 3 and "restype" not in query
                if self.command == "DELETE" and blob:
                    self._answer(409, {"x-ms-error-code": "BlobImmutableDueToPolicy"}, _REFUSAL)
                    return
                connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
                connection.request(self.command, self.path, body, dict(self.headers))
                response = connection.getresponse()
                data = response.read()
                headers = {
                    k: v
                    for k, v in response.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                if query.get("restype") == ["container"] and "comp" not in query:
                    headers["x-ms-has-immutability-policy"] = "true"
                    headers["x-ms-immutable-storage-with-versioning-enabled"] = "true"
                if "immutabilitypolicy" in ",".join(query.get("include", [])):
                    data = data.replace(b"</Properties>", _RETAINED)
                connection.close()
                self._answer(response.status, headers, data)

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def container(self, name: str) -> ContainerClient:
        port = self.server.server_address[1]
        connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT_NAME};"
        )
        return ContainerClient.from_connection_string(connection_string, name)


@pytest.fixture
def immutable(azurite: Azurite) -> Iterator[ImmutableContainers]:
    proxy = ImmutableContainers(azurite)
    yield proxy
    proxy.server.shutdown()


def test_an_immutable_azure_container_is_reported_and_left_alone(
    immutable: ImmutableContainers, azurite: Azurite
) -> None:
    name = "imm-" + datetime.now(UTC).strftime("%H%M%S%f")
    plain = Repository(
        AzureBlobStore(ContainerClient.from_connection_string(azurite.connection_string, name)),
        "offsite",
        retention_days=7,
        min_keep=1,
    )
    now = datetime.now(UTC)
    for index, days in enumerate([1, 40, 50]):
        fake_backup(plain, f"2026010{index}T000000Z-000{index}", now - timedelta(days=days))
    assert plain.store.immutability() is not None
    assert not plain.store.immutability().protects  # type: ignore[union-attr]
    assert plain.store.protection("postgres/s/db/") is None

    guarded = Repository(AzureBlobStore(immutable.container(name)), "offsite", 7, min_keep=1)
    policy = guarded.store.immutability()
    assert policy is not None and policy.time_based and policy.version_level
    plan = guarded.plan_retention("postgres", "s", "db", now=now)
    assert plan.delete == []
    assert sorted(b.id for b, _ in plan.protected) == [
        "20260101T000000Z-0001",
        "20260102T000000Z-0002",
    ]
    assert all("immutable until 2100-01-01" in reason for _, reason in plan.protected)
    old = plan.protected[0][0]
    with pytest.raises(ObjectProtected, match="BlobImmutableDueToPolicy"):
        guarded.store.delete([old.prefix + "manifest.json"])
    assert guarded.delete_backup(old) is not None  # refused, nothing deleted
    assert len(plain.backups("postgres")) == 3

    shown = repository_protection("offsite", "azure", guarded)
    assert shown.immutability == "time-based retention policy, version-level immutability"
    assert shown.warnings and "stored in clear" in shown.warnings[0]


class _RefusingStore(LocalStore):
    """A store whose policy the data plane does not describe: deletes are just refused."""

    def delete(self, keys):  # type: ignore[no-untyped-def]
        names = list(keys)
        if any(n.endswith("manifest.json") for n in names):
            raise ObjectProtected(f"{names[0]} is protected by the container's immutability")
        super().delete(names)


def test_retention_says_what_it_could_not_delete_instead_of_failing(tmp_path: Path) -> None:
    from tasks.repository import repository_apply_retention

    repository = Repository(_RefusingStore(tmp_path / "repo"), "worm", 7, min_keep=1)
    now = datetime.now(UTC)
    for index, days in enumerate([1, 30]):
        fake_backup(repository, f"2026020{index}T000000Z-000{index}", now - timedelta(days=days))
    result = repository_apply_retention.fn(repository, "postgres", "s", "db")
    assert result["deleted"] == []
    assert list(result["protected"]) == ["20260201T000000Z-0001"]
    assert len(repository.backups("postgres")) == 2
