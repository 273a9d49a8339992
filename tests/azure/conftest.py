"""Fixtures for the Azure runbooks: the loopback Azure endpoint, a managed identity that the
flows' ``DefaultAzureCredential`` finds through ``IDENTITY_ENDPOINT`` (the App Service
protocol, over the same endpoint), health endpoints, and a system on two sites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.azure.health import HealthServer
from tests.azure.landscape import Landscape, build
from tests.azure_api import AzureApi

_OTHER_CREDENTIALS = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
    "MSI_ENDPOINT",
)


@pytest.fixture
def azure_api() -> Iterator[AzureApi]:
    with AzureApi() as api:
        yield api


@pytest.fixture
def managed_identity(azure_api: AzureApi, monkeypatch: pytest.MonkeyPatch) -> AzureApi:
    """``DefaultAzureCredential`` signs in as the App Service managed identity the endpoint
    serves, and as nothing else."""
    for name in _OTHER_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", azure_api.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", azure_api.identity_header)
    return azure_api


@pytest.fixture
def health() -> Iterator[HealthServer]:
    server = HealthServer()
    yield server
    server.stop()


@pytest.fixture
def landscape(
    managed_identity: AzureApi, health: HealthServer, prefect_server: None, tmp_path: Path
) -> Landscape:
    return build(managed_identity, health, tmp_path)
