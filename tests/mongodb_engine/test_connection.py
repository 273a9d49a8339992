"""Connection details, the MongoDatabase block, the tools' config file and dr.yaml systems."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pymongo
import pytest
from pydantic import SecretStr, ValidationError

from blocks.mongo import MongoDatabase
from dr_runbooks.config import load_config
from dr_runbooks.errors import ConfigError
from dr_runbooks.mongo.connection import (
    MongoConnInfo,
    tools_config_file,
)
from dr_runbooks.redaction import redact
from dr_runbooks.targets import resolve_target
from tests.mongodb_engine.conftest import PASSWORD, URI


def test_a_uri_is_parsed_without_contacting_anything() -> None:
    info = MongoConnInfo.from_uri(
        "mongodb+srv://ops%40corp:p%3Ass@cluster0.example.net/shop?retryWrites=true"
        "&authSource=admin&tls=true&replicaSet=rs0"
    )
    assert (info.scheme, info.hosts, info.user, info.database) == (
        "mongodb+srv",
        ("cluster0.example.net",),
        "ops@corp",
        "shop",
    )
    assert info.password is not None and info.password.get_secret_value() == "p:ss"
    assert (info.auth_source, info.tls, info.replica_set) == ("admin", True, "rs0")
    assert info.describe() == "ops@corp@cluster0.example.net/shop"
    again = MongoConnInfo.from_uri(info.uri())
    assert again == info  # the URI written for clients and tools says the same
    assert "p:ss" not in redact(f"error for {info.uri()}")


def test_the_tools_config_file_is_0600_from_the_start_and_removed() -> None:
    info = MongoConnInfo.from_uri(URI)
    with tools_config_file(info) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert path.read_text() == f"uri: {json.dumps(info.uri())}\n"
        assert PASSWORD in path.read_text()
    assert not path.exists() and not path.parent.exists()


def test_the_block_refuses_contradictions_and_makes_pymongo_clients() -> None:
    with pytest.raises(ValidationError, match="either a URI or host"):
        MongoDatabase(uri=SecretStr(URI), host="db.internal")
    with pytest.raises(ValidationError, match="a password needs a user"):
        MongoDatabase(host="db", password=SecretStr(PASSWORD))
    with pytest.raises(ValidationError, match="local is a system database"):
        MongoDatabase(host="db", databases=["local"])
    with pytest.raises(ValidationError, match="not a MongoDB URI"):
        MongoDatabase(uri=SecretStr(f"postgresql://admin:{PASSWORD}@db/x"))

    block = MongoDatabase(
        host="db1.internal,db2.internal",
        port=27017,
        user="backup",
        password=SecretStr("s3cr/t p@ss"),
        auth_source="admin",
        replica_set="rs0",
        databases=["shop"],
    )
    info = block.conninfo()
    assert info.uri() == (
        "mongodb://backup:s3cr%2Ft%20p%40ss@db1.internal:27017,db2.internal:27017/"
        "?authSource=admin&replicaSet=rs0"
    )
    assert "s3cr/t p@ss" not in repr(block) and "s3cr/t p@ss" not in repr(info)
    client = block.get_client()  # lazy: no connection is made here
    try:
        assert isinstance(client, pymongo.MongoClient)
    finally:
        client.close()
    assert info.factory is not None  # the block's get_client is the client factory


def test_a_dr_yaml_mongodb_system_resolves_to_a_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DR_TEST_MONGO_URI", f"mongodb://admin:{PASSWORD}@db.internal/app")
    config_file = tmp_path / "dr.yaml"
    config_file.write_text(f"""
repositories:
  primary: {{type: local, path: {tmp_path / "repo"}}}
systems:
  docs:
    engine: mongodb
    connection: {{dsn_env: DR_TEST_MONGO_URI}}
    repositories: [primary]
  pg:
    engine: postgres
    repositories: [primary]
""")
    config = load_config(config_file)

    target = resolve_target(config, "mongodb", "docs")
    assert target.system == "docs" and target.databases == ["app"]
    assert target.conninfo.describe() == "admin@db.internal/app"
    assert target.primary.name == "primary"
    assert resolve_target(config, "mongodb", "docs", database="other").databases == ["other"]
    with pytest.raises(ConfigError, match="is a postgres system"):
        resolve_target(config, "mongodb", "pg")
    with pytest.raises(ConfigError, match="admin is a system database"):
        resolve_target(config, "mongodb", "docs", database="admin")
    monkeypatch.delenv("DR_TEST_MONGO_URI")
    with pytest.raises(ConfigError, match="DR_TEST_MONGO_URI"):
        resolve_target(config, "mongodb", "docs")


def test_pymongo_errors_are_translated_at_the_edge() -> None:
    from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError

    from dr_runbooks.errors import ConnectionFailed, ServerUnreachable
    from dr_runbooks.mongo.connection import connection_error

    unreachable = connection_error(ServerSelectionTimeoutError("no servers found"), "listing")
    assert isinstance(unreachable, ServerUnreachable)
    assert str(unreachable) == "listing: no servers found"
    assert isinstance(connection_error(AutoReconnect("connection reset"), "x"), ServerUnreachable)
    refused = connection_error(OperationFailure("Authentication failed.", code=18), "x")
    assert isinstance(refused, ConnectionFailed)
    assert connection_error(OperationFailure("E11000 duplicate key", code=11000), "x") is None
