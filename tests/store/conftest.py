"""Fixtures for the store contract tests: each store backend, and Azurite for the Azure one.

``backend`` is parametrized over every backend; a test that takes ``store`` (a created,
empty store) or ``missing_store`` (one that does not exist yet) runs once per backend.
Azurite (the session fixture in tests/conftest.py) starts only when an Azure test runs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from dr_runbooks.storage import LocalStore, Store
from dr_runbooks.storage.azure import AzureBlobStore, container_client_from
from tests.azurite import ACCOUNT_KEY, Azurite


@pytest.fixture
def new_container(azurite: Azurite) -> Iterator[Callable[[], ContainerClient]]:
    """Make clients for fresh, not yet created containers; delete them after the test.

    Azurite keeps blobs in memory, so each test's containers go when it ends.
    """
    clients: list[ContainerClient] = []

    def make() -> ContainerClient:
        client = container_client_from(
            connection_string=azurite.connection_string,
            container_name=f"test-{uuid.uuid4().hex[:16]}",
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(ResourceNotFoundError):
            client.delete_container()
        client.close()


@dataclass
class Backend:
    """One store backend as the contract tests see it."""

    name: str
    #: A new store that does not exist yet.
    make_store: Callable[[], Store]
    #: Whether an unfinished ``put`` of the key has already stored bytes somewhere, so a test
    #: can show that a listing taken then is not merely early.
    has_partial_data: Callable[[str], bool]
    #: Strings that must never appear in a location, a repr or a message.
    secrets: list[str] = field(default_factory=list)
    #: Python source, run in another process, that opens the same store as ``store`` (with
    #: the environment of :attr:`child_env`): for what must hold across processes.
    reopen: Callable[[Store], str] = lambda store: ""
    child_env: dict[str, str] = field(default_factory=dict)


def _local_backend(root: Path) -> Backend:
    def has_partial_data(key: str) -> bool:
        return any(".partial-" in path.name for path in root.rglob("*") if path.is_file())

    return Backend(
        "local",
        lambda: LocalStore(root),
        has_partial_data,
        reopen=lambda store: (
            f"from dr_runbooks.storage import LocalStore\nstore = LocalStore({str(root)!r})"
        ),
    )


def _azure_backend(
    make_container: Callable[[], ContainerClient], connection_string: str
) -> Backend:
    containers: list[ContainerClient] = []

    def make_store() -> Store:
        containers.append(make_container())
        return AzureBlobStore(containers[-1])

    def has_partial_data(key: str) -> bool:
        try:
            _committed, uncommitted = (
                containers[-1].get_blob_client(key).get_block_list("uncommitted")
            )
        except ResourceNotFoundError:
            return False
        return bool(uncommitted)

    def reopen(store: Store) -> str:
        name = containers[-1].container_name
        return (
            "import os\n"
            "from dr_runbooks.storage.azure import AzureBlobStore, container_client_from\n"
            "store = AzureBlobStore(container_client_from(connection_string="
            f"os.environ['DR_TEST_CS'], container_name={name!r}))"
        )

    return Backend(
        "azure",
        make_store,
        has_partial_data,
        secrets=[ACCOUNT_KEY],
        reopen=reopen,
        child_env={"DR_TEST_CS": connection_string},
    )


@pytest.fixture(params=["local", "azure"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return _local_backend(tmp_path / "repository")
    # Looked up here, not declared, so local-only runs (-k local) never start Azurite.
    azurite = request.getfixturevalue("azurite")
    return _azure_backend(request.getfixturevalue("new_container"), azurite.connection_string)


@pytest.fixture
def missing_store(backend: Backend) -> Store:
    return backend.make_store()


@pytest.fixture
def store(missing_store: Store) -> Store:
    missing_store.create()
    return missing_store
