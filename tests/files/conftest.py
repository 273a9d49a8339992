"""Fixtures for the file-storage engine: a storage account (Azurite), its containers filled
with a few hundred blobs of mixed sizes and metadata, and backup repositories.

The account's client reads in 64 KiB ranges, so a blob above that is read in several
requests, each pinned to the ETag the first one saw.
"""

from __future__ import annotations

import contextlib
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from dr_runbooks.files import BlobAccount
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from dr_runbooks.storage.azure import AzureBlobStore, container_client_from
from tests.azurite import Azurite

RANGE = 64 * 1024


@dataclass(frozen=True)
class Blob:
    """What a blob should hold: content, metadata and content type."""

    data: bytes
    metadata: dict[str, str]
    content_type: str


State = dict[str, Blob]


@pytest.fixture
def service(azurite: Azurite) -> Iterator[BlobServiceClient]:
    client = BlobServiceClient.from_connection_string(
        azurite.connection_string, max_single_get_size=RANGE, max_chunk_get_size=RANGE
    )
    yield client
    for container in client.list_containers():
        if container.name.startswith(("src-", "repo-")) or "-restore-" in container.name:
            with contextlib.suppress(ResourceNotFoundError):
                client.delete_container(container.name)
    client.close()


@pytest.fixture
def account(service: BlobServiceClient) -> BlobAccount:
    return BlobAccount(service)


@pytest.fixture
def source(service: BlobServiceClient) -> Callable[[State], str]:
    """Create a fresh source container holding ``state``; return its name."""

    def make(state: State) -> str:
        name = f"src-{secrets.token_hex(5)}"
        service.create_container(name)
        write(service, name, state)
        return name

    return make


def write(service: BlobServiceClient, container: str, state: State) -> None:
    client = service.get_container_client(container)
    for name, blob in state.items():
        client.upload_blob(
            name,
            blob.data,
            overwrite=True,
            metadata=blob.metadata,
            content_settings=ContentSettings(content_type=blob.content_type),
        )


def read(service: BlobServiceClient, container: str, prefix: str | None = None) -> State:
    """What a container holds now (under ``prefix``)."""
    client = service.get_container_client(container)
    found = {}
    for item in client.list_blobs(name_starts_with=prefix, include=["metadata"]):
        data = client.download_blob(item.name).readall()
        found[item.name] = Blob(
            data, dict(item.metadata or {}), str(item.content_settings.content_type)
        )
    return found


def generated_state(count: int = 300, seed: int = 13) -> State:
    """``count`` blobs under a few prefixes: mostly small, some tens of KiB, a few above
    100 KiB; some empty; some with the same content under several names; metadata and
    content types that vary."""
    rng = random.Random(seed)
    prefixes = ["docs/", "img/2026/", "logs/", ""]
    shared = rng.randbytes(3000)
    state: State = {}
    for i in range(count):
        roll = rng.random()
        if i % 50 == 7:
            data = b""
        elif i % 40 == 3:
            data = shared
        elif roll < 0.75:
            data = rng.randbytes(rng.randint(1, 2048))
        elif roll < 0.95:
            data = rng.randbytes(rng.randint(10_000, 60_000))
        else:
            data = rng.randbytes(rng.randint(100_000, 300_000))
        metadata = {"owner": f"user{i % 7}", "index": str(i)} if i % 3 else {}
        kind = rng.choice(["text/plain", "image/png", "application/json"])
        state[f"{prefixes[i % len(prefixes)]}file-{i:04d}.bin"] = Blob(data, metadata, kind)
    return state


@pytest.fixture(params=["local", "azure"])
def repository(
    request: pytest.FixtureRequest, tmp_path: Path, azurite: Azurite
) -> Iterator[Repository]:
    """A backup repository: a local directory, or a container in Azurite."""
    if request.param == "local":
        yield Repository(LocalStore(tmp_path / "repo"), name="local", retention_days=7, min_keep=1)
        return
    client = container_client_from(
        connection_string=azurite.connection_string, container_name=f"repo-{secrets.token_hex(5)}"
    )
    yield Repository(AzureBlobStore(client), name="azure", retention_days=7, min_keep=1)
    with contextlib.suppress(ResourceNotFoundError):
        client.delete_container()


@pytest.fixture
def local_repository(tmp_path: Path) -> Repository:
    return Repository(LocalStore(tmp_path / "repo"), name="local", retention_days=7, min_keep=1)
