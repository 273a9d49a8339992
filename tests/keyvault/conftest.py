"""Key Vault through the loopback HTTPS endpoint of the Azure tests (``tests/azure_api``): its
secrets data plane, with the two actions the backups use added at our seam
(``POST /secrets/NAME/backup``, ``POST /secrets/restore``), and the recovery level every
secret reports (soft delete and purge protection)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.secrets import SecretClient

from dr_runbooks.keyvault import VaultCatalog
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from tests.azure_api import AzureApi
from tests.azure_api.core import ApiError, Response
from tests.azure_api.keyvault import SecretVersion

SYSTEM = "app-vault"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BackupActions:
    """The vault's backup and restore actions over :class:`SecretVault`'s secrets. A backup
    is opaque to its holder (here: the versions as JSON); a restore makes a replica, the
    versions' ids included, as Key Vault's does; a restore of a secret the vault holds, or
    holds deleted, is a 409 as Key Vault answers it."""

    def __init__(self, api: AzureApi) -> None:
        self.api = api
        self.recovery_level = "Recoverable"
        self.managed: set[str] = set()
        self.deleted: set[str] = set()
        api.register_data_plane("secrets", self.handle)

    def handle(self, method: str, parts: list[str], body: dict[str, Any]) -> Response:
        vault = self.api.vault
        if method == "POST" and parts == ["restore"]:
            blob = json.loads(_unb64url(str(body["value"])))
            name = blob["name"]
            if name in self.deleted:
                raise ApiError(409, "ObjectIsDeletedButRecoverable", f"{name} is deleted")
            if vault.latest(name) is not None:
                raise ApiError(409, "Conflict", f"Secret {name} already exists")
            for version in blob["versions"]:  # a replica: the same versions
                vault.set(
                    name,
                    version["value"],
                    version.get("content_type"),
                    version.get("version"),
                    version.get("created"),
                )
            latest = vault.latest(name)
            assert latest is not None
            return self._levelled(Response(200, vault._bundle(self.api.url, name, latest)))
        if method == "POST" and len(parts) == 2 and parts[1] == "backup":
            versions: list[SecretVersion] = list(vault.secrets.get(parts[0]) or [])
            if not versions:
                raise ApiError(404, "SecretNotFound", f"{parts[0]} was not found")
            blob = {
                "name": parts[0],
                "versions": [
                    {
                        "version": v.version,
                        "created": v.created,
                        "value": v.value,
                        "content_type": v.content_type,
                    }
                    for v in versions
                ],
            }
            return Response(200, {"value": _b64url(json.dumps(blob).encode())})
        return self._levelled(vault.handle(self.api.url, method, parts, body))

    def _levelled(self, response: Response) -> Response:
        body = response.body
        items = body.get("value") if isinstance(body, dict) else None
        for item in items if isinstance(items, list) else [body]:
            if isinstance(item, dict) and "attributes" in item:
                item["attributes"]["recoveryLevel"] = self.recovery_level
                name = str(item.get("id", "")).split("/secrets/", 1)[-1].split("/")[0]
                if name in self.managed:
                    item["managed"] = True
        return response


@pytest.fixture
def api() -> Iterator[AzureApi]:
    with AzureApi() as endpoint:
        yield endpoint


@pytest.fixture
def actions(api: AzureApi) -> BackupActions:
    return BackupActions(api)


def client_for(api: AzureApi) -> SecretClient:
    return SecretClient(api.url, api.credential(), connection_verify=api.ca_file, retry_total=0)


@pytest.fixture
def client(api: AzureApi, actions: BackupActions) -> SecretClient:
    return client_for(api)


@pytest.fixture
def repository(tmp_path: Path) -> Repository:
    return Repository(LocalStore(tmp_path / "backups"), "local")


@pytest.fixture
def catalog(repository: Repository) -> VaultCatalog:
    return VaultCatalog(repository, SYSTEM)


@pytest.fixture
def signed_in(api: AzureApi, monkeypatch: pytest.MonkeyPatch) -> AzureApi:
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", api.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", api.identity_header)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", api.ca_file)
    return api


@pytest.fixture
def config(tmp_path: Path, signed_in: AzureApi) -> str:
    path = tmp_path / "dr.yaml"
    path.write_text(f"""
repositories:
  local: {{type: local, path: {tmp_path / "backups"}}}
systems:
  {SYSTEM}:
    engine: keyvault
    keyvault: {{vault_url: "{signed_in.url}"}}
    repositories: [local]
""")
    return str(path)
