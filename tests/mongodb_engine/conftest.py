"""Fixtures for the MongoDB engine: fake servers at the client-factory seam, a repository."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from tests.mongodb_engine.fake import FakeServer

PASSWORD = "M0ngo-Sup3r-Secret"
URI = f"mongodb://admin:{PASSWORD}@db.internal:27017/?authSource=admin"


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def conninfo_for() -> Callable[[FakeServer], MongoConnInfo]:
    """Connection details with a password, whose clients are the fake server's."""

    def make(server: FakeServer, uri: str = URI) -> MongoConnInfo:
        return MongoConnInfo.from_uri(uri).with_factory(server.client)

    return make


@pytest.fixture
def repository(tmp_path: Path) -> Repository:
    return Repository(LocalStore(tmp_path / "repo"), "primary")
